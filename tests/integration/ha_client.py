"""Drives a real Home Assistant through its REST and websocket APIs; run by Home Assistant's own
Python (its venv has aiohttp), never by edgekd's, so that edgekd's venv needs nothing new.

    python ha_client.py onboard URL                  -> {"token": LONG_LIVED_TOKEN}
    python ha_client.py mqtt URL TOKEN HOST PORT     -> the MQTT config entry created
    python ha_client.py snapshot URL TOKEN NODE      -> the device with identifier NODE, its
                                                        entities (registry) and their states

Each command prints one JSON document on stdout and exits non-zero, with the reason on stderr,
when Home Assistant refuses a step. tests/integration/test_homeassistant.py runs them.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp

USER = {"name": "edgekd test", "username": "edgekd", "password": "edgekd-test-password", "language": "en"}


class HomeAssistantError(Exception):
    pass


async def _json(response: aiohttp.ClientResponse, what: str) -> Any:
    text = await response.text()
    if response.status >= 400:
        raise HomeAssistantError(f"{what}: HTTP {response.status}: {text}")
    return json.loads(text) if text else None


class Websocket:
    """Home Assistant's websocket API: authenticate, then numbered commands."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session, self.url, self.token = session, url.replace("http", "ws", 1) + "/api/websocket", token
        self._id = 0

    async def __aenter__(self) -> Websocket:
        self.ws = await self.session.ws_connect(self.url)
        hello = await self.ws.receive_json()
        if hello.get("type") != "auth_required":
            raise HomeAssistantError(f"websocket: expected auth_required, got {hello}")
        await self.ws.send_json({"type": "auth", "access_token": self.token})
        answer = await self.ws.receive_json()
        if answer.get("type") != "auth_ok":
            raise HomeAssistantError(f"websocket: authentication refused: {answer}")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.ws.close()

    async def call(self, type_: str, **fields: Any) -> Any:
        self._id += 1
        await self.ws.send_json({"id": self._id, "type": type_, **fields})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self._id and msg.get("type") == "result":
                break
        if not msg.get("success"):
            raise HomeAssistantError(f"websocket {type_}: {msg.get('error')}")
        return msg.get("result")


async def onboard(url: str) -> dict[str, str]:
    """The onboarding a person does in the browser: owner user, location, analytics, integrations;
    then a long-lived token for the rest."""
    client_id = url + "/"
    async with aiohttp.ClientSession() as s:
        created = await _json(await s.post(f"{url}/api/onboarding/users", json={"client_id": client_id, **USER}),
                              "onboarding: create the owner")
        tokens = await _json(
            await s.post(f"{url}/auth/token", data={
                "grant_type": "authorization_code", "code": created["auth_code"], "client_id": client_id}),
            "auth: exchange the authorization code",
        )
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        await _json(await s.post(f"{url}/api/onboarding/core_config", headers=auth), "onboarding: core config")
        await _json(await s.post(f"{url}/api/onboarding/analytics", headers=auth), "onboarding: analytics")
        await _json(
            await s.post(f"{url}/api/onboarding/integration", headers=auth,
                         json={"client_id": client_id, "redirect_uri": client_id}),
            "onboarding: integrations",
        )
        steps = await _json(await s.get(f"{url}/api/onboarding"), "onboarding: steps")
        if not all(step["done"] for step in steps):
            raise HomeAssistantError(f"onboarding: steps left undone: {steps}")
        async with Websocket(s, url, tokens["access_token"]) as ws:
            token = await ws.call("auth/long_lived_access_token", client_name="edgekd test", lifespan=1)
    return {"token": token}


async def setup_mqtt(url: str, token: str, host: str, port: int) -> dict[str, Any]:
    """Add the MQTT integration as the UI does: its config flow, broker and port."""
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=auth) as s:
        flow = await _json(await s.post(f"{url}/api/config/config_entries/flow",
                                        json={"handler": "mqtt", "show_advanced_options": False}),
                           "MQTT config flow: start")
        while flow.get("type") == "form":
            fields = {"broker": host, "port": port}
            schema_keys = {f["name"] for f in flow.get("data_schema", [])}
            if not {"broker", "port"} <= schema_keys:
                raise HomeAssistantError(f"MQTT config flow: unexpected form {flow}")
            flow = await _json(await s.post(f"{url}/api/config/config_entries/flow/{flow['flow_id']}", json=fields),
                               f"MQTT config flow: step {flow.get('step_id')}")
            if flow.get("errors"):
                raise HomeAssistantError(f"MQTT config flow: {flow['errors']}")
        if flow.get("type") != "create_entry":
            raise HomeAssistantError(f"MQTT config flow did not create an entry: {flow}")
        return flow["result"]


async def snapshot(url: str, token: str, node: str) -> dict[str, Any]:
    """The device whose MQTT identifier is NODE (null if none), its entities from the registry
    (with their original icon, name and device class) and the states of those entities."""
    async with aiohttp.ClientSession() as s, Websocket(s, url, token) as ws:
        devices = await ws.call("config/device_registry/list")
        device = next((d for d in devices if ["mqtt", node] in d["identifiers"]), None)
        entities: list[dict[str, Any]] = []
        if device is not None:
            listed = [e["entity_id"] for e in await ws.call("config/entity_registry/list") if e["device_id"] == device["id"]]
            if listed:
                entries = await ws.call("config/entity_registry/get_entries", entity_ids=listed)
                entities = [e for e in entries.values() if e]
        states = {s["entity_id"]: s for s in await ws.call("get_states") if s["entity_id"].startswith("sensor.")}
    return {"device": device, "entities": entities, "states": states}


def main(argv: list[str]) -> int:
    commands = {
        "onboard": (onboard, [str]),
        "mqtt": (setup_mqtt, [str, str, str, int]),
        "snapshot": (snapshot, [str, str, str]),
    }
    if not argv or argv[0] not in commands or len(argv) - 1 != len(commands[argv[0]][1]):
        print(__doc__, file=sys.stderr)
        return 2
    fn, types = commands[argv[0]]
    try:
        out = asyncio.run(fn(*(t(a) for t, a in zip(types, argv[1:]))))
    except (HomeAssistantError, aiohttp.ClientError) as e:
        print(f"ha_client {argv[0]}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
