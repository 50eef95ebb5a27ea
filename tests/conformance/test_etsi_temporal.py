"""ETSI NGSI-LD test suite, temporal part, ported to pytest (on both backends).

Test purposes of ``TP/NGSI-LD/ContextInformation/Provision/TemporalEntity``,
``.../Provision/TemporalEntityAttributes`` and ``.../Consumption/TemporalEntity`` (test names
keep the suite's numbers). Requests are the ones of the suite's keywords
(``resources/ApiUtils/Temporal*.resource``: same paths, trailing slashes included, headers and
bodies); checks reproduce ``AssertionUtils.resource``: a comparison that ignores list order and
``instanceId``, compares observedAt as instants and only checks that system times are dates.

Each test runs on a fresh application (the root ``store`` fixture) with the @contexts of
``data/temporal/contexts``. The suite's pagination tests (6.3.10) assume a server maximum below
20 instances per attribute; the broker runs them with ``temporal_max_instances = 10``. Data: ``data/temporal`` (see its
README for the origin and the BSD-3 licence of the suite).
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from territoire.app import create_app
from territoire.config import Settings
from territoire.context.store import Store

DATA = Path(__file__).parent / "data" / "temporal"
URL = "/ngsi-ld/v1"
TEMPORAL = f"{URL}/temporal/entities"
SUITE_CONTEXT = (
    "https://forge.etsi.org/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts/"
    "ngsi-ld-test-suite-compound.jsonld"
)
JSON = "application/json"
JSON_LD = "application/ld+json"
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
BAD_REQUEST_DATA = ERRORS + "BadRequestData"
INVALID_REQUEST = ERRORS + "InvalidRequest"
RESOURCE_NOT_FOUND = ERRORS + "ResourceNotFound"
VEHICLE = "urn:ngsi-ld:Vehicle:"
TIME_BEFORE = "2019-01-01T01:01:00Z"
TIME_AFTER = "2021-01-01T01:01:00Z"
#: The server maximum of instances per attribute the suite's pagination tests assume (< 20).
MAX_INSTANCES = 10


@pytest.fixture
def settings() -> Settings:
    return Settings(database_url="sqlite:///unused.db", context_fetch_timeout=2.0, context_dir=DATA / "contexts")


@pytest.fixture
def client(store: Store, settings: Settings) -> Iterator[TestClient]:
    """A fresh application per test on the root ``store`` fixture, with this folder's @contexts."""
    app = create_app(settings, store=store)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


