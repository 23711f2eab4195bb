"""The current time, injectable: tests set app.extensions["portal.clock"] to move time
without sleeping."""

from __future__ import annotations

import datetime as dt

from flask import current_app

from portal.db import utcnow


def now() -> dt.datetime:
    moment: dt.datetime = current_app.extensions.get("portal.clock", utcnow)()
    return moment


def today() -> dt.date:
    return now().date()
