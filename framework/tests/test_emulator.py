"""The emulator harness over real loopback HTTP: routing, faults, counters, reset, OAuth server."""

from __future__ import annotations

import base64
import threading
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from adconnect.testing.emulator import Abort, Emulator, Request, Response, route
from adconnect.testing.oauth_server import OAuthEmulator, s256

REDIRECT = "http://127.0.0.1:8765/oauth/callback"


class ItemsEmulator(Emulator):
    """A tiny provider API: items with seeded values."""

    @route("GET", "/v1/items")
    def list_items(self, request: Request) -> dict:
        return {"tags": request.query_lists.get("tag", []), "limit": request.query.get("limit")}

    @route("GET", "/v1/items/{item_id}")
    def get_item(self, request: Request) -> Response:
        return Response(json={"id": request.path_params["item_id"], "value": self.rng.randint(0, 10**6)})

    @route("POST", "/v1/items/{item_id}")
    @route("PUT", "/v1/items/{item_id}")
    def write_item(self, request: Request) -> Response:
        return Response(
            status=201,
            json={"method": request.method, "got": request.json(), "id": request.path_params["item_id"]},
        )

    @route("GET", "/v1/items/special")
    def special(self, request: Request) -> dict:
        return {"special": True}

    @route("POST", "/v1/form")
    def form(self, request: Request) -> dict:
        return {"form": request.form(), "auth": request.header("X-Key")}

    @route("GET", "/v1/files/{rest:path}")
    def files(self, request: Request) -> Response:
        return Response(body=f"file {request.path_params['rest']}", headers={"X-Usage": "3"})

    @route("GET", "/v1/missing")
    def missing(self, request: Request) -> dict:
        raise Abort(404, {"error": {"message": "no such thing", "code": 803}})

    @route("GET", "/v1/broken")
    def broken(self, request: Request) -> dict:
        raise RuntimeError("bug in the emulator")


@pytest.fixture
def emu():
    with ItemsEmulator(seed=42) as emulator:
        yield emulator


@pytest.fixture
def http(emu):
    with httpx.Client(base_url=emu.url, timeout=5) as client:
        yield client


# --- routing -------------------------------------------------------------------------------


def test_path_params_query_and_json(emu, http):
    item = http.get("/v1/items/abc%20d").json()
    assert item["id"] == "abc d"
    listing = http.get("/v1/items", params=[("tag", "a"), ("tag", "b"), ("limit", "5")]).json()
    assert listing == {"tags": ["a", "b"], "limit": "5"}
    written = http.put("/v1/items/7", json={"x": 1})
    assert (written.status_code, written.json()) == (201, {"method": "PUT", "got": {"x": 1}, "id": "7"})
    assert http.post("/v1/items/7", json=[1]).json()["method"] == "POST"


def test_static_route_wins_and_trailing_slash_is_ignored(http):
    assert http.get("/v1/items/special").json() == {"special": True}
    assert http.get("/v1/items/special/").json() == {"special": True}


def test_form_headers_text_bodies_and_path_params(http):
    answer = http.post("/v1/form", data={"a": "1", "b": "x y"}, headers={"X-Key": "k"}).json()
    assert answer == {"form": {"a": "1", "b": "x y"}, "auth": "k"}
    text = http.get("/v1/files/a/b/c.txt")
    assert (text.text, text.headers["x-usage"]) == ("file a/b/c.txt", "3")
    assert text.headers["content-type"].startswith("text/plain")


def test_unknown_routes_abort_and_handler_errors(http):
    unknown = http.get("/v2/nothing")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "NotFound"
    wrong_method = http.delete("/v1/items/1")
    assert wrong_method.status_code == 405
    assert set(wrong_method.headers["allow"].split(", ")) == {"GET", "POST", "PUT"}
    assert http.get("/v1/missing").json()["error"]["code"] == 803
    broken = http.get("/v1/broken")
    assert broken.status_code == 500
    assert "RuntimeError" in broken.json()["error"]["message"]
    assert http.get("/v1/items/1").status_code == 200  # still serving


