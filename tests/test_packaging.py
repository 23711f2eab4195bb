"""What the wheel holds, as pyproject.toml declares it; .ci/wheel-smoke builds, installs and
runs the real thing. These catch the usual slip early: a new package left off the list."""

import tomllib

from portal import ROOT, resource_dir

SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_python_package_is_in_the_wheel():
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("portal", "admin", "api", "emails")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= set(SETUPTOOLS["packages"])


def test_templates_and_migrations_install_inside_the_package():
    assert SETUPTOOLS["package-dir"] == {
        "portal.templates": "templates",
        "portal.migrations": "migrations",
    }
    assert SETUPTOOLS["py-modules"] == ["wsgi"]


def test_the_checkout_finds_them_at_the_top():
    assert resource_dir("templates") == ROOT / "templates"
    assert (resource_dir("migrations") / "env.py").is_file()


def test_the_pdf_fonts_and_their_licence_are_package_data():
    fonts = ROOT / "portal" / "fonts"
    shipped = {"DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "LICENSE"}
    assert shipped <= {path.name for path in fonts.iterdir()}
    assert "fonts/*" in SETUPTOOLS["package-data"]["portal"]
