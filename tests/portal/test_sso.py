"""Company single sign-on (OpenID Connect) on a domain rule, against oidc-provider-mock
on a loopback port and, for the tokens no correct provider issues, a fake token endpoint.
Every refusal leaves nobody signed in."""

from __future__ import annotations

import logging
import re
import time
import urllib.parse

import pytest
from sqlalchemy import func, select

from portal import crypto, sso
from portal.access import add_rule
from portal.actions import Actor
from portal.actions import sso as sso_actions
from portal.models import AuditEvent, CustomerSession, SignInChallenge, SsoMode, SsoProvider
from tests.conftest import request_link, run_worker
from tests.factories import make_bill_group
from tests.oidc_mock import FakeProvider, OidcMock
from tests.settings import change_settings

SSO_LINK_RE = re.compile(r'href="(/p/[\w-]+/sso/\d+[^"]*)"')
SECRET = "s3cret-client-secret-value"


def setup_sso(app, db, issuer: str, mode: SsoMode = SsoMode.OFFERED, client_id: str = "portal"):
    group = make_bill_group(db)
    rule = add_rule(db, group, "acme.com", created_by="test")
    db.commit()
    with app.test_request_context():
        sso_actions.set_sso(
            db,
            Actor.staff("admin@seller.test"),
            group,
            rule.id,
            sso_actions.SsoSettings("Acme", issuer, client_id, SECRET, mode),
            allow_http=True,
        )
        db.commit()
    return group


def sessions_of(db, group) -> int:
    db.expire_all()
    return db.scalar(
        select(func.count())
        .select_from(CustomerSession)
        .where(CustomerSession.bill_group_id == group.id)
    )


def start(client, group, address: str = "ap@acme.com"):
    """Type the address; follow the company sign-in button: the provider's URL."""
    page = request_link(client, group.public_id, address)
    assert page.status_code == 200
    assert "Continue with Acme sign-in" in page.text
    link = SSO_LINK_RE.search(page.text).group(1).replace("&amp;", "&")
    started = client.get(link)
    assert started.status_code == 303, started.text
    return started.headers["Location"]


def back_to_portal(client, callback_url: str):
    parts = urllib.parse.urlsplit(callback_url)
    assert f"{parts.scheme}://{parts.netloc}" == "https://portal.example.test"
    return client.get(f"{parts.path}?{parts.query}")


def audit_outcomes(db, action: str) -> list[str]:
    db.expire_all()
    return list(db.scalars(select(AuditEvent.outcome).where(AuditEvent.action == action)))


# --- the good sign-in -----------------------------------------------------------------


def test_a_verified_address_at_the_domain_signs_in(app, db, client, oidc_mock: OidcMock, caplog):
    caplog.set_level(logging.DEBUG)
    group = setup_sso(app, db, oidc_mock.url)
    oidc_mock.set_user("alice", {"email": "Alice@Acme.com", "email_verified": True})
    location = start(client, group)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"]
    assert query["nonce"] and query["state"]
    assert query["redirect_uri"] == ["https://portal.example.test/sso/callback"]
    done = back_to_portal(client, oidc_mock.authorize(location, "alice"))
    assert done.status_code == 303
    assert done.headers["Location"] == f"/p/{group.public_id}/overview"
    assert client.get(done.headers["Location"]).status_code == 200
    row = db.scalars(select(CustomerSession).where(CustomerSession.bill_group_id == group.id)).one()
    assert row.email == "alice@acme.com"
    event = db.scalars(select(AuditEvent).where(AuditEvent.outcome == "signed_in_sso")).one()
    assert event.actor == "alice@acme.com" and event.detail == f"sso {oidc_mock.url}"
    # The client secret went to the token endpoint, and into no log line on the way.
    assert SECRET not in caplog.text