def test_declaration_errors():
    with pytest.raises(ValueError, match="unsupported method"):
        route("TRACE", "/x")
    with pytest.raises(ValueError, match="must start with"):
        route("GET", "x")
    emulator = ItemsEmulator()
    with pytest.raises(ValueError, match="declared twice"):
        emulator.add_route("GET", "/v1/items", lambda request: {})
    with pytest.raises(RuntimeError, match="not started"):
        _ = emulator.url


# --- faults --------------------------------------------------------------------------------


def test_faults_are_fifo_per_route_then_the_handler_answers(emu, http):
    emu.inject(
        "GET /v1/items/{item_id}", status=429, json={"error": "slow down"}, headers={"Retry-After": "7"}
    )
    emu.inject("GET /v1/items/{item_id}", status=503, body="unavailable", times=2)
    first = http.get("/v1/items/1")
    assert (first.status_code, first.json(), first.headers["retry-after"]) == (
        429,
        {"error": "slow down"},
        "7",
    )
    assert [http.get("/v1/items/1").status_code for _ in range(3)] == [503, 503, 200]
    assert http.get("/v1/items").status_code == 200  # other routes never saw a fault


def test_forever_faults_and_clear(emu, http):
    emu.inject("GET /v1/items", status=500, json={"error": "down"}, times=None)
    assert {http.get("/v1/items").status_code for _ in range(5)} == {500}
    emu.clear_faults()
    assert http.get("/v1/items").status_code == 200


def test_header_only_fault_decorates_the_real_answer(emu, http):
    emu.inject("GET /v1/items/{item_id}", headers={"X-App-Usage": '{"call_count": 99}'})
    answer = http.get("/v1/items/9")
    assert answer.json()["id"] == "9"
    assert answer.headers["x-app-usage"] == '{"call_count": 99}'
    assert "x-app-usage" not in http.get("/v1/items/9").headers


def test_inject_checks_the_route(emu):
    with pytest.raises(ValueError, match="no route"):
        emu.inject("GET /v1/itemz", status=500)
    with pytest.raises(ValueError, match="times"):
        emu.inject("GET /v1/items", status=500, times=0)
    emu.inject("get   /v1/items", status=500)  # method case and spacing are forgiven


def test_delay_slows_the_answer_and_trips_client_timeouts(emu, http):
    emu.inject("GET /v1/items", delay=0.3)
    started = time.monotonic()
    assert http.get("/v1/items").status_code == 200
    assert time.monotonic() - started >= 0.3
    emu.inject("GET /v1/items", delay=1.0)
    with pytest.raises(httpx.ReadTimeout):
        http.get("/v1/items", timeout=0.2)


def test_drop_connection_surfaces_as_an_httpx_transport_error(emu, http):
    emu.inject("POST /v1/form", drop_connection=True)
    with pytest.raises(httpx.TransportError):
        http.post("/v1/form", data={"a": "1"})
    assert http.post("/v1/form", data={"a": "1"}).status_code == 200
    assert emu.calls["POST /v1/form"] == 2


# --- counters and reset --------------------------------------------------------------------


def test_calls_and_request_log(emu, http):
    http.get("/v1/items/1")
    http.get("/v1/items/2?x=1")
    http.get("/nowhere")
    assert emu.calls["GET /v1/items/{item_id}"] == 2
    assert emu.calls["GET /nowhere"] == 1
    logged = emu.requests
    assert [r.route for r in logged] == ["/v1/items/{item_id}"] * 2 + [None]
    assert logged[1].query == {"x": "1"}
    assert logged[1].key == "GET /v1/items/{item_id}"


def test_counters_are_thread_safe(emu):
    def hammer() -> None:
        with httpx.Client(base_url=emu.url, timeout=5) as client:
            for _ in range(25):
                client.get("/v1/items/1")

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert emu.calls["GET /v1/items/{item_id}"] == 200
    assert len(emu.requests) == 200


