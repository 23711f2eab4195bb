"""localstripe (PyPI: a stateful local Stripe server with a stand-in Stripe.js) for the
Stripe gateway's tests, on a loopback port, and the session fixture that starts it.

`python -m tests.localstripe --port N` runs localstripe's own aiohttp app, with three
differences from its `localstripe --port N` command, each for a reason:

- it listens on 127.0.0.1 only (the command binds every interface) and keeps its
  store in memory (the command writes /tmp/localstripe.pickle, which concurrent test
  runs would share);
- it honours `Idempotency-Key` as Stripe documents it (localstripe ignores the
  header): a POST repeated with a key answers the first response again, marked
  `Idempotent-Replayed: true`; the same key with other parameters is a 400
  idempotency_error. So the test of "same key twice, one PaymentIntent" checks that
  the gateway sends the key, against Stripe's documented behaviour;
- a PaymentIntent accepts `return_url` and `description`, which Stripe accepts and
  localstripe refuses as unexpected; they are kept on the object;
- a PaymentIntent confirmed with a `return_url` (as the gateway confirms, on the
  server, without `use_stripe_sdk`) whose card asks for 3-D Secure answers, as Stripe
  does, `next_action: {type: "redirect_to_url", redirect_to_url: {url, return_url}}`
  (localstripe answers `use_stripe_sdk`, which only Stripe.js in the page can act on).
  The url is a stand-in for Stripe's hosted test page (hooks.stripe.com), served here
  at /hooks.stripe.com/3d_secure/<id> (beside localstripe's /js.stripe.com/v3/): two
  buttons, "Complete authentication" and "Fail authentication", that authenticate the
  PaymentIntent with localstripe's own `_authenticate` and send the browser to the
  return_url with `payment_intent`, `payment_intent_client_secret` and
  `redirect_status` (succeeded or failed), the query Stripe adds.

It is a test helper, not the portal's code: nothing under portal/ imports it.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.loopback import serving

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class LocalStripe:
    """A running localstripe: its base URL (the API and /js.stripe.com/v3/ beside it)."""

    url: str

    @property
    def js_url(self) -> str:
        return self.url + "/js.stripe.com/v3/"

    def post(self, path: str, data: dict[str, Any], key: str | None = "sk_test_local") -> Any:
        """An API call with a JSON body, as localstripe's stand-in Stripe.js makes them;
        `key=None`: no secret key, as from the browser (the publishable key in `data`)."""
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            self.url + path, data=json.dumps(data).encode(), headers=headers, method="POST"
        )
        with _DIRECT.open(request, timeout=10) as response:
            answer = response.read()
        return json.loads(answer) if answer else None

    def get(self, path: str, key: str = "sk_test_local") -> Any:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {key}"}
        )
        with _DIRECT.open(request, timeout=10) as response:
            return json.load(response)

    def list_all(self, path: str) -> list[Any]:
        """Every object of a list endpoint ("/v1/customers"), page after page."""
        found: list[Any] = []
        after = ""
        while True:
            page = self.get(f"{path}?limit=100{after}")
            found += page["data"]
            if not page["has_more"] or not page["data"]:
                return found
            after = f"&starting_after={page['data'][-1]['id']}"

    def webhook(self, name: str, url: str, secret: str) -> None:
        """Have localstripe deliver its events, signed with `secret`, to `url` (it has no
        way to remove one: register the name again to point it elsewhere)."""
        self.post(f"/_config/webhooks/{name}", {"url": url, "secret": secret})


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    """localstripe on a free loopback port for the whole run, stopped at the end."""
    log = tmp_path_factory.mktemp("localstripe") / "localstripe.log"

    def command(port: int) -> list[str]:
        return ["-m", "tests.localstripe", "--port", str(port)]

    with serving("localstripe", command, "/js.stripe.com/v3/", log) as url:
        yield LocalStripe(url)


# --- the server (run in its own process) -----------------------------------------------


def _serve(port: int) -> None:  # pragma: no cover - runs in the subprocess
    from aiohttp import web
    from localstripe import resources, server

    resources.store.dump_to_disk = lambda: None  # type: ignore[method-assign]  # memory only

    original_init = resources.PaymentIntent.__init__

    def intent_init(
        self: Any, return_url: str | None = None, description: str | None = None, **data: Any
    ) -> None:
        original_init(self, **data)
        self.return_url = return_url
        self.description = description

    resources.PaymentIntent.__init__ = intent_init  # type: ignore[method-assign]

    base = f"http://127.0.0.1:{port}"
    original_confirm = resources.PaymentIntent._confirm

    def intent_confirm(self: Any, on_failure_now: Any) -> None:
        original_confirm(self, on_failure_now)
        if self.next_action and self.return_url:
            self.next_action = {
                "type": "redirect_to_url",
                "redirect_to_url": {
                    "url": f"{base}{THREE_D_SECURE_PATH}{self.id}",
                    "return_url": self.return_url,
                },
            }

    resources.PaymentIntent._confirm = intent_confirm  # type: ignore[method-assign]

    @web.middleware
    async def three_d_secure(request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith(THREE_D_SECURE_PATH):
            return await handler(request)
        return await _three_d_secure_page(request, resources)

    server.app.middlewares.insert(0, three_d_secure)

    seen: dict[str, tuple[str, bytes, int, bytes]] = {}

    @web.middleware
    async def idempotency(request: web.Request, handler: Any) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key:
            return await handler(request)
        body = await request.read()
        if key in seen:
            path, first_body, status, answer = seen[key]
            if (path, first_body) != (request.path, body):
                error = {
                    "error": {
                        "type": "idempotency_error",
                        "message": "Keys for idempotent requests can only be used with the "
                        "same parameters they were first used with.",
                    }
                }
                return web.json_response(error, status=400)
            return web.Response(
                body=answer,
                status=status,
                content_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        response = await handler(request)
        if isinstance(response, web.Response) and response.status < 500 and response.body:
            seen[key] = (request.path, body, response.status, bytes(response.body))  # type: ignore[arg-type]
        return response

    server.app.middlewares.insert(0, idempotency)
    web.run_app(server.app, host="127.0.0.1", port=port, print=None)


THREE_D_SECURE_PATH = "/hooks.stripe.com/3d_secure/"
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>3D Secure test page</title></head>
<body><main><h1>3D Secure test page</h1>
<p>localstripe's stand-in for Stripe's test authentication page: {amount} {currency}.</p>
<form method="post">
<button type="submit" name="outcome" value="complete">Complete authentication</button>
<button type="submit" name="outcome" value="fail">Fail authentication</button>
</form></main></body></html>
"""


