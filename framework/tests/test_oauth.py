"""The OAuth core against a real authorization-server emulator on loopback and real PostgreSQL."""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import insert, select, text

from adconnect.db.schema import oauth_states, tenants
from adconnect.errors import (
    ConfigurationError,
    FatalProviderError,
    OAuthStateError,
    ReauthRequiredError,
    RetryableProviderError,
)
from adconnect.models import AuthorizationRequest, CodeExchange, TokenSet
from adconnect.oauth import OAuthClient, OAuthClientConfig, OAuthStates
from adconnect.testing.oauth_server import OAuthEmulator

REDIRECT = "http://127.0.0.1:8765/oauth/toy_ads/callback"
PROVIDER = "toy_ads"


@pytest.fixture
def tenant_ids(adconnect_db):
    with adconnect_db.platform() as conn:
        return [
            conn.execute(
                insert(tenants).values(slug=slug, name=slug.title()).returning(tenants.c.id)
            ).scalar_one()
            for slug in ("acme", "beta")
        ]


@pytest.fixture
def tenant(tenant_ids):
    return tenant_ids[0]


@pytest.fixture
def states(adconnect_db):
    return OAuthStates(adconnect_db, os.urandom(32))


@pytest.fixture
def emulator():
    with OAuthEmulator(redirect_uris=(REDIRECT,)) as emu:
        yield emu


def make_config(emu: OAuthEmulator, **overrides) -> OAuthClientConfig:
    values = {
        "provider_id": PROVIDER,
        "authorize_url": emu.authorize_url,
        "token_url": emu.token_url,
        "revoke_url": emu.revoke_url,
        "client_id": emu.oauth.client_id,
        "client_secret": emu.oauth.client_secret,
        "scopes": ("ads_read", "business_management"),
        "timeout": 2.0,
    }
    values.update(overrides)
    return OAuthClientConfig(**values)


@pytest.fixture
def client(emulator):
    with OAuthClient(make_config(emulator)) as oauth_client:
        yield oauth_client


def issue(states: OAuthStates, tenant, **overrides):
    values = {
        "tenant_id": tenant,
        "provider_id": PROVIDER,
        "flow": "default",
        "redirect_uri": REDIRECT,
        "allowed_redirect_uris": [REDIRECT],
        "user_id": "u-1",
    }
    values.update(overrides)
    return states.issue(**values)