def test_seeded_data_is_deterministic_and_reset_restores_it(emu, http):
    first = [http.get(f"/v1/items/{n}").json()["value"] for n in range(3)]
    with ItemsEmulator(seed=42) as twin, httpx.Client(base_url=twin.url) as other:
        assert [other.get(f"/v1/items/{n}").json()["value"] for n in range(3)] == first
    emu.inject("GET /v1/items", status=500, times=None)
    emu.reset()
    assert emu.calls == {}
    assert emu.requests == ()
    assert http.get("/v1/items").status_code == 200
    assert [http.get(f"/v1/items/{n}").json()["value"] for n in range(3)] == first


def test_start_and_stop_are_idempotent_and_close_kept_alive_connections():
    emulator = ItemsEmulator()
    assert emulator.start() is emulator.start()
    url = emulator.url
    with httpx.Client(base_url=url, timeout=2) as kept_alive:
        assert kept_alive.get("/v1/items").status_code == 200
        emulator.stop()
        emulator.stop()
        with pytest.raises(httpx.TransportError):
            kept_alive.get("/v1/items")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v1/items", timeout=1)


# --- the OAuth server component -------------------------------------------------------------


@pytest.fixture
def oauth_emu():
    with OAuthEmulator(redirect_uris=(REDIRECT,), granted_scopes=("ads_read",)) as emulator:
        yield emulator


def _authorize(emulator: OAuthEmulator, **overrides: str) -> httpx.Response:
    params = {
        "response_type": "code",
        "client_id": emulator.oauth.client_id,
        "redirect_uri": REDIRECT,
        "state": "st-1",
        "scope": "ads_read",
    }
    params.update(overrides)
    return httpx.get(emulator.authorize_url, params=params, follow_redirects=False)


def _code(answer: httpx.Response) -> str:
    assert answer.status_code == 302, answer.text
    return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]


def _token(emulator: OAuthEmulator, auth: str = "post", **form: str) -> httpx.Response:
    oauth = emulator.oauth
    headers = {}
    if auth == "post":
        form = {"client_id": oauth.client_id, "client_secret": oauth.client_secret, **form}
    elif auth == "basic":
        pair = f"{oauth.client_id}:{oauth.client_secret}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    return httpx.post(emulator.token_url, data=form, headers=headers)


def test_authorize_refuses_unknown_clients_and_unregistered_redirects_without_redirecting(oauth_emu):
    for overrides in (
        {"client_id": "intruder"},
        {"redirect_uri": REDIRECT + "/"},
        {"redirect_uri": "https://evil.example/cb"},
    ):
        answer = _authorize(oauth_emu, **overrides)
        assert answer.status_code == 400
        assert "location" not in answer.headers


def test_authorize_redirects_errors_with_state(oauth_emu):
    plain = _authorize(oauth_emu, code_challenge="x" * 43)  # method defaults to plain
    query = parse_qs(urlsplit(plain.headers["location"]).query)
    assert query["error"] == ["invalid_request"]
    assert query["state"] == ["st-1"]
    oauth_emu.oauth.approve = False
    denied = parse_qs(urlsplit(_authorize(oauth_emu).headers["location"]).query)
    assert denied["error"] == ["access_denied"]


def test_code_grant_pkce_single_use_and_basic_auth(oauth_emu):
    verifier = "v" * 50
    code = _code(_authorize(oauth_emu, code_challenge=s256(verifier), code_challenge_method="S256"))
    tokens = _token(
        oauth_emu,
        "basic",
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT,
        code_verifier=verifier,
    )
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["scope"] == "ads_read"
    assert tokens.headers["cache-control"] == "no-store"
    assert oauth_emu.oauth.check_access_token(body["access_token"]).scopes == {"ads_read"}
    again = _token(
        oauth_emu, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, code_verifier=verifier
    )
    assert again.json()["error"] == "invalid_grant"
    # a replayed code revokes what it issued (RFC 6749 §4.1.2)
    assert oauth_emu.oauth.check_access_token(body["access_token"]) is None
    assert body["access_token"] in oauth_emu.oauth.issued_secrets
    assert verifier in oauth_emu.oauth.sensitive_values()


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"code_verifier": "w" * 50}, "invalid_grant"),  # wrong verifier
        ({}, "invalid_grant"),  # verifier missing
        ({"redirect_uri": REDIRECT + "?x=1"}, "invalid_grant"),  # redirect differs
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": ""}, "invalid_request"),
    ],
)
def test_code_grant_refusals(oauth_emu, form, error):
    code = _code(_authorize(oauth_emu, code_challenge=s256("v" * 50), code_challenge_method="S256"))
    request = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    request.update(form)
    answer = _token(oauth_emu, **{k: v for k, v in request.items() if v or k == "grant_type"})
    assert (answer.status_code, answer.json()["error"]) == (400, error)


