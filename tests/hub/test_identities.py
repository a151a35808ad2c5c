"""Identities, passwords, API keys and the audit log, through the real API and database."""

from __future__ import annotations

import asyncio
import os
import sys

import httpx
import pytest

from tests.support.api import Api
from warelink.hub.access import Role

PASSWORD = "correct horse battery"


@pytest.fixture
async def admin(api: Api) -> httpx.AsyncClient:
    async with api.hub.pool.connection() as conn:
        await conn.execute("INSERT INTO sites (id) VALUES ('north'), ('south')")
    return await api.client("alice")


async def add_user(
    admin: httpx.AsyncClient, name: str, *roles: Role, sites: list[str] | None = None
) -> None:
    role_names = [r.value for r in roles] or ["clerk"]
    body = {"id": name, "roles": role_names, "sites": sites, "password": PASSWORD}
    response = await admin.post("/api/v1/identities/users", json=body)
    assert response.status_code == 201, response.text


async def login(api: Api, name: str, password: str = PASSWORD) -> httpx.Response:
    return await api.anonymous().post(
        "/api/v1/auth/token", data={"username": name, "password": password}
    )


async def as_bearer(api: Api, name: str, password: str = PASSWORD) -> httpx.AsyncClient:
    response = await login(api, name, password)
    assert response.status_code == 200, response.text
    return api.anonymous(headers={"Authorization": f"Bearer {response.json()['access_token']}"})


async def audit_rows(api: Api) -> list[tuple[str, str, str, str]]:
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute("SELECT actor, action, subject, detail::text FROM audit_log")
        return await cur.fetchall()


async def test_password_flow_gives_a_bearer_token_and_me_tells_who(
    api: Api, admin: httpx.AsyncClient
) -> None:
    await add_user(admin, "bob", Role.CLERK, sites=["north"])
    response = await login(api, "bob")
    assert response.status_code == 200
    token = response.json()
    assert token["token_type"] == "bearer" and 8 * 3600 - 60 < token["expires_in"] <= 8 * 3600
    assert token["access_token"].startswith("wlt_")
    assert response.headers["cache-control"] == "no-store"

    bob = api.anonymous(headers={"Authorization": f"Bearer {token['access_token']}"})
    me = (await bob.get("/api/v1/auth/me")).json()
    assert me["id"] == "bob" and me["kind"] == "user"
    assert me["roles"] == ["clerk"] and me["sites"] == ["north"]
    assert "pick" in me["permissions"] and "identities.admin" not in me["permissions"]
    assert (await bob.get("/api/v1/identities")).status_code == 403

    for name, password in (("bob", "wrong password!!"), ("nobody", PASSWORD)):
        refused = await login(api, name, password)
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "wrong user name or password" in refused.json()["detail"]
    assert (await api.anonymous().get("/api/v1/auth/me")).status_code == 401
    rows = await audit_rows(api)
    assert [r[:2] for r in rows if r[1] == "auth.login"] == [("bob", "auth.login")]
    assert all(PASSWORD not in r[3] and token["access_token"] not in r[3] for r in rows)


async def test_password_policy_and_identity_rules(api: Api, admin: httpx.AsyncClient) -> None:
    def user(name: str, password: str, **extra: object) -> dict[str, object]:
        return {"id": name, "roles": ["clerk"], "password": password, **extra}

    cases = [
        (user("carol", "short"), 422, "at least 12"),
        (user("carol", "carol-is-great-123"), 422, "must not contain the user name"),
        (user("carol", PASSWORD, sites=["west"]), 422, "unknown sites: west"),
        (user("carol", PASSWORD, roles=["gateway"], sites=["north"]), 422, "gateway role"),
        (user("Carol!", PASSWORD), 422, ""),
        (user("carol", PASSWORD, roles=[]), 422, ""),
    ]
    for body, status, message in cases:
        response = await admin.post("/api/v1/identities/users", json=body)
        assert response.status_code == status, (body, response.text)
        assert message in str(response.json()["detail"])

    created = await admin.post("/api/v1/identities/users", json=user("carol", PASSWORD))
    assert created.status_code == 201
    assert created.json()["has_password"] and created.json()["sites"] is None
    assert "password_hash" not in created.text and PASSWORD not in created.text
    again = await admin.post("/api/v1/identities/users", json=user("carol", PASSWORD))
    assert again.status_code == 409 and "exists already" in again.json()["detail"]

    two_sites = {"id": "gw-x", "roles": ["gateway"], "sites": ["north", "south"]}
    refused = await admin.post("/api/v1/identities/services", json=two_sites)
    assert refused.status_code == 422 and "exactly one site" in refused.json()["detail"]
    gateway = await admin.post(
        "/api/v1/identities/services", json={**two_sites, "sites": ["north"]}
    )
    assert gateway.status_code == 201 and not gateway.json()["has_password"]
    assert (await login(api, "gw-x", PASSWORD)).status_code == 401  # services never log in