def test_the_secret_is_sealed_and_never_in_the_audit(app, db, oidc_mock: OidcMock):
    group = setup_sso(app, db, oidc_mock.url)
    provider = db.scalars(select(SsoProvider)).one()
    assert SECRET not in provider.client_secret_sealed
    with app.app_context():
        assert crypto.unseal(sso.SECRET_PURPOSE, provider.client_secret_sealed) == SECRET
    details = " ".join(e.detail or "" for e in db.scalars(select(AuditEvent)))
    assert audit_outcomes(db, "access_rule.sso") == ["added"]
    assert SECRET not in details and str(group.id)


def test_a_replayed_state_signs_in_nobody(app, db, client, oidc_mock: OidcMock):
    group = setup_sso(app, db, oidc_mock.url)
    oidc_mock.set_user("bob", {"email": "bob@acme.com", "email_verified": True})
    callback = oidc_mock.authorize(start(client, group), "bob")
    cookie = client.get_cookie("session")
    assert back_to_portal(client, callback).status_code == 303
    assert sessions_of(db, group) == 1
    # The same callback, from a browser holding the session from before the sign-in.
    replay = app.test_client()
    replay.set_cookie("session", cookie.value)
    again = back_to_portal(replay, callback)
    assert again.status_code == 400
    assert "cannot be used" in again.text
    assert sessions_of(db, group) == 1
    assert "state_not_usable" in audit_outcomes(db, "signin.sso")


def test_a_callback_in_another_browser_signs_in_nobody(app, db, client, oidc_mock: OidcMock):
    group = setup_sso(app, db, oidc_mock.url)
    oidc_mock.set_user("eve", {"email": "eve@acme.com", "email_verified": True})
    callback = oidc_mock.authorize(start(client, group), "eve")
    other = app.test_client()
    refused = back_to_portal(other, callback)
    assert refused.status_code == 403
    assert "started in another browser" in refused.text
    assert sessions_of(db, group) == 0
    assert "other_browser" in audit_outcomes(db, "signin.sso")


@pytest.mark.parametrize(
    ("claims", "outcome"),
    [
        ({"email": "carol@acme.com", "email_verified": False}, "email_not_verified"),
        ({"email": "carol@acme.com", "email_verified": "true"}, "email_not_verified"),
        ({"email": "carol@acme.com"}, "email_not_verified"),
        ({"email": "carol@acme.com", "email_verified": 1}, "email_not_verified"),
        ({"email": "carol@acme.com", "email_verified": [True]}, "email_not_verified"),
        ({"email": "carol\uff20acme.com", "email_verified": True}, "email_malformed"),
        ({"email": "carol@acme.com, eve@evil.net", "email_verified": True}, "email_malformed"),
        ({"email": "carol@acmé.com", "email_verified": True}, "email_of_another_domain"),
        ({"email": "carol@xn--acm-dma.com", "email_verified": True}, "email_of_another_domain"),
        ({"email": "carol@evilacme.com", "email_verified": True}, "email_of_another_domain"),
        ({"email": "carol@sub.acme.com", "email_verified": True}, "email_of_another_domain"),
        ({"email": "carol@acme.com.evil.net", "email_verified": True}, "email_of_another_domain"),
        ({"email_verified": True}, "no_email"),
    ],
)
def test_the_address_must_be_verified_and_at_the_domain(
    app, db, client, oidc_mock: OidcMock, claims, outcome
):
    group = setup_sso(app, db, oidc_mock.url)
    oidc_mock.set_user("carol", claims)
    refused = back_to_portal(client, oidc_mock.authorize(start(client, group), "carol"))
    assert refused.status_code == 403
    assert "We could not sign you in" in refused.text
    assert sessions_of(db, group) == 0
    assert outcome in audit_outcomes(db, "signin.sso")
    assert client.get(f"/p/{group.public_id}/overview").status_code in (302, 303)


def test_the_bill_group_rules_are_checked_again(app, db, client, oidc_mock: OidcMock):
    group = setup_sso(app, db, oidc_mock.url)
    oidc_mock.set_user("dan", {"email": "dan@acme.com", "email_verified": True})
    callback = oidc_mock.authorize(start(client, group), "dan")
    group.portal_enabled = False  # between the start and the callback
    db.commit()
    assert back_to_portal(client, callback).status_code == 404
    assert sessions_of(db, group) == 0