def test_pkce_downgrade_and_expired_codes_are_refused():
    now = [1_000_000.0]
    with OAuthEmulator(redirect_uris=(REDIRECT,), clock=lambda: now[0]) as emulator:
        code = _code(_authorize(emulator))  # no challenge
        downgrade = _token(
            emulator,
            grant_type="authorization_code",
            code=code,
            redirect_uri=REDIRECT,
            code_verifier="v" * 50,
        )
        assert downgrade.json()["error"] == "invalid_grant"
        code = _code(_authorize(emulator))
        now[0] += 61
        expired = _token(emulator, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
        assert expired.json()["error_description"] == "authorization code expired"


def test_client_authentication(oauth_emu):
    assert _token(oauth_emu, "none", grant_type="refresh_token").status_code == 401
    wrong = httpx.post(
        oauth_emu.token_url,
        data={
            "client_id": oauth_emu.oauth.client_id,
            "client_secret": "nope",
            "grant_type": "refresh_token",
            "refresh_token": "x",
        },
    )
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    oauth_emu.oauth.auth_methods = frozenset({"client_secret_basic"})
    assert _token(oauth_emu, "post", grant_type="refresh_token").json()["error"] == ("invalid_client")


def test_refresh_rotation_reuse_detection_and_revocation(oauth_emu):
    oauth_emu.oauth.rotate_refresh_tokens = True
    first = oauth_emu.oauth.mint(["ads_read"])
    rotated = _token(oauth_emu, grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
    assert rotated["refresh_token"] != first["refresh_token"]
    reuse = _token(oauth_emu, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reuse.json()["error"] == "invalid_grant"
    # reuse of a rotated-out token revokes the whole grant
    after = _token(oauth_emu, grant_type="refresh_token", refresh_token=rotated["refresh_token"])
    assert after.json()["error"] == "invalid_grant"

    fresh = oauth_emu.oauth.mint(["ads_read"])
    revoke = httpx.post(
        oauth_emu.revoke_url,
        data={
            "token": fresh["refresh_token"],
            "client_id": oauth_emu.oauth.client_id,
            "client_secret": oauth_emu.oauth.client_secret,
        },
    )
    assert revoke.status_code == 200
    assert oauth_emu.oauth.check_access_token(fresh["access_token"]) is None
    refused = _token(oauth_emu, grant_type="refresh_token", refresh_token=fresh["refresh_token"])
    assert refused.json()["error"] == "invalid_grant"


def test_oauth_server_helpers_and_reset(oauth_emu):
    minted = oauth_emu.oauth.mint()
    assert oauth_emu.oauth.check_access_token(minted["access_token"]) is not None
    oauth_emu.oauth.expire_access_tokens()
    assert oauth_emu.oauth.check_access_token(minted["access_token"]) is None
    refreshed = _token(oauth_emu, grant_type="refresh_token", refresh_token=minted["refresh_token"]).json()
    assert "refresh_token" not in refreshed  # not rotating: the old one stays valid
    oauth_emu.oauth.revoke_all()
    assert oauth_emu.oauth.check_access_token(refreshed["access_token"]) is None
    assert oauth_emu.components == (oauth_emu.oauth,)
    oauth_emu.reset()
    assert oauth_emu.oauth.issued_secrets == frozenset()
    assert oauth_emu.routes == (
        oauth_emu.oauth.authorize_route,
        oauth_emu.oauth.token_route,
        oauth_emu.oauth.revoke_route,
    )
