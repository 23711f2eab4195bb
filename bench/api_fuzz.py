#!/usr/bin/env python3
"""The long schemathesis run against the API's own document: every check, every phase
(examples, coverage, fuzzing, stateful), on a fresh SQLite database with one of each
record (tests/api/fuzzing.py), served on a loopback port by Werkzeug's threaded server.

    make schemathesis                     # 500 examples per operation (minutes)
    .venv/bin/python bench/api_fuzz.py --max-examples 50 --seed 1
    .venv/bin/python bench/api_fuzz.py -- --include-path-regex contacts   # more st flags

It prints schemathesis' own report, then the figures: requests sent, and failures by
check (the distinct failures schemathesis found). It exits non-zero when there is any.
The suite runs a bounded slice of the same (tests/api/test_schemathesis.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
os.environ.pop("PORTAL_CONFIG", None)

from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: E402

from tests.api.fuzzing import PREFIX, fuzz_app  # noqa: E402

PHASES = "examples,coverage,fuzzing,stateful"


class QuietHandler(WSGIRequestHandler):
    """No access log line per request: schemathesis' report is the output."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def figures(ndjson: Path) -> tuple[int, collections.Counter[str], list[str]]:
    """Requests sent, distinct failures by check (every check that ran, 0 included),
    and their one-line titles."""
    requests = 0
    by_check: collections.Counter[str] = collections.Counter()
    titles: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for line in ndjson.read_text().splitlines():
        event: dict[str, Any] = json.loads(line)
        (kind, data), *_ = event.items()
        if kind != "ScenarioFinished":
            continue
        recorder = data.get("recorder", {})
        requests += len(recorder.get("interactions", {}))
        for case_checks in recorder.get("checks", {}).values():
            for check in case_checks:
                by_check[check["name"]] += 0
                if check.get("status") != "failure":
                    continue
                failure = check.get("failure_info") or {}
                detail = failure.get("failure", {}) if isinstance(failure, dict) else {}
                title = str(detail.get("title") or detail.get("message") or "")
                label = data.get("label") or recorder.get("label") or ""
                key = (check["name"], str(label), title)
                if key in seen:
                    continue
                seen.add(key)
                by_check[check["name"]] += 1
                titles.append(f"{check['name']}: {label}: {title}")
    return requests, by_check, titles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--workers", default="1")
    parser.add_argument("--phases", default=PHASES)
    parser.add_argument("--report-dir", default=None, help="keep the reports here")
    parser.add_argument("st_args", nargs="*", help="more `st run` arguments, after --")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="api-fuzz-") as tmp:
        app, key = fuzz_app(Path(tmp) / "portal.db")
        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"
        report_dir = Path(args.report_dir or tmp) / "schemathesis"
        command = [
            str(Path(sys.executable).with_name("st")),
            "run",
            f"{base}{PREFIX}/openapi.json",
            "--checks",
            "all",
            "--phases",
            args.phases,
            "--max-examples",
            str(args.max_examples),
            "--seed",
            str(args.seed),
            "--workers",
            args.workers,
            "--header",
            f"Authorization: Bearer {key}",
            "--report",
            "ndjson",
            "--report-dir",
            str(report_dir),
            "--no-color",
            "--generation-database",
            "none",
            *args.st_args,
        ]
        shown = [
            part if not part.startswith("Authorization") else "Authorization: …" for part in command
        ]
        print("$", " ".join(shown), flush=True)
        # schemathesis.toml (found in ROOT) names the hooks module, imported from ROOT.
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        returncode = subprocess.call(command, cwd=ROOT, env=env)
        server.shutdown()
        ndjson = next(report_dir.glob("*.ndjson"), None)
        if ndjson is None:
            print("schemathesis wrote no report", file=sys.stderr)
            return returncode or 1
        requests, by_check, titles = figures(ndjson)
    print()
    print(f"requests sent (test cases): {requests}")
    print(f"distinct failures: {sum(by_check.values())}")
    for name, count in sorted(by_check.items()):
        print(f"  {name}: {count}")
    for title in titles:
        print(f"  - {title}")
    return returncode


if __name__ == "__main__":
    raise SystemExit(main())