class Suite:
    """The keywords of ``TemporalContextInformation{Provision,Consumption}.resource``."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    @staticmethod
    def load(path: str, entity_id: str | None = None) -> Any:
        sample = json.loads((DATA / path).read_text(encoding="utf-8"))
        if entity_id is not None:
            _replace_ids(sample, entity_id)
        return sample

    def create(self, filename: str, entity_id: str) -> Any:
        """``Create Temporal Representation Of Entity``."""
        body = self.load(filename, entity_id)
        return self.client.post(TEMPORAL, json=body, headers={"Content-Type": JSON_LD})

    def create_or_update(self, entity_id: str, filename: str, content_type: str = JSON_LD) -> Any:
        """``Create Or Update Temporal Representation Of Entity Selecting Content Type`` (trailing slash)."""
        body = self.load(filename, entity_id)
        return self.client.post(f"{TEMPORAL}/", json=body, headers={"Content-Type": content_type})

    def create_raw(self, filename: str, content_type: str = JSON_LD) -> Any:
        """``Create Temporal Representation Of Entity Selecting Content Type`` (the file as is)."""
        return self.client.post(
            TEMPORAL, content=(DATA / filename).read_bytes(), headers={"Content-Type": content_type}
        )

    def retrieve(self, entity_id: str, *, context: str | None = None, accept: str | None = None, **params: Any) -> Any:
        """``Retrieve Temporal Representation Of Entity``."""
        return self.client.get(f"{TEMPORAL}/{entity_id}", params=_params(params), headers=_headers(context, accept))

    def query(self, *, context: str | None = None, accept: str | None = None, **params: Any) -> Any:
        """``Query Temporal Representation Of Entities``."""
        return self.client.get(TEMPORAL, params=_params(params), headers=_headers(context, accept))

    def query_post(self, filename: str, context: str | None = None) -> Any:
        """``Query Temporal Representation Of Entities Via Post``."""
        headers = {"Content-Type": JSON, **_headers(context, None)}
        return self.client.post(f"{URL}/temporal/entityOperations/query", json=self.load(filename), headers=headers)

    def delete(self, entity_id: str) -> Any:
        """``Delete Temporal Representation Of Entity``."""
        return self.client.delete(f"{TEMPORAL}/{entity_id}")

    def append(self, entity_id: str, fragment: str, content_type: str = JSON_LD) -> Any:
        """``Append Attribute To Temporal Entity`` (the fragment file as is)."""
        return self.client.post(
            f"{TEMPORAL}/{entity_id}/attrs",
            content=(DATA / "fragments" / fragment).read_bytes(),
            headers={"Content-Type": content_type},
        )

    def delete_attribute(
        self, entity_id: str, attribute: str, dataset_id: str = "", delete_all: str = "", context: str | None = None
    ) -> Any:
        """``Delete Attribute From Temporal Entity``."""
        query = "&".join(
            part
            for part in (
                f"datasetId={dataset_id}" if dataset_id else "",
                f"deleteAll={delete_all}" if delete_all else "",
            )
            if part
        )
        headers = {"Content-Type": JSON, **_headers(context, None)}
        return self.client.delete(f"{TEMPORAL}/{entity_id}/attrs/{attribute}?{query}", headers=headers)

    def delete_instance(self, entity_id: str, attribute: str, instance_id: str, context: str | None = None) -> Any:
        """``Delete Attribute Instance From Temporal Entity``."""
        return self.client.delete(
            f"{TEMPORAL}/{entity_id}/attrs/{attribute}/{instance_id}", headers=_headers(context, None)
        )

    def modify_instance(
        self, entity_id: str, attribute: str, instance_id: str, fragment: str, context: str | None = None
    ) -> Any:
        """``Modify Attribute Instance From Temporal Entity`` (content type application/json)."""
        headers = {"Content-Type": JSON, **_headers(context, None)}
        body = self.load(f"fragments/{fragment}")
        return self.client.patch(f"{TEMPORAL}/{entity_id}/attrs/{attribute}/{instance_id}", json=body, headers=headers)

    def delete_entity_attribute(self, entity_id: str, attribute: str, context: str) -> Any:
        """``Delete Entity Attributes`` of the (non temporal) provision API."""
        return self.client.delete(
            f"{URL}/entities/{entity_id}/attrs/{attribute}?deleteAll=false", headers=_headers(context, None)
        )


def _params(params: dict[str, Any]) -> dict[str, str]:
    """Keywords only send the parameters that are not empty."""
    return {key: str(value) for key, value in params.items() if value not in (None, "")}


def _headers(context: str | None, accept: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if accept:
        headers["Accept"] = accept
    if context:
        headers["Link"] = f'<{context}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    return headers


def _replace_ids(sample: Any, entity_id: str) -> None:
    """``Update Value To JSON  $..id`` on a sample."""
    if isinstance(sample, dict):
        for key, value in sample.items():
            if key == "id":
                sample[key] = entity_id
            else:
                _replace_ids(value, entity_id)
    elif isinstance(sample, list):
        for item in sample:
            _replace_ids(item, entity_id)


def random_id(prefix: str = VEHICLE) -> str:
    """``Generate Random Vehicle Entity Id``."""
    return prefix + "".join(random.choice("0123456789") for _ in range(16))


def _instant(text: Any) -> Any:
    try:
        return datetime.fromisoformat(str(text)).isoformat()
    except ValueError:
        return text


def normalize(value: Any, ignored: frozenset[str] = frozenset({"instanceId"})) -> Any:
    """What ``compare_dictionaries_ignoring_keys`` compares: list order and ignored keys do not
    count, observedAt is an instant, createdAt/modifiedAt/deletedAt only need to be dates."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in ignored:
                continue
            if key == "observedAt":
                out[key] = _instant(item)
            elif key in ("createdAt", "modifiedAt", "deletedAt"):
                out[key] = "<date>" if _instant(item) != item else item
            else:
                out[key] = normalize(item, ignored)
        return out
    if isinstance(value, list):
        items = [normalize(item, ignored) for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def check_temporal(expectation: str, entity_id: str | None, body: Any, ignored: frozenset[str] | None = None) -> None:
    """``Check Response Body Containing EntityTemporal element`` (and the list variant)."""
    expected = Suite.load(f"expectations/{expectation}")
    if entity_id is not None and isinstance(expected, dict) and "id" in expected:
        expected["id"] = entity_id
    keys = ignored or frozenset({"instanceId"})
    assert normalize(expected, keys) == normalize(body, keys), json.dumps(body, indent=1)


def check_resource(expectation: str, entity_id: str, body: Any, extra: frozenset[str] = frozenset()) -> None:
    """``Check Created Resource Set To`` / ``Check Updated Resource Set To`` (ignoring instanceId, @context)."""
    expected = Suite.load(f"expectations/{expectation}", entity_id)
    keys = frozenset({"instanceId", "@context"}) | extra
    assert normalize(expected, keys) == normalize(body, keys), json.dumps(body, indent=1)


def check_problem(response: Any, status: int, error: str | None = None) -> None:
    assert response.status_code == status, response.text
    if error is not None:
        body = response.json()
        assert body["type"] == error and body["title"], body


@pytest.fixture
def suite(client: TestClient) -> Iterator[Suite]:
    client.app.state.temporal.settings.temporal_max_instances = MAX_INSTANCES  # type: ignore[attr-defined]
    yield Suite(client)


# --- 007: create a temporal representation (5.6.11) ----------------------------------------------


def test_007_01_01_create_temporal_entity(suite: Suite) -> None:
    entity_id = random_id()
    response = suite.create_or_update(entity_id, "vehicle-create-temporal-representation.jsonld")
    assert response.status_code == 201 and response.content == b""
    retrieved = suite.retrieve(entity_id, context=SUITE_CONTEXT)
    check_resource("vehicle-temporal-representation-create.jsonld", entity_id, retrieved.json())


@pytest.mark.parametrize(
    "filename",
    ["vehicle-temporal-representation-invalid-json.jsonld", "vehicle-temporal-representation-empty-json.jsonld"],
)
def test_007_02_create_with_invalid_or_empty_json(suite: Suite, filename: str) -> None:
    check_problem(suite.create_raw(filename), 400, INVALID_REQUEST)


@pytest.mark.parametrize(
    ("entity_id", "filename"),
    [
        ("", "vehicle-temporal-representation-without-id.jsonld"),
        ("invalidId", "vehicle-temporal-representation.jsonld"),
    ],
)
def test_007_03_create_without_or_with_invalid_id(suite: Suite, entity_id: str, filename: str) -> None:
    check_problem(suite.create_or_update(entity_id, filename), 400)


# --- 008: update (5.6.11) --------------------------------------------------------------------------


def test_008_01_01_update_temporal_entity(suite: Suite) -> None:
    entity_id = random_id()
    assert suite.create_or_update(entity_id, "vehicle-create-temporal-representation.jsonld").status_code == 201
    response = suite.create_or_update(entity_id, "vehicle-temporal-representation-update.jsonld")
    assert response.status_code == 204 and response.content == b""
    retrieved = suite.retrieve(entity_id, context=SUITE_CONTEXT, accept=JSON_LD)
    check_resource("vehicle-temporal-representation-update.jsonld", entity_id, retrieved.json())


# --- 009: delete a temporal representation (5.6.16) ------------------------------------------------


def test_009_01_01_delete_temporal_entity(suite: Suite) -> None:
    entity_id = random_id()
    assert suite.create_or_update(entity_id, "vehicle-temporal-representation.jsonld").status_code == 201
    response = suite.delete(entity_id)
    assert response.status_code == 204 and response.content == b""
    check_problem(suite.retrieve(entity_id, context=SUITE_CONTEXT), 404)


@pytest.mark.parametrize(("entity_id", "status", "error"), [("", 405, None), ("invalidId", 400, BAD_REQUEST_DATA)])
def test_009_02_delete_with_empty_or_invalid_id(suite: Suite, entity_id: str, status: int, error: str | None) -> None:
    check_problem(suite.delete(entity_id), status, error)


def test_009_03_01_delete_unknown_entity(suite: Suite) -> None:
    check_problem(suite.delete(random_id()), 404, RESOURCE_NOT_FOUND)


# --- 014: add attributes (5.6.12) ------------------------------------------------------------------


def test_014_01_01_add_attribute(suite: Suite) -> None:
    entity_id = random_id()
    assert suite.create_or_update(entity_id, "vehicle-temporal-representation.jsonld").status_code == 201
    response = suite.append(entity_id, "vehicle-temporal-representation-fragment.jsonld")
    assert response.status_code == 204 and response.content == b""
    retrieved = suite.retrieve(entity_id, context=SUITE_CONTEXT, accept=JSON_LD)
    check_resource("vehicle-temporal-representation-added-attribute.jsonld", entity_id, retrieved.json())


@pytest.mark.parametrize("entity_id", ["", "thisIsAninvalidId"])
def test_014_02_add_attribute_with_empty_or_invalid_id(suite: Suite, entity_id: str) -> None:
    assert suite.create_or_update(random_id(), "vehicle-temporal-representation.jsonld").status_code == 201
    check_problem(suite.append(entity_id, "vehicle-temporal-representation-fragment.jsonld"), 400)


def test_014_03_01_add_attribute_to_unknown_entity(suite: Suite) -> None:
    check_problem(suite.append(random_id(), "vehicle-temporal-representation-fragment.jsonld"), 404)


@pytest.mark.parametrize(
    "fragment",
    [
        "vehicle-temporal-representation-invalid-json-fragment.jsonld",
        "vehicle-temporal-representation-empty-json-fragment.jsonld",
    ],
)
def test_014_04_add_invalid_or_empty_content(suite: Suite, fragment: str) -> None:
    entity_id = random_id()
    assert suite.create_or_update(entity_id, "vehicle-temporal-representation.jsonld").status_code == 201
    check_problem(suite.append(entity_id, fragment), 400, INVALID_REQUEST)


# --- 015: delete an attribute (5.6.13) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("delete_all", "dataset_id", "expectation"),
    [
        ("false", "", "vehicle-temporal-representation-delete-fuelLevel.jsonld"),
        (
            "false",
            "urn:ngsi-ld:Vehicle:12345-fuel",
            "vehicle-temporal-representation-delete-fuelLevel-datasetid.jsonld",
        ),
        ("true", "", "vehicle-temporal-representation-deleteall-fuelLevel.jsonld"),
    ],
    ids=["015_01_01", "015_01_02", "015_01_03"],
)
def test_015_01_delete_attribute(suite: Suite, delete_all: str, dataset_id: str, expectation: str) -> None:
    entity_id = random_id()
    assert suite.create_or_update(entity_id, "vehicle-temporal-representation.jsonld").status_code == 201
    response = suite.delete_attribute(entity_id, "fuelLevel", dataset_id, delete_all, SUITE_CONTEXT)
    assert response.status_code == 204 and response.content == b""
    retrieved = suite.retrieve(entity_id, context=SUITE_CONTEXT, accept=JSON_LD)
    check_resource(expectation, entity_id, retrieved.json())