# --- tokens a correct provider never issues --------------------------------------------


def fake_round(app, db, client, fake: FakeProvider, **claims):
    group = setup_sso(app, db, fake.url)
    location = start(client, group)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    fake.claims = {"nonce": query["nonce"][0], **claims}
    state = query["state"][0]
    response = client.get(f"/sso/callback?code=abc&state={state}")
    return group, response


def test_the_fake_provider_good_token_signs_in(app, db, client, fake_provider):
    group, response = fake_round(app, db, client, fake_provider)
    assert response.status_code == 303
    assert sessions_of(db, group) == 1
    # PKCE: the verifier went to the token endpoint with the code.
    assert fake_provider.token_requests[-1]["code_verifier"]


@pytest.mark.parametrize(
    ("claims", "what"),
    [
        ({"aud": "someone-else"}, "wrong audience"),
        ({"aud": ["someone-else", "another"]}, "wrong audience list"),
        ({"iss": "https://evil.example"}, "wrong issuer"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
        ({"nonce": "not-the-nonce"}, "wrong nonce"),
        ({"nonce": None}, "no nonce"),
    ],
)
def test_bad_id_tokens_sign_in_nobody(app, db, client, fake_provider, claims, what):
    group, response = fake_round(app, db, client, fake_provider, **claims)
    assert response.status_code == 403, what
    assert sessions_of(db, group) == 0
    outcomes = audit_outcomes(db, "signin.sso")
    assert any(o.startswith("id_token_") for o in outcomes), outcomes


def test_a_token_signed_with_another_key_signs_in_nobody(app, db, client, fake_provider):
    from joserfc.jwk import RSAKey

    fake_provider.signing_key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    group, response = fake_round(app, db, client, fake_provider)
    assert response.status_code == 403
    assert sessions_of(db, group) == 0
    assert "id_token_bad_signature" in audit_outcomes(db, "signin.sso")


# --- the provider is down --------------------------------------------------------------


def test_a_provider_that_is_down_gets_a_clear_page_and_the_link_still_works(app, db, client, smtp):
    from tests.conftest import csrf_token, free_port, link_and_code

    group = make_bill_group(db)
    rule = add_rule(db, group, "acme.com", created_by="test")
    db.add(
        SsoProvider(
            rule_id=rule.id,
            company_name="Acme",
            issuer=f"http://127.0.0.1:{free_port()}",
            client_id="portal",
            client_secret_sealed="x",
            mode=SsoMode.OFFERED,
            updated_by="test",
        )
    )
    db.commit()
    with app.app_context():
        provider = db.scalars(select(SsoProvider)).one()
        provider.client_secret_sealed = crypto.seal(sso.SECRET_PURPOSE, SECRET)
        db.commit()
    page = request_link(client, group.public_id, "ap@acme.com")
    link = SSO_LINK_RE.search(page.text).group(1).replace("&amp;", "&")
    down = client.get(link)
    assert down.status_code == 502
    assert "Acme sign-in is not answering" in down.text
    assert "Traceback" not in down.text
    assert "provider_unavailable" in audit_outcomes(db, "signin.sso")
    # The emailed link, asked for on the same page, still signs in.
    run_worker(app)
    path, _code = link_and_code(smtp.to("ap@acme.com")[-1])
    confirm = client.get(client.get(path).headers["Location"])
    assert confirm.status_code == 200
    done = client.post(
        f"/p/{group.public_id}/confirm", data={"csrf_token": csrf_token(confirm.text)}
    )
    assert done.status_code == 303 and done.headers["Location"].endswith("/overview")
    assert sessions_of(db, group) == 1
    # Required, and down: the page does not offer the emailed link.
    provider = db.scalars(select(SsoProvider)).one()
    provider.mode = SsoMode.REQUIRED
    db.commit()
    down = app.test_client().get(link)
    assert down.status_code == 502
    assert "Email me a sign-in link" not in down.text and "ask your IT team" in down.text


# --- required ---------------------------------------------------------------------------


def test_required_refuses_the_emailed_link_and_sends_nothing(app, db, client, smtp, oidc_mock):
    group = setup_sso(app, db, oidc_mock.url, SsoMode.REQUIRED)
    page = request_link(client, group.public_id, "ap@acme.com")
    assert page.status_code == 200
    assert "Sign in with Acme sign-in" in page.text
    assert "not with an emailed link" in page.text
    assert SSO_LINK_RE.search(page.text)
    run_worker(app)
    assert smtp.to("ap@acme.com") == []
    assert db.scalar(select(func.count()).select_from(SignInChallenge)) == 0
    # Another domain's addresses are not affected (and not told anything new).
    other = request_link(client, group.public_id, "ap@other.example")
    assert "Check your email" in other.text and "Acme" not in other.text


def test_required_after_a_link_was_sent_refuses_that_link(app, db, client, smtp, oidc_mock):
    from tests.conftest import csrf_token, link_and_code

    group = setup_sso(app, db, oidc_mock.url, SsoMode.OFFERED)
    request_link(client, group.public_id, "ap@acme.com")
    run_worker(app)
    path, _code = link_and_code(smtp.to("ap@acme.com")[-1])
    provider = db.scalars(select(SsoProvider)).one()
    provider.mode = SsoMode.REQUIRED
    db.commit()
    confirm = client.get(client.get(path).headers["Location"])
    done = client.post(
        f"/p/{group.public_id}/confirm", data={"csrf_token": csrf_token(confirm.text)}
    )
    assert done.status_code == 303 and "link-invalid" in done.headers["Location"]
    assert sessions_of(db, group) == 0
    assert "sso_required" in audit_outcomes(db, "signin.complete")


def test_the_button_does_not_depend_on_the_address(app, db, client, oidc_mock):
    group = setup_sso(app, db, oidc_mock.url)
    # Nobody needs to exist: a domain rule's company sign-in is the domain's, not theirs.
    pages = [
        request_link(app.test_client(), group.public_id, a)
        for a in ("ap@acme.com", "nobody-at-all@acme.com")
    ]
    assert [bool(SSO_LINK_RE.search(p.text)) for p in pages] == [True, True]
    # The same page, apart from the address it repeats and the form's CSRF token.
    same = [
        re.sub(r'value="[^"]+"', "", p.text.replace(a, "ADDRESS"))
        for p, a in zip(pages, ("ap@acme.com", "nobody-at-all@acme.com"), strict=True)
    ]
    assert same[0] == same[1]
    # Subdomains are not covered by this rule, so neither is its sign-in.
    sub = request_link(client, group.public_id, "ap@eu.acme.com")
    assert not SSO_LINK_RE.search(sub.text)


def test_the_start_is_scoped_to_the_bill_group(app, db, client, oidc_mock):
    group = setup_sso(app, db, oidc_mock.url)
    other = make_bill_group(db)
    db.commit()
    provider = db.scalars(select(SsoProvider)).one()
    assert client.get(f"/p/{other.public_id}/sso/{provider.id}").status_code == 404
    assert client.get(f"/p/{group.public_id}/sso/{provider.id + 99}").status_code == 404


def test_the_endpoints_are_rate_limited(app, db, client, oidc_mock):
    change_settings(app, SECRET_ENDPOINT_LIMIT="3 per minute")
    statuses = [client.get("/sso/callback?state=x&code=y").status_code for _ in range(5)]
    assert statuses[:3] == [400, 400, 400] and statuses[-1] == 429


# --- the demo ---------------------------------------------------------------------------


def test_the_demo_offers_company_sign_in_only_with_a_mock_configured(app, db, client, oidc_mock):
    from portal import demo

    with app.app_context():
        demo.load(db)
        db.commit()
    assert db.scalars(select(SsoProvider)).all() == []
    demo.delete_everything(db)
    db.commit()
    change_settings(app, SSO_DEMO_ISSUER=oidc_mock.url)
    with app.app_context():
        demo.load(db)
        db.commit()
        provider = db.scalars(select(SsoProvider)).one()
        assert (provider.issuer, provider.mode) == (oidc_mock.url, SsoMode.OFFERED)
        assert "Company sign-in" in demo.describe(db, "http://x", True, "pw")
    group = provider.rule.bill_group
    oidc_mock.set_user("demo-ap", {"email": "ap@acme.com", "email_verified": True})
    done = back_to_portal(client, oidc_mock.authorize(start(client, group), "demo-ap"))
    assert done.status_code == 303 and sessions_of(db, group) == 1


def test_twenty_concurrent_callbacks_sign_in_exactly_once(app, db, client, fake_provider):
    """The same callback, 20 times at once from the browser that started it, against a
    provider that would take the code every time: the state is spent once."""
    from tests.portal.signin_helpers import CONCURRENT, clone, race

    group = setup_sso(app, db, fake_provider.url)
    location = start(client, group)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    fake_provider.claims = {"nonce": query["nonce"][0]}
    callback = f"/sso/callback?code=abc&state={query['state'][0]}"
    browsers = [clone(app, client) for _ in range(CONCURRENT)]
    responses = race(browsers, lambda browser: browser.get(callback))
    assert sorted(r.status_code for r in responses) == [303] + [400] * (CONCURRENT - 1)
    assert sessions_of(db, group) == 1
    assert len(fake_provider.token_requests) == 1


def test_the_callback_code_and_state_are_kept_out_of_request_logs():
    from portal.logredact import redact

    line = '127.0.0.1 "GET /sso/callback?code=SECRETCODE&state=SECRETSTATE HTTP/1.1" 303'
    cleaned = redact(line)
    assert "SECRETCODE" not in cleaned and "SECRETSTATE" not in cleaned
    assert '"GET /sso/callback?[redacted] HTTP/1.1" 303' in cleaned


def test_the_next_path_is_kept_and_only_inside_the_portal(app, db, client, oidc_mock):
    group = setup_sso(app, db, oidc_mock.url)
    oidc_mock.set_user("nina", {"email": "nina@acme.com", "email_verified": True})
    request_link(client, group.public_id, "nina@acme.com")
    provider = db.scalars(select(SsoProvider)).one()
    wanted = f"/p/{group.public_id}/invoices"
    for next_path, lands in ((wanted, wanted), ("https://evil.example/", None)):
        browser = app.test_client()
        request_link(browser, group.public_id, "nina@acme.com")
        started = browser.get(
            f"/p/{group.public_id}/sso/{provider.id}", query_string={"next": next_path}
        )
        done = back_to_portal(browser, oidc_mock.authorize(started.headers["Location"], "nina"))
        assert done.headers["Location"] == (lands or f"/p/{group.public_id}/overview")


def test_removing_the_rule_removes_its_company_sign_in(app, db, client, oidc_mock):
    from portal.actions import rules

    group = setup_sso(app, db, oidc_mock.url)
    oidc_mock.set_user("rita", {"email": "rita@acme.com", "email_verified": True})
    callback = oidc_mock.authorize(start(client, group), "rita")
    rule = db.scalars(select(SsoProvider)).one().rule
    with app.test_request_context():
        rules.remove_rule(db, Actor.staff("admin@seller.test"), group, rule.id)
        db.commit()
    db.expire_all()
    assert db.scalars(select(SsoProvider)).all() == []
    # The attempt went with it: the callback finds nothing to finish.
    assert back_to_portal(client, callback).status_code == 400
    assert sessions_of(db, group) == 0


def test_a_secret_that_cannot_be_unsealed_is_a_clear_page(app, db, client, oidc_mock):
    group = setup_sso(app, db, oidc_mock.url)
    db.scalars(select(SsoProvider)).one().client_secret_sealed = "not-a-fernet-token"
    db.commit()
    page = request_link(client, group.public_id, "ap@acme.com")
    link = SSO_LINK_RE.search(page.text).group(1).replace("&amp;", "&")
    down = client.get(link)
    assert down.status_code == 502 and "is not answering" in down.text


# --- where the portal's own requests may go (SSRF) ---------------------------------------


def _set(app, db, issuer: str):
    group = make_bill_group(db)
    rule = add_rule(db, group, "acme.com", created_by="test")
    db.commit()
    with app.test_request_context():
        return sso_actions.set_sso(
            db,
            Actor.staff("admin@seller.test"),
            group,
            rule.id,
            sso_actions.SsoSettings("Acme", issuer, "portal", SECRET, SsoMode.OFFERED),
            allow_http=True,
        )


@pytest.mark.parametrize(
    "issuer", ["loopback", "http://169.254.169.254/latest", "http://10.0.0.7", "http://[::1]:8080"]
)
def test_an_issuer_inside_the_network_is_refused_outside_local_dev(app, db, fake_provider, issuer):
    """Staff type the issuer, and the portal fetches it: outside local development it
    must be a public address, as a webhook URL must (a typo or a stolen admin session
    must not make the portal probe 127.0.0.1 or the cloud metadata service)."""
    from portal.actions import Invalid

    change_settings(app, WEBHOOK_ALLOW_PRIVATE_NETWORKS=False, SSO_TIMEOUT_SECONDS=2)
    issuer = fake_provider.url if issuer == "loopback" else issuer
    with pytest.raises(Invalid, match="private or reserved") as refused:
        _set(app, db, issuer)
    assert refused.value.field == "issuer"
    db.rollback()
    assert db.scalar(select(func.count()).select_from(SsoProvider)) == 0


def test_a_provider_name_resolving_inside_is_refused(app, monkeypatch):
    """A name is checked against every address it resolves to, for discovery, the keys
    and the token request alike (they all go through the one guarded session)."""
    import socket

    change_settings(app, WEBHOOK_ALLOW_PRIVATE_NETWORKS=False)
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, port, *a, **k: [(2, 1, 6, "", ("10.1.2.3", port))]
    )
    with app.test_request_context():
        client = sso._client("t", "https://login.acme.example", "portal", "")
        session = client._get_session()
        with pytest.raises(sso.RefusedDestination, match="private or reserved"):
            session.get("https://login.acme.example/jwks")
        with pytest.raises(sso.ProviderUnavailable, match="discovery refused"):
            sso.check_discovery("https://login.acme.example", "portal")


