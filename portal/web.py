"""What every response gets: security headers, cookie flags, and error pages that
never show a stack trace."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.routing import IntegerConverter, Map
from werkzeug.wrappers import Response as BaseResponse

from portal import bodies, hygiene, throttle
from portal.config import Settings, is_local, settings

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'; base-uri 'none'"
)

# Stripe's origins beyond STRIPE_JS_URL's and STRIPE_API_BASE's: the 3-D Secure frames.
STRIPE_FRAME_ORIGINS = ("https://hooks.stripe.com",)

ROBOTS = "noindex, nofollow"


def content_security_policy(config: Settings) -> str:
    """CSP, and with the Stripe gateway the origins Stripe.js needs (README, "Stripe"):
    its script, the API it calls and the frames of the card Element and 3-D Secure.
    Nothing of Stripe's is admitted with any other gateway."""
    if config.PAYMENT_GATEWAY != "stripe":
        return CSP
    js, api = _origin(config.STRIPE_JS_URL), _origin(config.STRIPE_API_BASE)
    frames = [js, *STRIPE_FRAME_ORIGINS] if js == "https://js.stripe.com" else [js]
    connect = sorted({js, api})
    return (
        f"{CSP}; script-src 'self' {js}; frame-src {' '.join(frames)}; "
        f"connect-src 'self' {' '.join(connect)}"
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


ERROR_TEXT = {
    400: (
        "Something in that request was not right",
        "Go back, check what you entered and try again.",
    ),
    403: ("You cannot do that", "Your account does not allow this action."),
    404: ("Page not found", "The address may be mistyped, or the page is no longer available."),
    405: ("Something in that request was not right", "Go back and try again."),
    413: ("That was too large", "Send something smaller and try again."),
    415: ("Something in that request was not right", "Go back and try again."),
    429: ("Too many attempts", "Wait a few minutes and try again."),
    500: ("Something went wrong", "We have been told. Try again in a few minutes."),
    503: ("The service is unavailable", "We are working on it. Try again in a few minutes."),
}

# CSRF protection on every form; the API, which takes no cookies, is exempt.
csrf = CSRFProtect()


def init_app(app: Flask) -> None:
    local = is_local(app)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not local,
        # The __Host- prefix pins the cookie to our host, path / and HTTPS.
        SESSION_COOKIE_NAME="session" if local else "__Host-session",
        PREFERRED_URL_SCHEME="http" if local else "https",
    )
    # Templates read the settings as the code does: {{ settings().SIGNIN_TTL_MINUTES }}.
    app.jinja_env.globals["settings"] = settings

    # Bodies read whole, however framed, when refuse_bad_input asks for them.
    app.request_class = bodies.Request
    # Before any blueprint adds a rule: a rule takes its converters when it is added.
    app.url_map.converters["int"] = IdConverter

    # First of the app's before_request functions (web.init_app runs before the other
    # extensions'), so no session lookup, throttle or CSRF check sees a bad value.
    app.before_request(refuse_bad_input)

    @app.after_request
    def security_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", content_security_policy(settings()))
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "strict-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        # Portal, staff, API and error pages alike are for the people signed in, never
        # for a search index (a sign-in page names the seller and the bill group).
        headers["X-Robots-Tag"] = ROBOTS
        if request.path.startswith("/p/") or request.path.startswith("/admin"):
            # Billing data and sign-in pages never sit in a shared or back-button cache.
            headers["Cache-Control"] = "no-store"
        if not local:
            headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
        return response

    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(OperationalError, _database_down)
    app.register_error_handler(DBAPIError, _database_down)
    app.register_error_handler(Exception, _unexpected)


# No row id is larger than PostgreSQL's BIGINT.
MAX_ID = 2**63 - 1


class IdConverter(IntegerConverter):
    """<int:...> in every route: ASCII digits, at most MAX_ID, or the path matches no
    route (404). Werkzeug's own takes any Unicode digit ("١٢" is 12: a second spelling
    of every id) and any size (beyond BIGINT PostgreSQL answers "out of range", which
    would read as an outage)."""

    regex = r"[0-9]+"

    def __init__(self, map: Map, fixed_digits: int = 0, min: int | None = None) -> None:
        super().__init__(map, fixed_digits, min, MAX_ID)


CONTROL_TITLE = "Something in that request was not right"
CONTROL_ADVICE = (
    "It contained invisible or control characters (a line break, perhaps), or text that "
    "is not valid UTF-8. Go back, type it again on one line and retry."
)
CONTROL_API_MESSAGE = "The path, query string or form contains control characters or invalid UTF-8."


