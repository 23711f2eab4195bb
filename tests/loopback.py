"""A test server in a subprocess on a free loopback port, for the whole run: started with
up to three tries (the port can be taken between choosing and binding), waited for until
it answers, stopped at the end. localstripe and oidc-provider-mock run this way."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answers(url: str) -> bool:
    """Whether `url` answers 200 (no proxy, a short timeout)."""
    try:
        with _DIRECT.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def serving(name: str, args: Callable[[int], list[str]], probe: str, log: Path) -> Iterator[str]:
    """Run `python <args(port)>` until it answers at `probe` (a path); yields its base URL.
    Its output goes to `log`, shown if it never starts."""
    from tests.conftest import free_port

    for _try in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, *args(port)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None and not answers(url + probe):
            time.sleep(0.1)
        if process.poll() is None and answers(url + probe):
            break
        stop(process)
    else:
        raise RuntimeError(f"{name} did not start:\n{log.read_text(errors='replace')}")
    try:
        yield url
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