def test_discovery_does_not_follow_a_redirect(app, db, fake_provider):
    """A provider that answers discovery with a redirect (to somewhere inside, or a
    document of its choosing) is refused: redirects are never followed."""
    import threading

    from werkzeug.serving import make_server
    from werkzeug.wrappers import Response

    def bouncer(environ, start_response):
        if environ["PATH_INFO"] == "/.well-known/openid-configuration":
            response = Response("", 302, {"Location": f"{url}/moved"})
        else:  # the moved document names the bouncer as its issuer: good but for the hop
            body = (
                '{"issuer": "%s", "authorization_endpoint": "%s/authorize", '
                '"token_endpoint": "%s/token", "jwks_uri": "%s/jwks"}' % ((url,) * 4)
            )
            response = Response(body, mimetype="application/json")
        return response(environ, start_response)

    server = make_server("127.0.0.1", 0, bouncer, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        from portal.actions import Invalid

        with pytest.raises(Invalid, match="redirect"):
            _set(app, db, url)
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_the_token_and_key_requests_go_through_the_guard(
    app, db, client, fake_provider, monkeypatch
):
    """Discovery may be fine and still name a token endpoint (or JWKS) inside: those
    requests are checked too, and the callback is a clear page with nobody signed in."""
    from portal import webhooks

    for inside in ("/token", "/jwks"):
        fake_provider.token_requests.clear()
        group = setup_sso(app, db, fake_provider.url)
        location = start(client, group)
        state = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["state"][0]
        monkeypatch.setattr(
            webhooks,
            "refused_destination",
            lambda url, inside=inside: webhooks.REFUSED_ADDRESS if url.endswith(inside) else None,
        )
        response = client.get(f"/sso/callback?code=abc&state={state}")
        monkeypatch.undo()
        assert response.status_code == 502, inside
        assert sessions_of(db, group) == 0
        # The token request was never sent, or (keys refused) sent once, then refused.
        assert len(fake_provider.token_requests) == (0 if inside == "/token" else 1)
