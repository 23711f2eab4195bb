"""The load benchmark's baseline: a minimal Flask view rendering a small Jinja page.

bench/run.py serves it with the same gunicorn configuration as the portal
(`gunicorn -c gunicorn.conf.py --pythonpath bench baseline_app:app`), in the same run,
so every page's requests/s can be given as a ratio to what this machine, at that
moment, does for a request that is nothing but Flask, Jinja and gunicorn.
"""

from __future__ import annotations

from flask import Flask, render_template
from jinja2 import DictLoader

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ title }}</title></head>
<body>
  <h1>{{ title }}</h1>
  <ul>{% for item in items %}<li>{{ item }}</li>{% endfor %}</ul>
</body>
</html>
"""

# What the page shows (bench/floor_app.py renders the same).
CONTEXT = {"title": "Baseline", "items": ["one", "two", "three"]}

app = Flask(__name__)
app.jinja_loader = DictLoader({"page.html": PAGE})


@app.get("/")
def page() -> str:
    return render_template("page.html", **CONTEXT)
