"""The floor under the page ratios: what the portal's own request handling costs before
a page does any work of its own.

bench/run.py serves this module with the same gunicorn settings as the baseline and the
portal. It is the production app (`wsgi:app`: same settings, same hooks) with two routes
that render the baseline's own page (bench/baseline_app.py):

  /bench/frame   through every hook a portal request passes: the signed session cookie,
                 the trusted-host check, Flask-Limiter's bookkeeping, Flask-Login's
                 template context, the security headers; no database
  /bench/query/N the same after N statements (`SELECT 1`) through the app's database
                 session: the pool checkout with its pre-ping, the statements, the
                 rollback at teardown

No portal page can beat /bench/query/N for the N statements it runs: every one loads its
session row first, and each renders a far larger page than the baseline's. The overview,
the invoice list and the sign-in POST run 3 each. So a page whose target ratio is above
/bench/query/3's cannot meet it by tuning the page. The routes exist only in this module;
wsgi.py and the portal never have them.
"""

from __future__ import annotations

from baseline_app import PAGE
from flask import render_template
from sqlalchemy import text

from portal import db
from wsgi import app

_page = app.jinja_env.from_string(PAGE)
ITEMS = ["one", "two", "three"]


@app.get("/bench/frame")
def frame() -> str:
    return render_template(_page, title="Baseline", items=ITEMS)


@app.get("/bench/query/<int:statements>")
def query(statements: int) -> str:
    session = db.session()
    for _ in range(min(statements, 10)):
        session.execute(text("SELECT 1")).one()
    return render_template(_page, title="Baseline", items=ITEMS)
