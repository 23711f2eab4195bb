"""gunicorn settings for bench/run.py: the repo's gunicorn.conf.py as it is, with the
access log turned off (writing a line per request costs the 1 ms baseline page ~15 % of
its throughput, and a portal page much less, which would flatter the ratios).
bench/run.py adds --bind (a free loopback port) and --workers 2 on the command line,
which override the file. `bench/run.py --access-log` uses gunicorn.conf.py unchanged.
"""

import runpy
from pathlib import Path

_repo = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
globals().update({name: value for name, value in _repo.items() if not name.startswith("_")})

accesslog = None
