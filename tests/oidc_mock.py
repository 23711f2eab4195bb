"""OpenID Connect providers for the company sign-in tests, on loopback ports.

- `oidc_mock`: oidc-provider-mock (PyPI), a real authlib-based provider, in a subprocess
  for the whole run (like tests/localstripe.py). Its users' claims are set with
  `PUT /users/<sub>` (email, email_verified, ...); its login form takes a `sub`.
- `FakeProvider`: a few lines of discovery, JWKS and token endpoint in a thread, for the
  tokens a correct provider never issues (another audience, expired, signed with a key
  it does not publish, another nonce): each test says what the next ID token holds.

Test helpers, not the portal's code: nothing under portal/ imports this.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.loopback import serving

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


@dataclass(frozen=True)
class OidcMock:
    url: str

    def set_user(self, sub: str, claims: dict[str, Any]) -> None:
        body = json.dumps(claims).encode()
        request = urllib.request.Request(
            f"{self.url}/users/{urllib.parse.quote(sub)}",
            data=body,
            headers={"Content-Type": "application/json"},
            method="PUT",
        )
        with _DIRECT.open(request, timeout=10) as response:
            assert response.status == 204

    def authorize(self, authorization_url: str, sub: str) -> str:
        """Press "Authorize" on the mock's login form as `sub`: the URL the provider sends
        the browser back to (the portal's callback, with code and state)."""
        assert authorization_url.startswith(self.url), authorization_url
        request = urllib.request.Request(
            authorization_url, data=urllib.parse.urlencode({"sub": sub}).encode(), method="POST"
        )
        try:
            _NO_REDIRECT.open(request, timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code in (302, 303), exc.read()
            return str(exc.headers["Location"])
        raise AssertionError("the mock did not redirect")


@pytest.fixture(scope="session")
def oidc_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcMock]:
    """oidc-provider-mock on a free loopback port for the whole run, stopped at the end."""
    log = tmp_path_factory.mktemp("oidc") / "oidc-provider-mock.log"

    def command(port: int) -> list[str]:
        return ["-m", "oidc_provider_mock", "--host", "127.0.0.1", "-p", str(port)]

    with serving("oidc-provider-mock", command, "/.well-known/openid-configuration", log) as url:
        yield OidcMock(url)


# --- a provider that issues what the test asks for ------------------------------------


@dataclass
class FakeProvider:
    """Discovery, JWKS and a token endpoint. The next token response carries an ID token
    with `claims` (defaults: right issuer, audience, times), signed by `signing_key`
    (default: the published key)."""

    url: str = ""
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    claims: dict[str, Any] = field(default_factory=dict)
    signing_key: RSAKey | None = None
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def id_token(self, client_id: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": client_id,
            "sub": "someone",
            "iat": now,
            "exp": now + 300,
            "email": "ap@acme.com",
            "email_verified": True,
            **self.claims,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        key = self.signing_key or self.key
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        if request.path == "/.well-known/openid-configuration":
            body: Any = {
                "issuer": self.url,
                "authorization_endpoint": self.url + "/authorize",
                "token_endpoint": self.url + "/token",
                "jwks_uri": self.url + "/jwks",
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        elif request.path == "/jwks":
            body = KeySet([self.key]).as_dict(private=False)
        elif request.path == "/token" and request.method == "POST":
            form = request.form.to_dict()
            self.token_requests.append(form)
            client_id = form.get("client_id") or (
                request.authorization.username if request.authorization else ""
            )
            body = {
                "access_token": "at-" + str(len(self.token_requests)),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": self.id_token(client_id or ""),
            }
        else:
            return Response("not found", 404)(environ, start_response)
        return Response(json.dumps(body), mimetype="application/json")(environ, start_response)


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    provider = FakeProvider()
    server = make_server("127.0.0.1", 0, provider, threaded=True)
    provider.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        thread.join(timeout=10)