def authorize(client: OAuthClient, issued, **kwargs) -> tuple[str, str]:
    """Follow the authorization URL on the emulator; returns ``(code, state)`` from Location."""
    request = AuthorizationRequest(
        state=issued.state, redirect_uri=REDIRECT, code_challenge=issued.code_challenge
    )
    url = client.authorization_url(request, **kwargs).url
    answer = httpx.get(url, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    return query["code"][0], query["state"][0]


def minted(emu: OAuthEmulator) -> TokenSet:
    body = emu.oauth.mint(["ads_read"])
    return TokenSet(access_token=body["access_token"], refresh_token=body["refresh_token"])


def token_calls(emu: OAuthEmulator) -> int:
    return emu.calls[emu.oauth.token_route]


# --- the round trip ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_full_round_trip(states, tenant, emulator, method):
    client = OAuthClient(make_config(emulator, token_auth_method=method))
    issued = issue(states, tenant)
    code, state = authorize(client, issued)
    assert state == issued.state
    consumed = states.consume(
        state, provider_id=PROVIDER, flow="default", redirect_uri=REDIRECT, tenant_id=tenant, user_id="u-1"
    )
    assert (consumed.tenant_id, consumed.user_id, consumed.flow) == (tenant, "u-1", "default")
    assert consumed.code_verifier == issued.code_verifier

    token = client.exchange_code(
        CodeExchange(code=code, redirect_uri=REDIRECT, code_verifier=consumed.code_verifier)
    )
    info = emulator.oauth.check_access_token(token.access_token.get_secret_value())
    assert info is not None
    assert info.scopes == token.scopes == {"ads_read", "business_management"}
    assert token.expires_within(timedelta(seconds=3601), now=datetime.now(UTC))
    assert not token.expires_within(timedelta(seconds=3500), now=datetime.now(UTC))

    refreshed = client.refresh(token)
    assert refreshed.access_token != token.access_token
    assert refreshed.refresh_token == token.refresh_token  # the server did not rotate it
    assert refreshed.scopes == token.scopes

    assert client.revoke(refreshed) is True
    assert emulator.oauth.check_access_token(refreshed.access_token.get_secret_value()) is None
    with pytest.raises(ReauthRequiredError):
        client.refresh(refreshed)
    assert token_calls(emulator) == 3
    assert emulator.calls[emulator.oauth.revoke_route] == 1
    client.close()


def test_rotated_refresh_tokens_replace_the_old_one(emulator, client):
    emulator.oauth.rotate_refresh_tokens = True
    token = minted(emulator)
    refreshed = client.refresh(token)
    assert refreshed.refresh_token is not None
    assert refreshed.refresh_token != token.refresh_token
    assert client.refresh(refreshed).access_token != refreshed.access_token


def test_authorization_url_parameters(client, emulator):
    request = AuthorizationRequest(
        state="st",
        redirect_uri=REDIRECT,
        code_challenge="ch",
        scopes=(" Ads_Read", "read_insights", "instagram_basic", "ads_read", "pages_show_list"),
        options={"auth_type": "rerequest"},
    )
    built = client.authorization_url(
        request, ignore=["read_insights"], ignore_prefixes=["instagram_"], extra={"prompt": "consent"}
    )
    assert built.scopes == ("ads_read", "pages_show_list")
    assert built.ignored_scopes == ("instagram_basic", "read_insights")
    query = parse_qs(urlsplit(built.url).query)
    assert {k: v[0] for k, v in query.items()} == {
        "response_type": "code",
        "client_id": emulator.oauth.client_id,
        "redirect_uri": REDIRECT,
        "state": "st",
        "scope": "ads_read pages_show_list",
        "code_challenge": "ch",
        "code_challenge_method": "S256",
        "auth_type": "rerequest",
        "prompt": "consent",
    }
    assert " " not in built.url
    assert "+" not in built.url


def test_authorization_url_with_meta_style_settings(emulator):
    config = make_config(
        emulator,
        authorize_url=emulator.authorize_url + "?display=page",
        scope_separator=",",
        use_pkce=False,
        extra_authorize_params={"config_id": "123"},
    )
    request = AuthorizationRequest(state="st", redirect_uri=REDIRECT, code_challenge="ch")
    query = parse_qs(urlsplit(OAuthClient(config).authorization_url(request).url).query)
    assert query["scope"] == ["ads_read,business_management"]
    assert query["display"] == ["page"]
    assert query["config_id"] == ["123"]
    assert "code_challenge" not in query
    empty = OAuthClient(config).authorization_url(request, scopes=())
    assert "scope" not in parse_qs(urlsplit(empty.url).query)


def test_extra_parameters_cannot_override_the_clients_own(client, emulator):
    request = AuthorizationRequest(
        state="st",
        redirect_uri=REDIRECT,
        code_challenge="ch",
        options={"redirect_uri": "https://evil.example/"},
    )
    with pytest.raises(ConfigurationError, match="redirect_uri"):
        client.authorization_url(request)
    with pytest.raises(ValidationError, match="may not set"):
        make_config(emulator, extra_authorize_params={"state": "x"})


@pytest.mark.parametrize(
    "url",
    [
        "http://auth.example.com/token",
        "ftp://127.0.0.1/token",
        "https://auth.example.com/token#frag",
        "/token",
    ],
)
def test_config_refuses_insecure_endpoints(emulator, url):
    with pytest.raises(ValidationError, match="https"):
        make_config(emulator, token_url=url)


# --- the state store -----------------------------------------------------------------------


def _reject(states, state, code, **overrides):
    values = {"provider_id": PROVIDER, "flow": "default", "redirect_uri": REDIRECT}
    values.update(overrides)
    with pytest.raises(OAuthStateError) as caught:
        states.consume(state, **values)
    assert caught.value.code == code
    assert not state or state not in str(caught.value)
    return caught.value


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"state": "not-a-state"}, "invalid_oauth_state"),
        ({"tamper": True}, "invalid_oauth_state"),
        ({"state": ""}, "invalid_oauth_state"),
        ({"tenant": 1}, "oauth_state_mismatch"),
        ({"user_id": "u-2"}, "oauth_state_mismatch"),
        ({"flow": "reconnect"}, "wrong_oauth_flow"),
        ({"provider_id": "google_ads"}, "wrong_oauth_flow"),
        ({"redirect_uri": REDIRECT + "/"}, "redirect_uri_mismatch"),
        ({"redirect_uri": "https://evil.example/callback"}, "redirect_uri_mismatch"),
    ],
)
def test_bad_states_are_rejected_before_any_token_request(states, tenant_ids, emulator, client, change, code):
    issued = issue(states, tenant_ids[0])
    _, state = authorize(client, issued)
    if change.pop("tamper", False):
        state = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
    state = change.pop("state", state)
    if "tenant" in change:
        change["tenant_id"] = tenant_ids[change.pop("tenant")]
    _reject(states, state, code, **{"tenant_id": tenant_ids[0], "user_id": "u-1", **change})
    assert token_calls(emulator) == 0
    if state == issued.state:  # a failed check does not burn the state
        states.consume(state, provider_id=PROVIDER, flow="default", redirect_uri=REDIRECT)


