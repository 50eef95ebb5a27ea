"""A user's session with ngsildclient (a third-party NGSI-LD client library) against Territoire.

Runs in its own virtual environment (ngsildclient 0.5.2 pins httpx < 0.24 and rich < 13, which
Territoire cannot share): ``python ngsildclient_scenario.py HOST PORT``. Prints one line per
step and exits non-zero on the first failure; ``tests/integration/test_interop_ngsildclient.py``
starts the server and runs it.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from ngsildclient import Client, Entity


def step(name: str, ok: bool, detail: object = "") -> None:
    print(f"{'ok' if ok else 'FAIL'} {name} {detail}")
    if not ok:
        sys.exit(1)


def main(host: str, port: int) -> None:
    observed = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    with Client(hostname=host, port=port, verbose=False) as client:
        container = Entity("WasteContainer", "angers-001")
        container.prop("fillingLevel", 0.62, unitcode="P1", observedat=observed)
        container.prop("wasteType", "glass")
        container.gprop("location", (47.4784, -0.5540))
        container.rel("refWasteContainerIsle", "urn:ngsi-ld:WasteContainerIsle:angers-01")
        step("create", bool(client.create(container)))
        step("exists", client.exists("urn:ngsi-ld:WasteContainer:angers-001"))

        fetched = client.get("urn:ngsi-ld:WasteContainer:angers-001")
        step("get value", fetched["fillingLevel"].value == 0.62, fetched["fillingLevel"].value)
        isle = fetched["refWasteContainerIsle"]["object"]
        step("get relationship", isle == "urn:ngsi-ld:WasteContainerIsle:angers-01", isle)
        # (ngsildclient 0.5.2's GeoProperty.value getter cannot parse a dict: read the raw member.)
        location = fetched["location"]["value"]
        step("get location", location["coordinates"] == [-0.554, 47.4784], location)

        others = []
        for n in range(2, 12):
            other = Entity("WasteContainer", f"angers-{n:03d}")
            other.prop("fillingLevel", n / 12)
            other.prop("wasteType", "paper" if n % 2 else "glass")
            other.gprop("location", (47.47 + n * 0.001, -0.55))
            others.append(other)
        result = client.upsert(*others)
        step("batch upsert", bool(result), result)

        full = client.query(type="WasteContainer", q="fillingLevel>0.5")
        step("query q", len(full) == 6, sorted(e.id for e in full))
        step("count", client.count(type="WasteContainer") == 11, client.count(type="WasteContainer"))
        step("count q", client.count(type="WasteContainer", q='wasteType=="glass"') == 6)
        # (ngsildclient sends geo-queries as a non-standard geoQ URL parameter, which NGSI-LD
        # brokers refuse; its POST /entityOperations/query form is standard.)
        near = client.entities._query_alt(
            {
                "type": "Query",
                "entities": [{"type": "WasteContainer"}],
                "geoQ": {"geometry": "Point", "coordinates": [-0.55, 47.472], "georel": "near;maxDistance==100"},
            }
        )
        step("geo query", sorted(e.id for e in near) == ["urn:ngsi-ld:WasteContainer:angers-002"], [e.id for e in near])

        fetched["fillingLevel"].value = 0.9
        step("update", bool(client.update(fetched)))
        step("updated value", client.get("urn:ngsi-ld:WasteContainer:angers-001")["fillingLevel"].value == 0.9)

        types = client.types.list()
        step("types", "WasteContainer" in types, types)

        step("delete", bool(client.entities.delete("urn:ngsi-ld:WasteContainer:angers-001")))
        step("deleted", not client.exists("urn:ngsi-ld:WasteContainer:angers-001"))
        client.delete_where(type="WasteContainer")
        step("delete_where", client.count(type="WasteContainer") == 0)
    print("scenario complete")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