def refuse_bad_input() -> tuple[str, int] | Response | None:
    """Refuse control characters, DEL, lone surrogates and invalid UTF-8 in the path,
    query string or form, before any view, session lookup or query sees them.

    A bad path answers 404: the only paths routing admits them in are id segments
    (/p/<public id>), and a malformed id must answer like every unknown one (a numeric
    id too large for any row matches no route: IdConverter). A bad query or form value
    answers 400, as a page or, under the API, as its JSON error. Form values are held to less
    (hygiene.FORM_FORBIDDEN): their fields refuse other control characters themselves,
    next to the field, keeping what was typed.
    """
    view = current_app.view_functions.get(request.endpoint or "")
    larger = getattr(view, "max_body_bytes", None)
    if larger is not None:  # an upload (bodies.larger_body)
        request.max_content_length = larger()
    try:
        # The body, read whole here (bodies.Request), before anything else can read it.
        request.get_data(cache=True)
    except HTTPException as exc:
        return _refused_body(exc)
    environ = request.environ
    if not hygiene.clean_bytes(hygiene.wsgi_bytes(environ.get("PATH_INFO", ""))):
        if request.path.startswith("/p/"):
            # The customer face's one page for a portal link that leads nowhere.
            return _template_page("portal/unavailable.html", 404)
        return error_page(404)
    bad = not hygiene.clean_urlencoded(hygiene.wsgi_bytes(environ.get("QUERY_STRING", "")))
    if not bad and request.method not in ("GET", "HEAD", "OPTIONS"):
        if request.mimetype == "application/x-www-form-urlencoded":
            # Cached, so request.form parses the same bytes afterwards.
            raw = request.get_data(cache=True)
            bad = not hygiene.clean_urlencoded(raw, hygiene.FORM_FORBIDDEN)
        elif request.mimetype == "multipart/form-data":
            fields = [*request.form.items(multi=True)]
            fields += [(name, f.filename or "") for name, f in request.files.items(multi=True)]
            bad = not hygiene.clean_fields(fields, hygiene.MULTIPART_FORBIDDEN)
    if not bad:
        return None
    # The endpoint, not the value: the value is what we refuse to write anywhere.
    log.info("refused control characters: %s %s", request.method, request.endpoint)
    as_json = _json_error(400, CONTROL_API_MESSAGE)
    if as_json is not None:
        return as_json
    return _page(400, CONTROL_TITLE, CONTROL_ADVICE)


def _refused_body(exc: HTTPException) -> tuple[str, int] | Response:
    """A body too large, cut short or compressed (portal.bodies): the API says which."""
    code = exc.code or 400
    log.info("refused the body (%s): %s %s", code, request.method, request.endpoint)
    as_json = _json_error(code, exc.description or ERROR_TEXT[400][0])
    if as_json is not None:
        return as_json
    title, advice = ERROR_TEXT.get(code, ERROR_TEXT[400])
    if code == 413:
        view = current_app.view_functions.get(request.endpoint or "")
        advice = getattr(view, "too_large_advice", advice)
    return _page(code, title, advice)


def _template_page(template: str, code: int) -> tuple[str, int] | Response:
    try:
        return render_template(template), code
    except Exception:
        log.warning("%s rendered as the plain error page", template, exc_info=True)
        return error_page(code)


def _page(code: int, title: str, advice: str) -> tuple[str, int]:
    try:
        page = render_template("error.html", code=code, title=title, advice=advice)
    except Exception:
        # No URL adapter (an untrusted Host) or a broken template: still no traceback.
        log.warning("error page %s rendered without its template", code, exc_info=True)
        page = (
            f"<!doctype html><html lang=en><title>{title}</title>"
            f"<h1>{title}</h1><p>{advice}</p><p>Error {code}</p></html>"
        )
    return page, code


def _json_error(code: int, message: str) -> Response | None:
    """Under a machine prefix (the API registers /api/v1/), errors are JSON, not pages."""
    prefixes = tuple(current_app.extensions.get("portal.json_error_prefixes", ()))
    if not prefixes or not request.path.startswith(prefixes):
        return None
    names = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    names |= {415: "unsupported_media_type"}
    names |= {429: "rate_limited", 500: "internal_error", 503: "unavailable"}
    response = jsonify(
        {"error": {"code": names.get(code, "error"), "message": message, "field": None}}
    )
    response.status_code = code
    return response


def error_page(code: int) -> tuple[str, int] | Response:
    title, advice = ERROR_TEXT.get(code, ERROR_TEXT[500])
    as_json = _json_error(code, f"{title}. {advice}")
    if as_json is not None:
        return as_json
    return _page(code, title, advice)


def _http_error(exc: HTTPException) -> BaseResponse | tuple[str, int]:
    if exc.code is None or exc.code < 400:
        return exc.get_response()
    shown = error_page(exc.code)
    if isinstance(shown, Response):
        response = shown
    else:
        page, code = shown
        response = Response(page, code, mimetype="text/html")
    if exc.code == 429:  # Flask-Limiter's: when its broken limit has room again
        response.headers["Retry-After"] = str(throttle.limiter_retry_after())
    if exc.code == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    return response


def _csrf_error(exc: CSRFError) -> tuple[str, int]:
    # Usually a form left open too long, or cookies blocked: say so, change nothing.
    page = render_template(
        "error.html",
        code=400,
        title="This form has expired",
        advice="Go back, reload the page and try again. Cookies must be allowed for this site.",
    )
    return page, 400


def _database_down(exc: Exception) -> tuple[str, int] | Response:
    log.error("database unavailable on %s %s: %s", request.method, request.path, type(exc).__name__)
    return error_page(503)


def _unexpected(exc: Exception) -> tuple[str, int] | BaseResponse:
    if isinstance(exc, HTTPException):  # pragma: no cover - routed to _http_error first
        return _http_error(exc)
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_page(InternalServerError.code)