def test_states_signed_with_another_secret_are_forged(adconnect_db, states, tenant):
    other = OAuthStates(adconnect_db, os.urandom(32))
    _reject(states, issue(other, tenant).state, "invalid_oauth_state")


def test_replayed_state(states, tenant, emulator):
    issued = issue(states, tenant)
    states.consume(issued.state, provider_id=PROVIDER, flow="default", redirect_uri=REDIRECT)
    _reject(states, issued.state, "replayed_oauth_state")
    assert token_calls(emulator) == 0


def test_expired_state(adconnect_db, tenant):
    now = [datetime.now(UTC).timestamp()]
    states = OAuthStates(adconnect_db, os.urandom(32), clock=lambda: now[0])
    issued = issue(states, tenant)
    now[0] += 601
    _reject(states, issued.state, "expired_oauth_state")
    now[0] -= 2  # within the signature's age again: the row still decides
    states.consume(issued.state, provider_id=PROVIDER, flow="default", redirect_uri=REDIRECT)


def test_expired_row_is_refused_even_with_a_fresh_signature(adconnect_db, states, tenant):
    issued = issue(states, tenant)
    with adconnect_db.admin() as conn:
        conn.execute(text("UPDATE adconnect.oauth_states SET expires_at = now() - interval '1 s'"))
    _reject(states, issued.state, "expired_oauth_state")


def test_unknown_nonce_is_invalid(adconnect_db, states, tenant):
    issued = issue(states, tenant)
    with adconnect_db.admin() as conn:
        conn.execute(text("DELETE FROM adconnect.oauth_states"))
    _reject(states, issued.state, "invalid_oauth_state")


def test_issue_refuses_unregistered_redirects(states, tenant):
    with pytest.raises(OAuthStateError) as caught:
        issue(states, tenant, redirect_uri=REDIRECT + "?next=https://evil.example")
    assert caught.value.code == "redirect_uri_mismatch"
    with pytest.raises(ValueError, match="snake_case"):
        issue(states, tenant, flow="Re-Connect")


def test_state_rows_hold_nothing_secret_and_stay_in_their_tenant(adconnect_db, states, tenant_ids):
    issued = issue(states, tenant_ids[0])
    verifier = issued.code_verifier.get_secret_value()
    assert len(verifier) == 43
    with adconnect_db.tenant(tenant_ids[0]) as conn:
        row = conn.execute(select(oauth_states)).one()
    assert verifier not in repr(tuple(row))
    assert (row.expires_at, row.redirect_uri, row.user_id) == (issued.expires_at, REDIRECT, "u-1")
    with adconnect_db.tenant(tenant_ids[1]) as conn:
        assert conn.execute(select(oauth_states)).all() == []


