"""Cross-cutting behaviour: authorization on every route, validation, contexts, CLI, settings."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from territoire.accounts import authorize
from territoire.app import create_app
from territoire.cli import app as cli_app
from territoire.config import Settings
from territoire.context.http import LINK_REL_CONTEXT
from territoire.context.store import Store, open_store

BASE = "/ngsi-ld/v1"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"


def test_every_route_goes_through_authorization(store: Store, settings: Settings) -> None:
    """Deny in the one authorization dependency: every documented route must then refuse."""
    from territoire.context.errors import NgsiLdError

    class Forbidden(NgsiLdError):
        error_type = "Forbidden"
        status = 403
        title = "Forbidden"

    def deny() -> None:
        raise Forbidden("no")

    app = create_app(settings, store=store)
    app.dependency_overrides[authorize] = deny
    operations = [
        (method, path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert len(operations) > 20
    with TestClient(app) as client:
        for method, path in operations:
            url = re.sub(r"\{[^}]+\}", "urn:ngsi-ld:X:1", path)
            response = client.request(method.upper(), url, json={})
            assert response.status_code == 403, f"{method.upper()} {path} bypasses authorization"


def test_smart_data_models_validation_per_tenant(client: TestClient, store: Store) -> None:
    resolver = client.app.state.resolver  # type: ignore[attr-defined]
    store.set_validation("angers", resolver.resolve(None).expand("WasteContainer"), "WasteContainer")
    bad = {
        "id": "urn:ngsi-ld:WasteContainer:v1",
        "type": "WasteContainer",
        "fillingLevel": {"type": "Property", "value": 1.7},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-0.55, 47.47]}},
    }
    response = client.post(f"{BASE}/entities", json=bad, headers={"NGSILD-Tenant": "angers"})
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == ERR + "BadRequestData" and "fillingLevel" in body["detail"]
    assert (
        client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:v1", headers={"NGSILD-Tenant": "angers"}).status_code
        == 404
    )
    # Other tenants are not constrained.
    assert client.post(f"{BASE}/entities", json=bad).status_code == 201
    good = dict(bad, fillingLevel={"type": "Property", "value": 0.7})
    assert client.post(f"{BASE}/entities", json=good, headers={"NGSILD-Tenant": "angers"}).status_code == 201
    patch = client.patch(
        f"{BASE}/entities/urn:ngsi-ld:WasteContainer:v1/attrs",
        json={"fillingLevel": {"type": "Property", "value": 2}},
        headers={"NGSILD-Tenant": "angers"},
    )
    assert patch.status_code == 400


def test_unreachable_context_is_503_promptly(client: TestClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    link = f'<http://127.0.0.1:{port}/context.jsonld>; rel="{LINK_REL_CONTEXT}"; type="application/ld+json"'
    start = time.monotonic()
    response = client.get(f"{BASE}/entities", params={"type": "T"}, headers={"Link": link})
    assert response.status_code == 503
    assert response.json()["type"] == ERR + "LdContextNotAvailable"
    assert time.monotonic() - start < 5


def test_hosted_context_used_by_a_request(client: TestClient) -> None:
    created = client.post(
        f"{BASE}/jsonldContexts", json={"@context": {"niveau": "https://example.org/dechets#fillingLevel"}}
    )
    assert created.status_code == 201
    url = "http://testserver" + created.headers["location"]
    link = f'<{url}>; rel="{LINK_REL_CONTEXT}"; type="application/ld+json"'
    entity = {"id": "urn:ngsi-ld:WasteContainer:h1", "type": "WasteContainer", "niveau": 0.4}
    assert client.post(f"{BASE}/entities", json=entity, headers={"Link": link}).status_code == 201
    plain = client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:h1").json()
    assert plain["https://example.org/dechets#fillingLevel"]["value"] == 0.4
    assert (
        client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:h1", headers={"Link": link}).json()["niveau"]["value"]
        == 0.4
    )


def test_unknown_route_and_method_are_problem_details(client: TestClient) -> None:
    response = client.get(f"{BASE}/nothing-here")
    assert response.status_code == 404 and response.json()["type"] == ERR + "ResourceNotFound"
    response = client.put(f"{BASE}/types")
    assert response.status_code == 405 and "detail" in response.json()


def test_health(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["schema"] >= 1


def test_cli_init_creates_and_reports_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    first = runner.invoke(cli_app, ["init", "--database-url", url])
    assert first.exit_code == 0, first.output
    second = runner.invoke(cli_app, ["init", "--database-url", url])
    assert second.exit_code == 0 and "up to date" in second.output
    required = runner.invoke(
        cli_app, ["validation", "require", "WasteContainer", "--tenant", "t1", "--database-url", url]
    )
    assert required.exit_code == 0, required.output
    store = open_store(url)
    try:
        assert list(store.required_validations("t1").values()) == ["WasteContainer"]
    finally:
        store.close()
    unknown = runner.invoke(cli_app, ["validation", "require", "Spaceship", "--database-url", url])
    assert unknown.exit_code == 2


def test_settings_default_to_loopback_and_sqlite() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.host == "127.0.0.1"
    assert settings.database_url == "sqlite:///territoire.db"