@pytest.mark.parametrize(("entity", "attribute"), [("", "speed"), ("invalidId", "speed"), ("valid", "invalid(Name")])
def test_015_02_delete_attribute_with_invalid_ids(suite: Suite, entity: str, attribute: str) -> None:
    valid = random_id()
    assert suite.create_or_update(valid, "vehicle-temporal-representation.jsonld").status_code == 201
    response = suite.delete_attribute(valid if entity == "valid" else entity, attribute, delete_all="false")
    check_problem(response, 400, BAD_REQUEST_DATA)


@pytest.mark.parametrize(("known", "attribute"), [(False, "fuelLevel"), (True, "notExistingAttribute")])
def test_015_03_delete_unknown_entity_or_attribute(suite: Suite, known: bool, attribute: str) -> None:
    valid = random_id()
    assert suite.create_or_update(valid, "vehicle-temporal-representation.jsonld").status_code == 201
    response = suite.delete_attribute(
        valid if known else random_id(), attribute, delete_all="false", context=SUITE_CONTEXT
    )
    check_problem(response, 404, RESOURCE_NOT_FOUND)


# --- 016: modify an attribute instance (5.6.14) ----------------------------------------------------


def _first_speed_instance(suite: Suite, entity_id: str) -> str:
    response = suite.retrieve(entity_id, context=SUITE_CONTEXT, accept=JSON_LD, options="sysAttrs")
    instance_id: str = response.json()["speed"][0]["instanceId"]
    return instance_id


def test_016_01_01_modify_attribute_instance(suite: Suite) -> None:
    entity_id = random_id()
    assert suite.create_or_update(entity_id, "vehicle-temporal-representation.jsonld").status_code == 201
    before = suite.retrieve(entity_id, context=SUITE_CONTEXT, accept=JSON_LD).json()["speed"][0]["instanceId"]
    response = suite.modify_instance(
        entity_id, "speed", before, "vehicle-temporal-modify-attribute-instance-fragment.jsonld", SUITE_CONTEXT
    )
    assert response.status_code == 204 and response.content == b""
    after = suite.retrieve(entity_id, context=SUITE_CONTEXT, accept=JSON_LD).json()
    assert after["speed"][0]["instanceId"] == before
    check_resource(
        "vehicle-temporal-representation-modify-attribute-instance.jsonld", entity_id, after, frozenset({"modifiedAt"})
    )


@pytest.mark.parametrize(
    ("entity", "attribute", "instance", "status"),
    [
        ("invalidId", "speed", "valid", 400),
        ("", "speed", "valid", 400),
        ("valid", "speed", "invalidId", 400),
        ("valid", "speed", "", 405),
        ("valid", "invalid(Id", "valid", 400),
        ("valid", "", "valid", 405),
    ],
    ids=[f"016_02_0{i}" for i in range(1, 7)],
)
def test_016_02_modify_instance_with_wrong_ids(
    suite: Suite, entity: str, attribute: str, instance: str, status: int
) -> None:
    entity_id = random_id()
    assert suite.create_or_update(entity_id, "vehicle-temporal-representation.jsonld").status_code == 201
    valid_instance = _first_speed_instance(suite, entity_id)
    response = suite.modify_instance(
        entity_id if entity == "valid" else entity,
        attribute,
        valid_instance if instance == "valid" else instance,
        "vehicle-temporal-modify-attribute-instance-fragment.jsonld",
        SUITE_CONTEXT,
    )
    check_problem(response, status)