def test_concurrent_consumers_see_exactly_one_success(states, tenant):
    issued = issue(states, tenant)
    outcomes: list[str] = []

    def consume() -> None:
        try:
            states.consume(issued.state, provider_id=PROVIDER, flow="default", redirect_uri=REDIRECT)
            outcomes.append("ok")
        except OAuthStateError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=consume) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok"] + ["replayed_oauth_state"] * 5


def test_purge_expired(adconnect_db, tenant):
    now = [datetime.now(UTC).timestamp() - 3600]
    states = OAuthStates(adconnect_db, os.urandom(32), clock=lambda: now[0])
    issue(states, tenant)
    now[0] += 3600
    issue(states, tenant)
    assert states.purge_expired(tenant) == 1
    assert states.purge_expired(tenant) == 0


def test_weak_secrets_are_refused(adconnect_db):
    with pytest.raises(ConfigurationError, match="32"):
        OAuthStates(adconnect_db, b"short")


# --- error mapping -------------------------------------------------------------------------


def test_wrong_pkce_verifier_fails_at_the_server_once(states, tenant, emulator, client):
    code, state = authorize(client, issue(states, tenant))
    states.consume(state, provider_id=PROVIDER, flow="default", redirect_uri=REDIRECT)
    wrong = SecretStr("w" * 43)
    with pytest.raises(ReauthRequiredError) as caught:
        client.exchange_code(CodeExchange(code=code, redirect_uri=REDIRECT, code_verifier=wrong))
    assert "invalid_grant" in caught.value.user_message
    assert token_calls(emulator) == 1


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_invalid_client_is_a_configuration_error(emulator, method):
    client = OAuthClient(make_config(emulator, client_secret="not-the-secret", token_auth_method=method))
    with pytest.raises(ConfigurationError) as caught:
        client.refresh(minted(emulator))
    assert "invalid_client" in caught.value.user_message


def test_auth_method_the_server_does_not_allow(emulator):
    emulator.oauth.auth_methods = frozenset({"client_secret_basic"})
    with pytest.raises(ConfigurationError):
        OAuthClient(make_config(emulator)).refresh(minted(emulator))
    basic = OAuthClient(make_config(emulator, token_auth_method="client_secret_basic"))
    assert basic.refresh(minted(emulator)).access_token


def test_503_with_retry_after_is_retryable(emulator, client):
    emulator.inject(
        emulator.oauth.token_route,
        status=503,
        headers={"Retry-After": "7"},
        json={"error": "temporarily_unavailable"},
    )
    with pytest.raises(RetryableProviderError) as caught:
        client.refresh(minted(emulator))
    assert caught.value.retry_after == 7
    assert caught.value.status == 503
    assert caught.value.endpoint == emulator.token_url


def test_429_with_an_http_date_retry_after(emulator, client):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    emulator.inject(emulator.oauth.token_route, status=429, body="slow down", headers={"Retry-After": when})
    with pytest.raises(RetryableProviderError) as caught:
        client.refresh(minted(emulator))
    assert 100 < caught.value.retry_after <= 120


def test_dropped_connections_and_timeouts_are_retryable(emulator, client):
    token = minted(emulator)
    emulator.inject(emulator.oauth.token_route, drop_connection=True)
    with pytest.raises(RetryableProviderError, match="failed"):
        client.refresh(token)
    emulator.inject(emulator.oauth.token_route, delay=0.6)
    slow = OAuthClient(make_config(emulator, timeout=0.2))
    with pytest.raises(RetryableProviderError, match="timed out"):
        slow.refresh(token)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error": "invalid_scope", "error_description": "nope"}, FatalProviderError),
        (400, {"error": "invalid_grant"}, ReauthRequiredError),
        (401, {"message": "who are you"}, ConfigurationError),
        (403, "forbidden", FatalProviderError),
        (200, {"token_type": "bearer"}, FatalProviderError),  # no access token
        (200, "<html>", FatalProviderError),
    ],
)
def test_other_answers(emulator, client, status, body, error):
    key = "json" if isinstance(body, dict) else "body"
    emulator.inject(emulator.oauth.token_route, status=status, **{key: body})
    with pytest.raises(error):
        client.refresh(minted(emulator))


