"""The current time, injectable: tests set app.extensions["portal.clock"] to move time
without sleeping."""

from __future__ import annotations

import datetime as dt

from flask import current_app

from portal.db import utcnow


def now() -> dt.datetime:
    return current_app.extensions.get("portal.clock", utcnow)()


def today() -> dt.date:
    return now().date()