@pytest.mark.parametrize(
    ("entity", "attribute", "instance"),
    [
        ("unknown", "speed", "valid"),
        ("valid", "speed2", "valid"),
        ("valid", "speed", "urn:ngsi-ld:01234567890123456789"),
    ],
    ids=["016_03_01", "016_03_02", "016_03_03"],
)
def test_016_03_modify_instance_not_found(suite: Suite, entity: str, attribute: str, instance: str) -> None:
    entity_id = random_id()
    assert suite.create_or_update(entity_id, "vehicle-temporal-representation.jsonld").status_code == 201
    valid_instance = _first_speed_instance(suite, entity_id)
    response = suite.modify_instance(
        random_id() if entity == "unknown" else entity_id,
        attribute,
        valid_instance if instance == "valid" else instance,
        "vehicle-temporal-modify-attribute-instance-fragment.jsonld",
        SUITE_CONTEXT,
    )
    check_problem(response, 404)


# --- 017: delete an attribute instance (5.6.15) ----------------------------------------------------


def test_017_01_01_delete_attribute_instance(suite: Suite) -> None:
    entity_id = random_id()
    assert suite.create_or_update(entity_id, "vehicle-temporal-representation.jsonld").status_code == 201
    instance_id = suite.retrieve(entity_id, context=SUITE_CONTEXT, accept=JSON_LD).json()["speed"][0]["instanceId"]
    response = suite.delete_instance(entity_id, "speed", instance_id, SUITE_CONTEXT)
    assert response.status_code == 204 and response.content == b""
    retrieved = suite.retrieve(entity_id, context=SUITE_CONTEXT, accept=JSON_LD)
    check_resource("vehicle-temporal-representation-delete-speed-instanceid.jsonld", entity_id, retrieved.json())


@pytest.mark.parametrize(
    ("entity", "attribute", "instance"),
    [
        ("invalidId", "speed", "valid"),
        ("", "speed", "valid"),
        ("valid", "speed", "invalidId"),
        ("valid", "invalid(Name", "valid"),
        ("valid", "", "valid"),
    ],
    ids=[f"017_02_0{i}" for i in range(1, 6)],
)
def test_017_02_delete_instance_with_wrong_ids(suite: Suite, entity: str, attribute: str, instance: str) -> None:
    entity_id = random_id()
    assert suite.create_or_update(entity_id, "vehicle-temporal-representation.jsonld").status_code == 201
    valid_instance = _first_speed_instance(suite, entity_id)
    response = suite.delete_instance(
        entity_id if entity == "valid" else entity,
        attribute,
        valid_instance if instance == "valid" else instance,
        SUITE_CONTEXT,
    )
    check_problem(response, 400)


@pytest.mark.parametrize(
    ("entity", "attribute", "instance"),
    [
        ("unknown", "speed", "valid"),
        ("valid", "speed2", "valid"),
        ("valid", "speed", "urn:ngsi-ld:01234567890123456789"),
    ],
    ids=["017_03_01", "017_03_02", "017_03_03"],
)
def test_017_03_delete_instance_not_found(suite: Suite, entity: str, attribute: str, instance: str) -> None:
    entity_id = random_id()
    assert suite.create_or_update(entity_id, "vehicle-temporal-representation.jsonld").status_code == 201
    valid_instance = _first_speed_instance(suite, entity_id)
    response = suite.delete_instance(
        random_id() if entity == "unknown" else entity_id,
        attribute,
        valid_instance if instance == "valid" else instance,
        SUITE_CONTEXT,
    )
    check_problem(response, 404)


# --- 020: retrieve the temporal evolution of an entity (5.7.3) -------------------------------------


@pytest.fixture
def vehicle(suite: Suite) -> str:
    """``Create Temporal Entity`` with 2020-08-vehicle-temporal-representation.jsonld."""
    entity_id = random_id()
    assert suite.create("2020-08-vehicle-temporal-representation.jsonld", entity_id).status_code == 201
    return entity_id


def test_020_01_01_retrieve_without_context(suite: Suite, vehicle: str) -> None:
    response = suite.retrieve(vehicle)
    assert response.status_code == 200
    check_temporal("vehicle-temporal-representation-020-01.jsonld", vehicle, response.json())


def test_020_02_01_retrieve_with_context(suite: Suite, vehicle: str) -> None:
    response = suite.retrieve(vehicle, context=SUITE_CONTEXT)
    assert response.status_code == 200
    check_temporal("vehicle-temporal-representation-020-02.jsonld", vehicle, response.json())


@pytest.mark.parametrize(
    ("attrs", "expectation"),
    [
        ("fuelLevel", "vehicle-temporal-representation-020-03-01.jsonld"),
        ("fuelLevel,speed", "vehicle-temporal-representation-020-02.jsonld"),
    ],
    ids=["020_03_01", "020_03_02"],
)
def test_020_03_retrieve_some_attributes(suite: Suite, vehicle: str, attrs: str, expectation: str) -> None:
    response = suite.retrieve(vehicle, context=SUITE_CONTEXT, attrs=attrs)
    assert response.status_code == 200
    check_temporal(expectation, vehicle, response.json())


@pytest.mark.parametrize(
    ("timerel", "time_at", "end_time_at", "expectation"),
    [
        ("after", "2020-08-01T13:03:00Z", "", "vehicle-temporal-representation-020-04-01.jsonld"),
        ("before", "2020-08-01T12:05:00Z", "", "vehicle-temporal-representation-020-04-02.jsonld"),
        ("between", "2020-08-01T12:00:00Z", "2020-08-01T13:00:00Z", "vehicle-temporal-representation-020-04-03.jsonld"),
    ],
    ids=["020_04_01", "020_04_02", "020_04_03"],
)
def test_020_04_retrieve_with_temporal_query(
    suite: Suite, vehicle: str, timerel: str, time_at: str, end_time_at: str, expectation: str
) -> None:
    response = suite.retrieve(vehicle, context=SUITE_CONTEXT, timerel=timerel, timeAt=time_at, endTimeAt=end_time_at)
    assert response.status_code == 200
    check_temporal(expectation, vehicle, response.json())


