"""The floor under the page ratios: what the portal's own request handling costs before
a page does any work of its own.

bench/run.py serves this module with the same gunicorn settings as the baseline and the
portal. It is the production app (`wsgi:app`: same settings, same hooks) with two routes
that render the baseline's own page (bench/baseline_app.py):

  /bench/frame    through every hook a portal request passes: the trusted-host check,
                  Flask-Limiter's bookkeeping, the session cookie, Flask-Login's template
                  context, the security headers
  /bench/query/N  the same after N statements (`SELECT 1`) through the app's database
                  session: the pool checkout with its pre-ping, the statements, the
                  rollback at teardown

bench/run.py asks for them anonymously and with a signed-in customer's cookie: then
Flask-Login's template context loads the customer, and the session is re-checked
against the bill group's rules, by the portal's own loader (one statement), as on every
portal page. Signed in, /bench/query/2 runs as many statements as the overview and the
invoice list (three); anonymous, /bench/query/3 as many as the sign-in POST. Each renders
a far smaller page than those do, so none of them can beat its floor, and a target above
that ratio cannot be met by tuning the page. The routes exist only in this module;
wsgi.py and the portal never have them.
"""

from __future__ import annotations

from baseline_app import CONTEXT, PAGE
from flask import render_template
from sqlalchemy import text

from portal import db
from wsgi import app

_page = app.jinja_env.from_string(PAGE)


@app.get("/bench/frame")
def frame() -> str:
    return render_template(_page, **CONTEXT)


@app.get("/bench/query/<int:statements>")
def query(statements: int) -> str:
    session = db.session()
    for _ in range(min(statements, 10)):
        session.execute(text("SELECT 1")).one()
    return render_template(_page, **CONTEXT)