async def _three_d_secure_page(request: Any, resources: Any) -> Any:  # pragma: no cover
    """GET: the page; POST: authenticate (or fail) the PaymentIntent, then back to its
    return_url as Stripe sends the browser back (a 303 with Stripe's query)."""
    from urllib.parse import urlencode

    from aiohttp import web
    from localstripe.errors import UserError

    intent_id = request.path.removeprefix(THREE_D_SECURE_PATH)
    try:
        intent = resources.PaymentIntent._api_retrieve(intent_id)
    except UserError:
        return web.Response(status=404, text="No such PaymentIntent")
    if intent.status != "requires_action" or not intent.return_url:
        return web.Response(status=400, text="This PaymentIntent needs no authentication")
    if request.method == "GET":
        page = _PAGE.format(amount=intent.amount, currency=intent.currency.upper())
        return web.Response(text=page, content_type="text/html")
    if request.method != "POST":
        return web.Response(status=405)
    outcome = (await request.post()).get("outcome")
    if outcome not in ("complete", "fail"):
        return web.Response(status=400, text="Choose an outcome")
    try:
        resources.PaymentIntent._api_authenticate(
            intent.id, client_secret=intent.client_secret, success=outcome == "complete"
        )
    except UserError:
        pass  # authenticated, then declined: the PaymentIntent says so (status, error)
    query = urlencode(
        {
            "payment_intent": intent.id,
            "payment_intent_client_secret": intent.client_secret,
            "redirect_status": "succeeded" if intent.status == "succeeded" else "failed",
        }
    )
    separator = "&" if "?" in intent.return_url else "?"
    raise web.HTTPSeeOther(f"{intent.return_url}{separator}{query}")


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    _serve(parser.parse_args().port)