@pytest.mark.parametrize(
    ("last_n", "expectation"),
    [(4, "vehicle-temporal-representation-020-05-01.jsonld"), (7, "vehicle-temporal-representation-020-05-02.jsonld")],
    ids=["020_05_01", "020_05_02"],
)
def test_020_05_retrieve_last_n(suite: Suite, last_n: int, expectation: str) -> None:
    entity_id = random_id()
    assert (
        suite.create("2020-08-vehicle-temporal-representation-multiple-instances.jsonld", entity_id).status_code == 201
    )
    response = suite.retrieve(entity_id, context=SUITE_CONTEXT, lastN=last_n)
    assert response.status_code == 200
    check_temporal(expectation, entity_id, response.json())


def test_020_06_01_retrieve_invalid_id(suite: Suite) -> None:
    check_problem(suite.retrieve("invalidUri"), 400, BAD_REQUEST_DATA)


def test_020_07_01_retrieve_unknown_entity(suite: Suite) -> None:
    check_problem(suite.retrieve("urn:ngsi-ld:Vehicle:unknowEntity"), 404, RESOURCE_NOT_FOUND)


def test_020_08_01_retrieve_unknown_attribute(suite: Suite, vehicle: str) -> None:
    check_problem(suite.retrieve(vehicle, context=SUITE_CONTEXT, attrs="unknownAttribute"), 404, RESOURCE_NOT_FOUND)


@pytest.mark.parametrize(
    ("timerel", "time_at", "end_time_at"),
    [("after", "", ""), ("before", "", ""), ("between", "2020-08-01T12:00:00Z", "")],
    ids=["020_09_01", "020_09_02", "020_09_03"],
)
def test_020_09_retrieve_with_invalid_temporal_query(
    suite: Suite, vehicle: str, timerel: str, time_at: str, end_time_at: str
) -> None:
    response = suite.retrieve(vehicle, timerel=timerel, timeAt=time_at, endTimeAt=end_time_at)
    check_problem(response, 400, BAD_REQUEST_DATA)


def test_020_10_01_retrieve_simplified(suite: Suite, vehicle: str) -> None:
    response = suite.retrieve(vehicle, context=SUITE_CONTEXT, options="temporalValues")
    assert response.status_code == 200
    check_temporal("vehicle-temporal-representation-020-10.jsonld", vehicle, response.json())


@pytest.mark.parametrize(
    ("methods", "period", "attrs", "expectation"),
    [
        ("avg", "PT1H", "", "vehicle-temporal-representation-aggregated-avg-PT1H.json"),
        ("avg", "PT1H", "fuelLevel", "vehicle-temporal-representation-aggregated-avg-PT1H-fuelLevel.json"),
        ("avg,max", "PT1H", "", "vehicle-temporal-representation-020-11-03.json"),
        ("min,max", "P1D", "", "vehicle-temporal-representation-020-11-04.json"),
    ],
    ids=["020_11_01", "020_11_02", "020_11_03", "020_11_04"],
)
def test_020_11_retrieve_aggregated(
    suite: Suite, vehicle: str, methods: str, period: str, attrs: str, expectation: str
) -> None:
    response = suite.retrieve(
        vehicle,
        context=SUITE_CONTEXT,
        attrs=attrs,
        options="aggregatedValues",
        aggrMethods=methods,
        aggrPeriodDuration=period,
    )
    assert response.status_code == 200
    check_temporal(expectation, vehicle, response.json())


@pytest.mark.parametrize(
    ("representation", "expectation"),
    [
        ("", "vehicle-language-property-normalized-temporal-representation.jsonld"),
        ("temporalValues", "vehicle-language-property-simplified-temporal-representation.jsonld"),
    ],
    ids=["020_12_01", "020_12_02"],
)
def test_020_12_language_property(suite: Suite, representation: str, expectation: str) -> None:
    entity_id = random_id()
    assert suite.create("vehicle-language-property-temporal-representation.jsonld", entity_id).status_code == 201
    response = suite.retrieve(entity_id, context=SUITE_CONTEXT, options=representation)
    assert response.status_code == 200
    check_temporal(expectation, entity_id, response.json())


LRT = "least recent timestamp"
MRT = "most recent timestamp"


def _content_range(response: Any) -> tuple[str, datetime, datetime, str]:
    match = re.match(r"([a-zA-Z\-]+) (.*-.*-.*)-(.*-.*-.*)\/(.*)", response.headers["Content-Range"])
    assert match is not None, response.headers["Content-Range"]
    unit, start, end, size = match.groups()
    return unit, _date(start), _date(end), size