async def test_api_keys_are_shown_once_listed_without_secret_and_revoked_at_once(
    api: Api, admin: httpx.AsyncClient
) -> None:
    body = {"id": "gw-north", "roles": ["gateway"], "sites": ["north"]}
    assert (await admin.post("/api/v1/identities/services", json=body)).status_code == 201
    headers = {"Idempotency-Key": "key-1"}
    created = await admin.post(
        "/api/v1/identities/gw-north/keys", json={"name": "dock 1"}, headers=headers
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith("wlk_") and created.json()["revoked_at"] is None
    replay = await admin.post(
        "/api/v1/identities/gw-north/keys", json={"name": "dock 1"}, headers=headers
    )
    assert replay.status_code == 201 and replay.json()["id"] == created.json()["id"]
    assert replay.json()["key"] is None  # the idempotency store holds no secret

    gateway = api.anonymous(headers={"X-API-Key": key})
    assert (await gateway.get("/api/v1/auth/me")).json()["roles"] == ["gateway"]
    listed = await admin.get("/api/v1/identities/gw-north/keys")
    assert [k["name"] for k in listed.json()] == ["dock 1"]
    secret = key.split("_", 2)[2]  # wlk_<id>_<secret>; the secret may hold "_" itself
    assert secret not in listed.text
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute("SELECT response::text FROM api_requests")
        assert all(secret not in row[0] for row in await cur.fetchall())
    assert all(secret not in r[3] for r in await audit_rows(api))

    key_id = created.json()["id"]
    revoked = await admin.delete(f"/api/v1/identities/gw-north/keys/{key_id}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    refused = await gateway.get("/api/v1/auth/me")  # verified a moment ago: cached, yet refused
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    again = await admin.delete(f"/api/v1/identities/gw-north/keys/{key_id}")
    assert again.status_code == 409 and "revoked at" in again.json()["detail"]
    missing = await admin.delete("/api/v1/identities/gw-north/keys/nope")
    assert missing.status_code == 404
    assert (await admin.get("/api/v1/identities/nobody/keys")).status_code == 404


async def test_changes_to_roles_and_active_take_effect_at_once(
    api: Api, admin: httpx.AsyncClient
) -> None:
    await add_user(admin, "dan", Role.CLERK)
    dan = await as_bearer(api, "dan")
    assert (await dan.get("/api/v1/gateways")).status_code == 403
    changed = await admin.patch("/api/v1/identities/dan", json={"roles": ["analyst"]})
    assert changed.status_code == 200 and changed.json()["roles"] == ["analyst"]
    assert (await dan.get("/api/v1/gateways")).status_code == 200

    scoped = await admin.patch("/api/v1/identities/dan", json={"sites": ["south"]})
    assert scoped.json()["sites"] == ["south"] and scoped.json()["roles"] == ["analyst"]
    assert (await dan.get("/api/v1/sites/north/stock")).status_code == 403
    everywhere = await admin.patch("/api/v1/identities/dan", json={"sites": None})
    assert everywhere.json()["sites"] is None

    off = await admin.patch("/api/v1/identities/dan", json={"active": False})
    assert off.status_code == 200 and off.json()["active"] is False
    refused = await dan.get("/api/v1/auth/me")
    assert refused.status_code == 401 and "disabled" in refused.json()["detail"]
    assert (await login(api, "dan")).status_code == 401
    listed = await admin.get("/api/v1/identities", params={"active": "false"})
    assert [i["id"] for i in listed.json()] == ["dan"]

    myself = await admin.patch("/api/v1/identities/alice", json={"active": False})
    assert myself.status_code == 409
    demote = await admin.patch("/api/v1/identities/alice", json={"roles": ["supervisor"]})
    assert demote.status_code == 409
    assert (await admin.patch("/api/v1/identities/nobody", json={})).status_code == 404
    actions = [r[1] for r in await audit_rows(api) if r[2] == "dan"]
    assert actions == ["identity.create"] + ["identity.update"] * 4


async def test_passwords_changed_by_the_user_or_reset_by_an_admin(
    api: Api, admin: httpx.AsyncClient
) -> None:
    await add_user(admin, "erin", Role.SUPERVISOR)
    first, second = await as_bearer(api, "erin"), await as_bearer(api, "erin")
    new = "a much better passphrase"
    wrong = await first.post(
        "/api/v1/auth/password",
        json={"current_password": "not it at all", "new_password": new},
    )
    assert wrong.status_code == 422 and "current password is wrong" in wrong.json()["detail"]
    changed = await first.post(
        "/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": new}
    )
    assert changed.status_code == 200, changed.text
    assert (await first.get("/api/v1/auth/me")).status_code == 200  # this session stays
    assert (await second.get("/api/v1/auth/me")).status_code == 401  # other tokens revoked
    assert (await login(api, "erin")).status_code == 401
    assert (await login(api, "erin", new)).status_code == 200

    service = await api.client("svc", Role.CLERK)
    own = await service.post(
        "/api/v1/auth/password", json={"current_password": "x", "new_password": new}
    )
    assert own.status_code == 422 and "only users" in own.json()["detail"]

    reset = await admin.put("/api/v1/identities/erin/password", json={"password": PASSWORD})
    assert reset.status_code == 200
    assert (await first.get("/api/v1/auth/me")).status_code == 401
    assert (await login(api, "erin")).status_code == 200
    short = await admin.put("/api/v1/identities/erin/password", json={"password": "short"})
    assert short.status_code == 422
    actions = [r[1] for r in await audit_rows(api) if r[2] == "erin"]
    assert actions == ["identity.create", "identity.password.own", "identity.password.reset"]
    assert all(PASSWORD not in r[3] and new not in r[3] for r in await audit_rows(api))


async def test_a_site_scoped_admin_manages_only_its_sites(
    api: Api, admin: httpx.AsyncClient
) -> None:
    await add_user(admin, "south-clerk", Role.CLERK, sites=["south"])
    await add_user(admin, "roaming", Role.CLERK)
    north = await api.client("north-admin", Role.ADMIN, sites=["north"])
    ok = {"id": "north-clerk", "roles": ["clerk"], "sites": ["north"], "password": PASSWORD}
    assert (await north.post("/api/v1/identities/users", json=ok)).status_code == 201
    for sites in (None, ["south"], ["north", "south"]):
        body = {**ok, "id": "other", "sites": sites}
        refused = await north.post("/api/v1/identities/users", json=body)
        assert refused.status_code == 403, (sites, refused.text)
    listed = (await north.get("/api/v1/identities")).json()
    assert [i["id"] for i in listed] == ["north-admin", "north-clerk"]
    for other in ("south-clerk", "roaming"):
        assert (await north.get(f"/api/v1/identities/{other}")).status_code == 404
        assert (await north.post(f"/api/v1/identities/{other}/keys", json={})).status_code == 404
    widen = await north.patch("/api/v1/identities/north-clerk", json={"sites": None})
    assert widen.status_code == 403


async def test_audit_log_filters_pages_and_scopes_to_sites(
    api: Api, admin: httpx.AsyncClient
) -> None:
    await add_user(admin, "n1", Role.CLERK, sites=["north"])
    await add_user(admin, "s1", Role.CLERK, sites=["south"])
    await add_user(admin, "all1", Role.CLERK)
    await admin.patch("/api/v1/identities/n1", json={"display_name": "North One"})

    everything = (await admin.get("/api/v1/audit")).json()
    assert [e["subject"] for e in everything["items"]] == ["n1", "all1", "s1", "n1"]
    assert everything["next_before"] is None
    first = (await admin.get("/api/v1/audit", params={"limit": 3})).json()
    assert len(first["items"]) == 3 and first["next_before"] == first["items"][-1]["id"]
    rest = (await admin.get("/api/v1/audit", params={"before": first["next_before"]})).json()
    assert [e["subject"] for e in rest["items"]] == ["n1"]
    updates = await admin.get("/api/v1/audit", params={"action": "identity.update"})
    assert [e["detail"] for e in updates.json()["items"]] == [{"display_name": "North One"}]
    by_actor = await admin.get("/api/v1/audit", params={"actor": "alice", "subject": "s1"})
    assert [(e["action"], e["site"]) for e in by_actor.json()["items"]] == [
        ("identity.create", "south")
    ]
    later = await admin.get("/api/v1/audit", params={"since": "2999-01-01T00:00:00Z"})
    assert later.json()["items"] == []

    support = await api.client("it-north", Role.IT_SUPPORT, sites=["north"])
    seen = (await support.get("/api/v1/audit")).json()["items"]
    assert {e["site"] for e in seen} == {"north"} and {e["subject"] for e in seen} == {"n1"}
    assert (await support.get("/api/v1/audit", params={"site": "south"})).status_code == 403
    clerk = await api.client("c", Role.CLERK)
    assert (await clerk.get("/api/v1/audit")).status_code == 403
    assert (await api.anonymous().get("/api/v1/audit")).status_code == 401
    assert (await admin.get("/api/v1/audit", params={"limit": 0})).status_code == 422


async def test_the_first_admin_from_the_command_line(api: Api, db_url: str) -> None:
    async def warelink(*args: str, stdin: bytes) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "warelink.edge.cli", "hub", "user", *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "WARELINK_DB_URL": db_url},
        )  # fmt: skip
        out, err = await process.communicate(stdin)
        assert process.returncode is not None
        return process.returncode, (out + err).decode()

    code, text = await warelink("add", "root", "--role", "admin", "--password-stdin",
                                stdin=f"{PASSWORD}\n".encode())  # fmt: skip
    assert code == 0, text
    assert "user root added: admin at every site" in text
    root = await as_bearer(api, "root")
    me = (await root.get("/api/v1/auth/me")).json()
    assert me["roles"] == ["admin"] and me["sites"] is None
    code, text = await warelink("add", "root", "--role", "admin", "--password-stdin",
                                stdin=f"{PASSWORD}\n".encode())  # fmt: skip
    assert code == 1 and "exists already" in text
    code, text = await warelink("add", "x", "--role", "boss", "--password-stdin", stdin=b"")
    assert code == 2 and "unknown roles" in text
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT actor, action, subject FROM audit_log WHERE action <> 'auth.login'"
        )
        assert await cur.fetchall() == [("cli", "identity.create", "root")]
