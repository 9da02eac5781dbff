"""The lean path of the hot endpoints (serving/fastpath.py) answers exactly as the FastAPI routes do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import serving.app as app_module
from serving.app import create_app
from serving.bundle_service import BundleService
from tests.unit.serving_fixtures import shop_service

FAST = {"content-type": "application/json"}
ROUTE = {"content-type": "application/json; charset=utf-8"}  # not the fast path's exact type: the FastAPI route answers


@pytest.fixture(scope="module")
def service(shop_bundle_path: Path) -> BundleService:
    return shop_service(shop_bundle_path)


@pytest.fixture(scope="module")
def client(service: BundleService) -> Iterator[TestClient]:
    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        yield c


def _payloads(service: BundleService) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    user = service.sample_users(1)[0].user_id
    return [
        ("/v1/candidates", {"user_id": user, "k": 15}),
        ("/v1/candidates", {"user_id": user, "k": 30, "exclude_seen": True, "details": True}),
        ("/v1/candidates", {"recent_item_ids": ["i001", "i002"], "k": 8}),
        ("/v1/candidates", {"k": 5, "filters": {"nope": ["x"]}}),
        ("/v1/candidates", {"recent_item_ids": ["i001", "zz9"]}),
        ("/v1/candidates", {"user_id": "nobody"}),
        ("/v1/recommendations", {"user_id": user, "k": 12, "n_candidates": 30, "details": False}),
        ("/v1/recommendations", {"user_id": user, "k": 5}),
        ("/v1/recommendations", {"recent_item_ids": ["zz1"]}),
        ("/v1/candidates", {"k": 5, "details": 0}),  # not a boolean: 422 on both paths
        ("/v1/candidates", {"k": "5"}),
        ("/v1/recommendations", {"k": 3.0, "n_candidates": 20, "exclude_seen": 1}),
        ("/v1/recommendations", {"k": 3.0, "n_candidates": 20.0}),  # whole numbers are integers
        ("/v1/candidates", {"k": 5, "filters": {"a b": ["x"]}}),
    ]


def test_fast_path_answers_like_the_route(client: TestClient, service: BundleService) -> None:
    for path, payload in _payloads(service):
        import json

        body = json.dumps(payload).encode()
        fast, route = client.post(path, content=body, headers=FAST), client.post(path, content=body, headers=ROUTE)
        assert fast.status_code == route.status_code, (path, payload, fast.text, route.text)
        assert fast.json() == route.json(), (path, payload)
        assert fast.headers["content-type"] == route.headers["content-type"]


def test_fast_path_is_taken_and_counted(client: TestClient, service: BundleService, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = app_module._candidates_response
    monkeypatch.setattr(app_module, "_candidates_response", lambda svc, body: calls.append(1) or original(svc, body))
    assert client.post("/v1/candidates", json={"k": 3}).status_code == 200
    assert calls == []  # answered without the route
    assert client.post("/v1/candidates", content=b'{"k": 3}', headers=ROUTE).status_code == 200
    assert calls == [1]
    assert 'recsys_http_requests_total{method="POST",route="/v1/candidates",status="200"}' in client.get("/metrics").text


def test_fast_path_errors_are_the_routes(client: TestClient, service: BundleService, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.post("/v1/candidates", json={"k": 0}).json()["fields"][0]["field"] == "k"
    assert client.post("/v1/candidates", content=b'{"k": 3', headers=FAST).status_code == 400
    monkeypatch.setattr(service, "candidates", lambda query: 1 / 0)
    response = client.post("/v1/candidates", json={"k": 3})
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error" and "ZeroDivision" not in response.text
    assert 'recsys_http_errors_total{route="/v1/candidates",status="500"}' in client.get("/metrics").text


@pytest.mark.parametrize(("inline_ms", "expect_inline"), [("1000", True), ("0", False)])
def test_cheap_answers_run_on_the_event_loop_and_slow_or_encoder_ones_in_threads(
    service: BundleService, monkeypatch: pytest.MonkeyPatch, inline_ms: str, expect_inline: bool
) -> None:
    import threading

    threads: list[str] = []
    original = service.candidates
    monkeypatch.setattr(service, "candidates", lambda query: threads.append(threading.current_thread().name) or original(query))
    monkeypatch.setenv("RECSYS_SERVE_INLINE_MS", inline_ms)
    with TestClient(create_app(service)) as client:
        for _ in range(3):
            assert client.post("/v1/candidates", json={"k": 3}).status_code == 200
        assert client.post("/v1/candidates", json={"k": 3, "text": "red dress"}).status_code == 200
    pooled = [name.startswith("recsys-fastpath") for name in threads]
    assert pooled[0], "an endpoint not yet timed runs in the pool"
    assert pooled[1:3] == [not expect_inline] * 2
    assert pooled[3], "a text preference (an encoder pass) always runs in the pool"