def test_meta_style_errors_map_through_error_kinds(emulator):
    meta_error = {
        "error": {
            "message": "Error validating access token: Session has expired",
            "type": "OAuthException",
            "code": 190,
            "error_subcode": 463,
        }
    }
    token = minted(emulator)
    emulator.inject(emulator.oauth.token_route, status=400, json=meta_error, times=2)
    with pytest.raises(FatalProviderError) as caught:
        OAuthClient(make_config(emulator)).refresh(token)
    assert (caught.value.provider_code, caught.value.provider_subcode) == ("190", 463)
    with pytest.raises(ReauthRequiredError):
        OAuthClient(make_config(emulator, error_kinds={"190": "reauth"})).refresh(token)


def test_refresh_without_refresh_token_and_revoke_without_endpoint(emulator):
    client = OAuthClient(make_config(emulator, revoke_url=None))
    bare = TokenSet(access_token="x" * 20)
    with pytest.raises(ReauthRequiredError, match="no refresh token"):
        client.refresh(bare)
    assert client.revoke(bare) is False
    assert emulator.calls == {}


# --- secrets never leak --------------------------------------------------------------------


def test_errors_and_logs_never_contain_secrets(states, tenant, emulator, caplog):
    client = OAuthClient(make_config(emulator))
    failures: list[Exception] = []
    issued = issue(states, tenant)
    code, state = authorize(client, issued)  # the browser's part: the code is in its Location
    caplog.set_level(logging.DEBUG)  # from here on everything is ours, httpx/httpcore included
    consumed = states.consume(state, provider_id=PROVIDER, flow="default", redirect_uri=REDIRECT)
    token = client.exchange_code(
        CodeExchange(code=code, redirect_uri=REDIRECT, code_verifier=consumed.code_verifier)
    )
    refresh = token.refresh_token.get_secret_value()
    echo = {
        "error": "invalid_request",
        "error_description": f"refresh_token {refresh} and code {code} are odd " * 5,
    }
    scenarios = [
        lambda: client.exchange_code(
            CodeExchange(code=code, redirect_uri=REDIRECT, code_verifier=consumed.code_verifier)
        ),
        lambda: client.refresh(token),  # echo
        lambda: client.refresh(token),  # 503
        lambda: client.refresh(token),  # dropped
        lambda: client.refresh(token),  # 200 without a usable body
        lambda: OAuthClient(make_config(emulator, client_secret="wrong-" + "s" * 20)).refresh(token),
        lambda: states.consume(state, provider_id=PROVIDER, flow="default", redirect_uri=REDIRECT),
    ]
    route = emulator.oauth.token_route
    # the first scenario re-uses the code: the server itself refuses it (invalid_grant)
    faults = [
        None,
        {"status": 400, "json": echo},
        {"status": 503},
        {"drop_connection": True},
        {"status": 200, "json": {"access_token": "", "refresh_token": refresh}},
        None,
        None,
    ]
    for scenario, fault in zip(scenarios, faults, strict=True):
        if fault is not None:
            emulator.inject(route, **fault)
        with pytest.raises(Exception) as caught:  # noqa: PT011 - each scenario raises its own
            scenario()
        failures.append(caught.value)
    secrets = emulator.oauth.sensitive_values() | {code, issued.code_verifier.get_secret_value()}
    assert refresh in secrets
    texts = [caplog.text]
    for failure in failures:
        texts += [str(failure), repr(failure), repr(getattr(failure, "to_dict", dict)())]
    for secret in secrets:
        for text_ in texts:
            assert secret not in text_
    assert "invalid_request" in str(failures[1])  # the provider's code is kept
