"""The synthetic-catalogue bundle of the serving benchmark: built by bench/synthetic_catalogue.py, served by the real app."""

from __future__ import annotations

import json
import sys

import pytest
from fastapi.testclient import TestClient

from recsys.config import PROJECT_ROOT


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    sys.path.insert(0, str(PROJECT_ROOT / "bench"))
    import synthetic_catalogue

    root = tmp_path_factory.mktemp("synthetic")
    argv = ["--items", "3000", "--users", "300", "--clusters", "40", "--queries", "50", "--sweep", "4,16", "--compare", "hnsw",
            "--compare-sweep", "150", "--exact-max-items", "1000",
            "--root", str(root / "bundles"), "--out", str(root / "index.json")]
    assert synthetic_catalogue.main(argv) == 0
    from serving.app import create_app
    from serving.reload import ServiceHolder, load_service

    service = load_service(root / "bundles")
    result = json.loads((root / "index.json").read_text())
    assert result["served"]["recall_sweep"][-1]["recall_at_k"] > 0.9 and service.generator.tower_index.kind == "ivf"
    assert service.generator.tower_index.breadth == result["serving_breadth"], "the bundle serves the breadth the sweep chose"
    assert [c["kind"] for c in result["compared"]] == ["hnsw"] and result["compared"][0]["recall_sweep"][0]["recall_at_k"] > 0.5
    return TestClient(create_app(ServiceHolder(root / "bundles", service=service, bundle_path=service.bundle.path)))


def test_candidates_through_the_real_app(synthetic: TestClient) -> None:
    users = synthetic.get("/v1/users/sample", params={"n": 2}).json()["users"]
    r = synthetic.post("/v1/candidates", json={"user_id": users[0]["user_id"], "k": 100})
    assert r.status_code == 200
    items = r.json()["items"]
    assert len(items) == 100 and any("two_tower" in i["sources"] for i in items) and any("history" in i["sources"] for i in items)
    visitor = synthetic.post("/v1/candidates", json={"recent_item_ids": ["s0000001"], "k": 5}).json()["items"]
    assert visitor[0]["item_id"] == "s0000001" or any("two_tower" in i["sources"] for i in visitor)
    assert synthetic.post("/v1/candidates", json={"recent_item_ids": ["nope"], "k": 5}).status_code == 422


def test_no_reranker_is_a_clear_422(synthetic: TestClient) -> None:
    r = synthetic.post("/v1/recommendations", json={"user_id": "u0000001"})
    assert r.status_code == 422 and "no reranker" in r.json()["message"]
