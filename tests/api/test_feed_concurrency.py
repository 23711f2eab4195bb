"""The change feed under concurrent writers: a client that polls with small pages and
resumes where the feed told it to misses no record and no last change.

Three writers (one app, as one worker process) create and rename accounts while a reader
(another app, another worker) polls /accounts?limit=7, follows next_cursor and resumes
from resume_cursor. The writers' database is slowed by a random 0-2 ms before every
statement, as a loaded server would be, so transactions overlap and commit out of the
order their rows were stamped in: what made the feed skip records when it was ordered
by updated_at. Nothing is timed: the check is only that the reader saw everything, so
it cannot fail on a slow machine, only take longer. Runs on SQLite and (-m db) on
PostgreSQL.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask
from sqlalchemy import event

from tests.api.conftest import Api, make_key

WRITERS = 3
WRITES_EACH = 250
# The test's traffic, not a client's: well above every writer's and the reader's rate.
UNLIMITED = {"API_LIMIT_PER_KEY": "1000000 per minute"}


def _slow_database(app: Flask) -> None:
    engine = app.extensions["portal.db"].kw["bind"]

    def jitter(*_args: Any) -> None:
        time.sleep(random.random() * 0.002)

    event.listen(engine, "before_cursor_execute", jitter)


def _write(api: Api, writer: int) -> dict[str, str]:
    """Create accounts and rename earlier ones; the name each account ends with."""
    rng = random.Random(writer)
    final: dict[str, str] = {}
    for step in range(WRITES_EACH):
        if final and rng.random() < 0.35:
            external_id = rng.choice(sorted(final))
            expected = 200
        else:
            external_id = f"w{writer}-{step}"
            expected = 201
        name = f"{external_id} at {step}"
        response = api.put(f"/accounts/{external_id}", {"name": name})
        assert response.status_code == expected, response.get_json()
        final[external_id] = name
    return final


class Reader:
    """A client of the feed: the last name it read for each account, and where to resume."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.names: dict[str, str] = {}
        self.resume: str | None = None
        self.pages = 0
        self.polls_with_news = 0

    def poll(self) -> None:
        """Read pages until the feed says none are waiting, then keep where to resume."""
        cursor = self.resume
        rows = 0
        while True:
            url = "/accounts?limit=7" + (f"&cursor={cursor}" if cursor else "")
            response = self.api.get(url)
            assert response.status_code == 200, response.get_json()
            body = response.get_json()
            self.pages += 1
            for row in body["data"]:
                self.names[row["external_id"]] = row["name"]
            rows += len(body["data"])
            self.resume = body["resume_cursor"]
            cursor = body["next_cursor"]
            if cursor is None:
                self.polls_with_news += rows > 0
                return


def test_a_polling_reader_misses_nothing_that_concurrent_writers_commit(app, sibling):
    writer_app = sibling(**UNLIMITED)
    reader_app = sibling(**UNLIMITED)
    _slow_database(writer_app)
    key = make_key(app)
    reader = Reader(Api(reader_app.test_client(), key))
    done = threading.Event()

    def read_while_written() -> None:
        while not done.wait(0.002):  # a client's poll interval, shortened
            reader.poll()

    with ThreadPoolExecutor(WRITERS + 1) as pool:
        reading = pool.submit(read_while_written)
        writing = [
            pool.submit(_write, Api(writer_app.test_client(), key), n) for n in range(WRITERS)
        ]
        try:
            final = {k: v for future in writing for k, v in future.result().items()}
        finally:
            done.set()
        reading.result()
    reader.poll()  # once more after the last commit, as the client's next poll would

    missed = sorted(set(final) - set(reader.names))
    stale = sorted(k for k in final if k in reader.names and reader.names[k] != final[k])
    assert (len(missed), len(stale)) == (0, 0), (
        f"of {len(final)} accounts the reader never saw {len(missed)} ({missed[:5]}) and "
        f"missed the last change of {len(stale)} ({stale[:5]}) in {reader.pages} pages"
    )
    # Not vacuous: many accounts, and read while they were written, not all at the end.
    assert len(final) > WRITERS * WRITES_EACH // 2 and reader.polls_with_news > 20
