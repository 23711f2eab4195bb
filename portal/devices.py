"""Known devices: a browser an address has signed in from keeps that address's own
sign-in budget, whatever strangers have spent from the shared one.

The cookie is set only at a successful sign-in, so it tells its holder nothing new. It
holds keyed digests of the addresses (HMAC under a key derived from SECRET_KEY), signed
with itsdangerous under a salt of its own: it can be neither read for addresses nor
forged, and a stranger who floods an address never has one for it.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import current_app, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

from portal.config import is_local, settings

SALT = "portal known device"
# The addresses remembered per browser, newest first.
MAX_ADDRESSES = 10


def cookie_name() -> str:
    # The __Host- prefix pins the cookie to our host, path / and HTTPS.
    return "known_device" if is_local(current_app) else "__Host-known_device"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings().SECRET_KEY, salt=SALT)


def _digest(email: str) -> str:
    secret = settings().SECRET_KEY.encode()
    key = hashlib.sha256(b"portal known device address\x00" + secret).digest()
    return hmac.new(key, email.encode(), hashlib.sha256).hexdigest()[:32]


def _max_age() -> int:
    return settings().KNOWN_DEVICE_DAYS * 24 * 60 * 60


def _remembered() -> list[str]:
    """The digests this browser carries, or none if the cookie is missing, forged,
    malformed or older than KNOWN_DEVICE_DAYS."""
    raw = request.cookies.get(cookie_name())
    if not raw or len(raw) > 4096:
        return []
    try:
        digests = _serializer().loads(raw, max_age=_max_age())
    except BadSignature:
        return []
    if not isinstance(digests, list):
        return []
    return [d for d in digests[:MAX_ADDRESSES] if isinstance(d, str)]


def is_known(email: str) -> bool:
    """Whether this browser has signed in as this (canonical) address before."""
    digest = _digest(email)
    # Every digest is compared, so the time does not say where in the list it was.
    return any([hmac.compare_digest(digest, d) for d in _remembered()])


def remember(response: BaseResponse, email: str) -> None:
    """After a successful sign-in: add the address to this browser's cookie."""
    digest = _digest(email)
    digests = [digest] + [d for d in _remembered() if d != digest]
    response.set_cookie(
        cookie_name(),
        _serializer().dumps(digests[:MAX_ADDRESSES]),
        max_age=_max_age(),
        path="/",
        secure=not is_local(current_app),
        httponly=True,
        samesite="Lax",
    )
