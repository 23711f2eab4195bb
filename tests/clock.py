"""The one test clock: installed as app.extensions["portal.clock"], it moves only when told."""

from __future__ import annotations

import datetime as dt

from flask import Flask

from portal.db import utcnow
from tests.factories import TODAY

# Midday on the factories' TODAY: 12 hours either way stay on dates the factories expect,
# whatever the wall clock says.
MIDDAY = dt.datetime.combine(TODAY, dt.time(12), tzinfo=dt.UTC)


class Clock:
    """A callable returning an aware UTC datetime, as portal.clock.now() expects."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start if start is not None else utcnow()

    def __call__(self) -> dt.datetime:
        return self.now

    def set(self, moment: dt.datetime) -> dt.datetime:
        self.now = moment
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        """Move on by dt.timedelta(**delta); returns the new time."""
        self.now += dt.timedelta(**delta)
        return self.now

    def today(self) -> dt.date:
        return self.now.date()

    def install(self, app: Flask) -> Clock:
        """Make this the clock `app` reads; returns self, so `Clock(t).install(app)` reads."""
        app.extensions["portal.clock"] = self
        return self
