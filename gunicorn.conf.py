"""gunicorn settings read from the working directory: `gunicorn wsgi:app`."""

import multiprocessing

bind = "127.0.0.1:8000"
workers = min(4, multiprocessing.cpu_count() * 2 + 1)
# Sign-in tokens never reach the access log.
logger_class = "portal.logredact.GunicornLogger"
accesslog = "-"
timeout = 30
