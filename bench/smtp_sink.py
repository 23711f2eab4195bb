"""A local SMTP sink for bench/run.py's outbox benchmark: accepts every message and
appends one line per message to a file: the arrival time and the recipients.

    .venv/bin/python bench/smtp_sink.py PORT OUTFILE

Prints "ready" once it listens on 127.0.0.1:PORT; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out) -> None:  # type: ignore[no-untyped-def]
        self.out = out

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.out.write(f"{time.time():.6f} {','.join(envelope.rcpt_tos)}\n")
        self.out.flush()
        return "250 OK"


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with open(path, "a", encoding="utf-8") as out:
        controller = Controller(Sink(out), hostname="127.0.0.1", port=port)
        controller.start()
        print("ready", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            controller.stop()


if __name__ == "__main__":
    main()