def _date(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _times(entities: list[dict[str, Any]], representation: str) -> list[datetime]:
    times = []
    for body in entities:
        for attr in ("speed", "fuelLevel"):
            if representation == "temporalValues":
                times += [_date(pair[1]) for pair in body[attr]["values"]]
            else:
                times += [_date(instance["observedAt"]) for instance in body[attr]]
    return times


def check_pagination(
    response: Any,
    entities: list[dict[str, Any]],
    representation: str,
    expected_start: str,
    expected_end: str,
    expected_size: str,
) -> None:
    """The range checks of 020_13 / 021_15 (``Get Least/Most Recent Timestamp From Vehicle Body``)."""
    assert response.status_code == 206, response.text
    unit, start, end, size = _content_range(response)
    assert unit == "date-time"
    times = _times(entities, representation)
    recent = {LRT: min(times), MRT: max(times)}
    if expected_start:
        assert start == (recent[expected_start] if expected_start in recent else _date(expected_start))
    if expected_end:
        assert end == (recent[expected_end] if expected_end in recent else _date(expected_end))
    if expected_size:
        assert size == expected_size


PAGINATION = [
    pytest.param({}, "*", LRT, MRT, id="01"),
    pytest.param({"lastN": 20}, "20", MRT, LRT, id="02"),
    pytest.param({"lastN": 20, "timerel": "before", "timeAt": TIME_AFTER}, "20", TIME_AFTER, LRT, id="03"),
    pytest.param(
        {"lastN": 20, "timerel": "between", "timeAt": TIME_BEFORE, "endTimeAt": TIME_AFTER},
        "",
        TIME_AFTER,
        LRT,
        id="04",
    ),
    pytest.param({"lastN": 20, "timerel": "after", "timeAt": TIME_BEFORE}, "20", MRT, LRT, id="05"),
    pytest.param({"timerel": "before", "timeAt": TIME_AFTER}, "*", "", MRT, id="06"),
    pytest.param({"timerel": "between", "timeAt": TIME_BEFORE, "endTimeAt": TIME_AFTER}, "", TIME_BEFORE, MRT, id="07"),
    pytest.param({"timerel": "after", "timeAt": TIME_BEFORE}, "", TIME_BEFORE, MRT, id="08"),
    pytest.param(
        {"options": "temporalValues", "timerel": "after", "timeAt": TIME_BEFORE}, "", TIME_BEFORE, MRT, id="09"
    ),
    pytest.param(
        {
            "options": "temporalValues",
            "lastN": 20,
            "timerel": "between",
            "timeAt": TIME_BEFORE,
            "endTimeAt": TIME_AFTER,
        },
        "",
        TIME_AFTER,
        LRT,
        id="10",
    ),
]


@pytest.mark.parametrize(("params", "size", "start", "end"), PAGINATION)
def test_020_13_retrieve_pagination(suite: Suite, params: dict[str, Any], size: str, start: str, end: str) -> None:
    entity_id = random_id()
    filename = "pagination/2020-01-vehicule-temporal-representation-twenty-instances.jsonld"
    assert suite.create(filename, entity_id).status_code == 201
    response = suite.retrieve(entity_id, context=SUITE_CONTEXT, **params)
    check_pagination(response, [response.json()], params.get("options", ""), start, end, size)


@pytest.mark.parametrize(
    ("params", "empty"),
    [
        ({"timerel": "after", "timeAt": TIME_BEFORE}, "fuelLevel"),
        ({"lastN": 100, "timerel": "before", "timeAt": TIME_AFTER}, "speed"),
    ],
    ids=["020_14_01", "020_14_02"],
)
def test_020_14_range_cut_before_the_second_attribute(suite: Suite, params: dict[str, Any], empty: str) -> None:
    entity_id = random_id()
    filename = "pagination/2020-01-vehicule-temporal-representation-sixty-instances.jsonld"
    assert suite.create(filename, entity_id).status_code == 201
    response = suite.retrieve(entity_id, context=SUITE_CONTEXT, **params)
    assert response.json()[empty] == []


@pytest.mark.parametrize(
    ("filename", "representation", "expectation"),
    [
        (
            "vehicle-json-property-temporal-representation.jsonld",
            "",
            "vehicle-json-property-temporal-representation.json",
        ),
        (
            "vehicle-json-property-temporal-representation.jsonld",
            "temporalValues",
            "vehicle-json-property-simplified-temporal-representation.json",
        ),
        (
            "vehicle-vocab-property-temporal-representation.jsonld",
            "",
            "vehicle-vocab-property-temporal-representation.json",
        ),
        (
            "vehicle-vocab-property-temporal-representation.jsonld",
            "temporalValues",
            "vehicle-vocab-property-simplified-temporal-representation.json",
        ),
    ],
    ids=["020_15_01", "020_15_02", "020_16_01", "020_16_02"],
)
def test_020_15_020_16_json_and_vocab_properties(
    suite: Suite, filename: str, representation: str, expectation: str
) -> None:
    entity_id = random_id()
    suite.create(filename, entity_id)
    response = suite.retrieve(entity_id, context=SUITE_CONTEXT, options=representation)
    assert response.status_code == 200
    check_temporal(expectation, entity_id, response.json())


@pytest.mark.parametrize(
    ("attr", "expectation"),
    [
        ("fuelLevel", "vehicle-temporal-representation-property-020-17.jsonld"),
        ("isParkedIn", "vehicle-temporal-representation-relationship-020-17.jsonld"),
        ("name", "vehicle-temporal-representation-languageproperty-020-17.jsonld"),
    ],
    ids=["020_17_01", "020_17_02", "020_17_03"],
)
def test_020_17_deleted_attributes(suite: Suite, attr: str, expectation: str) -> None:
    entity_id = random_id()
    assert (
        suite.create("vehicle-temporal-representation-different-attributes-types.jsonld", entity_id).status_code == 201
    )
    suite.delete_entity_attribute(entity_id, attr, SUITE_CONTEXT)
    response = suite.retrieve(entity_id, timeproperty="deletedAt", context=SUITE_CONTEXT)
    assert response.status_code == 200
    check_temporal(expectation, entity_id, response.json(), frozenset({"instanceId", "deletedAt"}))
    assert response.json()[attr][0]["deletedAt"]


@pytest.mark.parametrize(
    ("attr", "key", "expectation"),
    [
        ("fuelLevel", "values", "vehicle-temporal-values-representation-property-020-18.jsonld"),
        ("isParkedIn", "objects", "vehicle-temporal-values-representation-relationship-020-18.jsonld"),
        ("name", "languageMaps", "vehicle-temporal-values-representation-languageproperty-020-18.jsonld"),
    ],
    ids=["020_18_01", "020_18_02", "020_18_03"],
)
def test_020_18_deleted_attributes_simplified(suite: Suite, attr: str, key: str, expectation: str) -> None:
    entity_id = random_id()
    assert (
        suite.create("vehicle-temporal-representation-different-attributes-types.jsonld", entity_id).status_code == 201
    )
    suite.delete_entity_attribute(entity_id, attr, SUITE_CONTEXT)
    response = suite.retrieve(entity_id, timeproperty="deletedAt", options="temporalValues", context=SUITE_CONTEXT)
    assert response.status_code == 200
    body = copy.deepcopy(response.json())
    assert body[attr][key][0][1]  # the deletedAt time is there ...
    expected = Suite.load(f"expectations/{expectation}")
    body[attr][key][0][1] = expected[attr][key][0][1]  # ... and is left out of the comparison
    check_temporal(expectation, entity_id, body)


@pytest.mark.parametrize(
    ("pick", "omit", "expectation"),
    [
        ("speed", "", "pick-omit/vehicle-pick-speed.json"),
        ("", "speed", "pick-omit/vehicle-omit-speed.json"),
        ("id,speed", "", "pick-omit/vehicle-pick-id-speed.json"),
        ("", "type,speed", "pick-omit/vehicle-omit-type-speed.json"),
    ],
    ids=["020_21_01", "020_21_02", "020_21_03", "020_21_04"],
)
def test_020_21_pick_and_omit(suite: Suite, vehicle: str, pick: str, omit: str, expectation: str) -> None:
    response = suite.retrieve(vehicle, pick=pick, omit=omit, context=SUITE_CONTEXT)
    assert response.status_code == 200
    check_temporal(expectation, vehicle, response.json())


@pytest.mark.parametrize(
    ("pick", "omit", "attrs"), [("speed", "speed", ""), ("speed", "", "fuelLevel"), ("", "speed", "fuelLevel")]
)
def test_020_22_invalid_pick_and_omit(suite: Suite, vehicle: str, pick: str, omit: str, attrs: str) -> None:
    response = suite.retrieve(vehicle, accept=JSON, context=SUITE_CONTEXT, attrs=attrs, pick=pick, omit=omit)
    check_problem(response, 400, BAD_REQUEST_DATA)


@pytest.mark.parametrize(("pick", "omit"), [("unknown", ""), ("", "id,type,fuelLevel,speed")])
def test_020_23_nothing_left_after_pick_and_omit(suite: Suite, vehicle: str, pick: str, omit: str) -> None:
    response = suite.retrieve(vehicle, accept=JSON, context=SUITE_CONTEXT, pick=pick, omit=omit)
    check_problem(response, 404, RESOURCE_NOT_FOUND)


# --- 021: query the temporal evolution of entities (5.7.4) -----------------------------------------


def _setup(suite: Suite, *items: tuple[str, str]) -> None:
    for filename, entity_id in items:
        assert suite.create(filename, entity_id).status_code == 201


@pytest.mark.parametrize(
    ("timerel", "time_at", "end_time_at", "expectation"),
    [
        ("after", "2020-08-01T12:04:00Z", "", "vehicles-temporal-representation-021-01-01.jsonld"),
        ("before", "2020-09-01T13:06:00Z", "", "vehicles-temporal-representation-021-01-02.jsonld"),
        (
            "between",
            "2020-08-01T12:04:00Z",
            "2020-09-01T13:06:00Z",
            "vehicles-temporal-representation-021-01-03.jsonld",
        ),
    ],
    ids=["021_01_01", "021_01_02", "021_01_03"],
)
def test_021_01_query(suite: Suite, timerel: str, time_at: str, end_time_at: str, expectation: str) -> None:
    _setup(
        suite,
        ("2020-08-vehicle-temporal-representation.jsonld", VEHICLE + "021-01-A"),
        ("2020-09-vehicle-temporal-representation.jsonld", VEHICLE + "021-01-B"),
        ("2020-08-bus-temporal-representation.jsonld", "urn:ngsi-ld:Bus:021-13-A"),
    )
    response = suite.query(
        type="Vehicle", timerel=timerel, timeAt=time_at, endTimeAt=end_time_at, context=SUITE_CONTEXT
    )
    assert response.status_code == 200
    check_temporal(expectation, None, response.json())


def test_021_02_01_query_some_attributes(suite: Suite) -> None:
    _setup(
        suite,
        ("2020-08-vehicle-temporal-representation.jsonld", VEHICLE + "021-02-A"),
        ("2020-09-vehicle-temporal-representation.jsonld", VEHICLE + "021-02-B"),
    )
    response = suite.query(
        type="Vehicle", timerel="after", timeAt="2020-07-01T12:05:00Z", attrs="speed", context=SUITE_CONTEXT
    )
    assert response.status_code == 200
    check_temporal("vehicles-temporal-representation-021-02.jsonld", None, response.json())


def test_021_09_02_query_with_geo_query(suite: Suite) -> None:
    _setup(
        suite,
        ("2020-08-vehicle-temporal-representation.jsonld", VEHICLE + "021-09-A"),
        ("2020-10-vehicle-temporal-representation-with-location.jsonld", VEHICLE + "021-09-B"),
    )
    response = suite.query(
        type="Vehicle",
        georel="within",
        geometry="Polygon",
        coordinates="[[[-13.503,47.202],[6.541, 52.961],[20.37,44.653],[9.46,32.57],[-13.503,32.57],[-13.503,47.202]]]",
        geoproperty="location",
        timerel="after",
        timeAt="2020-07-01T12:05:00Z",
        context=SUITE_CONTEXT,
    )
    assert response.status_code == 200
    check_temporal("vehicles-temporal-representation-021-09-02.jsonld", None, response.json())


@pytest.mark.parametrize("limit", [2, 3], ids=["021_11_01", "021_11_02"])
def test_021_11_query_with_limit(suite: Suite, limit: int) -> None:
    _setup(
        suite,
        ("2020-08-vehicle-temporal-representation.jsonld", random_id()),
        ("2020-09-vehicle-temporal-representation.jsonld", random_id()),
        ("2020-09-vehicle-temporal-representation.jsonld", random_id()),
    )
    response = suite.query(
        type="Bus,Vehicle", limit=limit, timerel="after", timeAt="2020-07-01T12:05:00Z", context=SUITE_CONTEXT
    )
    assert response.status_code == 200
    assert [entity["type"] for entity in response.json()] == ["Vehicle"] * limit


def test_021_12_01_query_without_entity_selector(suite: Suite, vehicle: str) -> None:
    response = suite.query(timerel="after", timeAt="2020-07-01T12:05:00Z", context=SUITE_CONTEXT)
    check_problem(response, 400, BAD_REQUEST_DATA)


@pytest.mark.parametrize(
    ("timerel", "time_at", "end_time_at", "expectation"),
    [
        ("after", "2020-08-01T12:04:00Z", "", "vehicles-temporal-representation-021-14-01.json"),
        ("before", "2020-09-01T13:06:00Z", "", "vehicles-temporal-representation-021-14-02.json"),
        ("between", "2020-08-01T12:04:00Z", "2020-09-01T13:06:00Z", "vehicles-temporal-representation-021-14-03.json"),
    ],
    ids=["021_14_01", "021_14_02", "021_14_03"],
)
def test_021_14_query_simplified(suite: Suite, timerel: str, time_at: str, end_time_at: str, expectation: str) -> None:
    _setup(
        suite,
        ("2020-08-vehicle-temporal-representation.jsonld", VEHICLE + "021-14-A"),
        ("2020-09-vehicle-temporal-representation.jsonld", VEHICLE + "021-14-B"),
        ("2020-08-bus-temporal-representation.jsonld", "urn:ngsi-ld:Bus:021-14-A"),
    )
    response = suite.query(
        type="Vehicle",
        timerel=timerel,
        timeAt=time_at,
        endTimeAt=end_time_at,
        options="temporalValues",
        context=SUITE_CONTEXT,
    )
    assert response.status_code == 200
    check_temporal(expectation, None, response.json())


@pytest.mark.parametrize(("params", "size", "start", "end"), PAGINATION[2:])
def test_021_15_query_pagination(suite: Suite, params: dict[str, Any], size: str, start: str, end: str) -> None:
    _setup(
        suite,
        ("pagination/2020-01-vehicule-temporal-representation-twenty-instances.jsonld", random_id()),
        ("2020-09-vehicle-temporal-representation.jsonld", random_id()),
    )
    response = suite.query(type="Vehicle", context=SUITE_CONTEXT, **params)
    check_pagination(response, response.json(), params.get("options", ""), start, end, size)


def test_021_16_01_query_via_post_pagination(suite: Suite) -> None:
    _setup(
        suite,
        ("pagination/2020-01-vehicule-temporal-representation-twenty-instances.jsonld", random_id()),
        ("2020-09-vehicle-temporal-representation.jsonld", random_id()),
    )
    response = suite.query_post("entity-operations-before-query.jsonld", SUITE_CONTEXT)
    assert response.status_code == 206
    assert _content_range(response)[0] == "date-time"


@pytest.mark.parametrize(
    ("methods", "period", "attrs", "expectation"),
    [
        ("avg", "PT1H", "", "vehicle-temporal-representation-aggregated-avg-PT1H.json"),
        ("avg", "PT1H", "fuelLevel", "vehicle-temporal-representation-aggregated-avg-PT1H-fuelLevel.json"),
        ("avg,max", "PT1H", "", "vehicle-temporal-representation-020-11-03.json"),
        ("min,max", "P1D", "", "vehicle-temporal-representation-020-11-04.json"),
    ],
    ids=["021_17_01", "021_17_02", "021_17_03", "021_17_04"],
)
def test_021_17_query_aggregated(
    suite: Suite, vehicle: str, methods: str, period: str, attrs: str, expectation: str
) -> None:
    response = suite.query(
        type="Vehicle",
        attrs=attrs,
        options="aggregatedValues",
        aggrMethods=methods,
        aggrPeriodDuration=period,
        timerel="after",
        timeAt="2020-01-01T12:03:00Z",
        context=SUITE_CONTEXT,
    )
    assert response.status_code == 200
    check_temporal(expectation, vehicle, response.json()[0])


@pytest.mark.parametrize(
    ("attrs", "dataset_id", "expectation"),
    [
        ("speed", "", "vehicle-temporal-representation-speed-attribute.json"),
        ("", "urn:ngsi-ld:Dataset:Common", "vehicle-temporal-representation-common-datasetid.json"),
        (
            "",
            "urn:ngsi-ld:Dataset:Common,urn:ngsi-ld:Dataset:Speed",
            "vehicle-temporal-representation-two-datasetids.json",
        ),
        ("", "@none", "vehicle-temporal-representation-default-instances.json"),
        ("speed", "@none", "vehicle-temporal-representation-speed-default-instance.json"),
        (
            "fuelLevel",
            "urn:ngsi-ld:Dataset:fuel",
            "vehicle-temporal-representation-fuellevel-attribute-fuel-datasetid.json",
        ),
    ],
    ids=[f"021_18_0{i}" for i in range(1, 7)],
)
def test_021_18_filter_by_dataset_id(suite: Suite, attrs: str, dataset_id: str, expectation: str) -> None:
    entity_id = VEHICLE + "021-18-A"
    assert (
        suite.create("vehicle-temporal-representation-with-multi-attributes-instances.jsonld", entity_id).status_code
        == 201
    )
    response = suite.query(
        attrs=attrs,
        datasetId=dataset_id,
        type="Vehicle",
        timerel="after",
        timeAt="2020-08-01T12:04:00Z",
        options="temporalValues",
        context=SUITE_CONTEXT,
    )
    assert response.status_code == 200
    check_temporal(expectation, entity_id, response.json())


@pytest.mark.parametrize(
    ("fmt", "options", "methods"),
    [("temporalValues", "", ""), ("temporalValues", "aggregatedValues", "sum"), ("", "temporalValues", "")],
    ids=["021_19_01", "021_19_02", "021_19_03"],
)
def test_021_19_format_and_options(suite: Suite, fmt: str, options: str, methods: str) -> None:
    _setup(
        suite,
        ("2020-08-vehicle-temporal-representation.jsonld", VEHICLE + "021-19-A"),
        ("2020-09-vehicle-temporal-representation.jsonld", VEHICLE + "021-19-B"),
    )
    response = suite.query(
        type="Vehicle",
        options=options,
        format=fmt,
        aggrMethods=methods,
        timerel="after",
        timeAt="2020-01-01T12:03:00Z",
        context=SUITE_CONTEXT,
    )
    assert response.status_code == 200
    check_temporal("vehicles-temporal-representation-021-19-01.json", None, response.json())


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("invalidFormat", ""),
        ("", "invalidOptions"),
        ("", "temporalValues,invalidOptions"),
        ("temporalValues", "aggregatedValues,invalidOptions"),
    ],
    ids=["021_20_01", "021_20_02", "021_20_03", "021_20_04"],
)
def test_021_20_faulty_format_or_options(suite: Suite, fmt: str, options: str) -> None:
    response = suite.query(
        type="Vehicle",
        options=options,
        format=fmt,
        timerel="after",
        timeAt="2020-01-01T12:03:00Z",
        context=SUITE_CONTEXT,
    )
    check_problem(response, 400, INVALID_REQUEST)
