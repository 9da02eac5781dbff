"""The HTTP layer in-process: every endpoint, and every kind of bad input gets its specific 4xx."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serving.app import create_app
from serving.bundle_service import BundleService
from serving.schemas import MAX_IMAGE_BYTES
from tests.unit.serving_fixtures import shop_service


@pytest.fixture(scope="module")
def service(shop_bundle_path: Path) -> BundleService:
    return shop_service(shop_bundle_path)


@pytest.fixture(scope="module")
def client(service: BundleService) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as c:
        yield c


def png(width: int = 24, height: int = 36, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")
    return buf.getvalue()


def assert_error(response, status: int, field: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["message"] and body["error"]
    assert field in body["message"], body
    return body


def test_candidates_known_user_have_scores_and_sources(client: TestClient, service: BundleService) -> None:
    user = service.sample_users(1)[0].user_id
    body = client.post("/v1/candidates", json={"user_id": user, "k": 15}).json()
    assert body["model_version"] == service.version
    assert len(body["items"]) == 15
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert all(i["sources"] for i in body["items"])
    assert any("history" in i["sources"] for i in body["items"])


def test_candidates_fallbacks_and_context(client: TestClient) -> None:
    popular = client.post("/v1/candidates", json={"k": 5}).json()["items"]
    assert [set(i["sources"]) for i in popular] == [{"popularity"}] * 5
    unknown_user = client.post("/v1/candidates", json={"user_id": "nobody", "k": 5}).json()["items"]
    assert [i["item_id"] for i in unknown_user] == [i["item_id"] for i in popular]
    context = client.post("/v1/candidates", json={"recent_item_ids": ["i001", "i004"], "text": "red dress", "k": 10, "details": True}).json()["items"]
    assert any("content" in i["sources"] for i in context)
    assert all(i["item"]["name"] for i in context)


def test_exclude_seen_and_filters(client: TestClient, service: BundleService) -> None:
    user = service.sample_users(1)[0]
    items = client.post("/v1/candidates", json={"user_id": user.user_id, "k": 30, "exclude_seen": True}).json()["items"]
    assert not {i["item_id"] for i in items} & set(user.recent_item_ids)
    boots = client.post("/v1/candidates", json={"k": 30, "filters": {"product_type": ["boots"]}, "details": True}).json()["items"]
    assert boots and {i["item"]["attributes"]["product_type"] for i in boots} == {"boots"}


def test_recommendations_have_reasons(client: TestClient, service: BundleService) -> None:
    user = service.sample_users(1)[0].user_id
    body = client.post("/v1/recommendations", json={"user_id": user, "k": 5, "n_candidates": 30}).json()
    assert len(body["items"]) == 5
    for entry in body["items"]:
        reasons = entry["reasons"]
        assert reasons["sources"] and reasons["contributions"]
        assert reasons["text_similarity"] is not None
        assert entry["item"]["name"]
    visitor = client.post("/v1/recommendations", json={"text": "black boots", "image_base64": base64.b64encode(png()).decode(), "k": 4}).json()
    assert len(visitor["items"]) == 4 and all(i["reasons"]["text_similarity"] is not None for i in visitor["items"])


def test_items_similar_search_image_users(client: TestClient, service: BundleService) -> None:
    item = client.get("/v1/items/i000").json()
    assert item["name"] and item["has_image"] and item["image_url"] == "/v1/items/i000/image"
    no_photo = client.get("/v1/items/i002").json()  # every third shop item has no photo
    assert no_photo["has_image"] is False and no_photo["image_url"] is None
    image = client.get("/v1/items/i000/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(image.content)).size == (32, 48)
    assert_error(client.get("/v1/items/i002/image"), 404, "item_id")
    similar = client.get("/v1/items/i000/similar", params={"k": 5}).json()["items"]
    assert len(similar) == 5 and "i000" not in [s["item_id"] for s in similar]
    found = client.post("/v1/search", data={"text": "blue shirt", "k": "3"}).json()["items"]
    assert len(found) == 3
    by_photo = client.post("/v1/search", files={"image": ("x.png", png(colour=(30, 30, 200)), "image/png")}, data={"k": "3", "image_weight": "1", "text_weight": "0"}).json()["items"]
    assert len(by_photo) == 3
    sample = client.get("/v1/users/sample", params={"n": 2}).json()["users"]
    assert len(sample) == 2 and sample[0]["recent_items"]
    user = client.get(f"/v1/users/{sample[0]['user_id']}").json()
    assert user["n_purchases"] >= len(user["recent_items"]) > 0


def test_health_ready_metrics_page(client: TestClient, service: BundleService) -> None:
    assert client.get("/health").json() == {"status": "ok", "pid": os.getpid()}
    assert client.get("/ready").json() == {"status": "ready", "model_version": service.version}
    client.post("/v1/candidates", json={"k": 500})
    text = client.get("/metrics").text
    assert 'recsys_http_requests_total{method="POST",route="/v1/candidates",status="422"}' in text
    assert "recsys_http_request_duration_seconds_bucket" in text
    assert f'recsys_model_info{{version="{service.version}"}} 1.0' in text
    assert 'recsys_http_errors_total{route="/v1/candidates",status="422"}' in text
    page = client.get("/")
    assert page.status_code == 200 and "Hybrid recommender" in page.text
    assert client.get("/static/app.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/candidates", "/v1/recommendations", "/v1/search", "/v1/items/{item_id}/similar", "/admin/reload"} <= set(spec["paths"])
    assert spec["components"]["schemas"]["CandidatesRequest"]["examples"]


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/v1/candidates", {"k": 0}, "k"),
        ("/v1/candidates", {"k": 201}, "k"),
        ("/v1/recommendations", {"k": 101}, "k"),
        ("/v1/recommendations", {"n_candidates": 100000}, "n_candidates"),
        ("/v1/candidates", {"text_weight": 2}, "text_weight"),
        ("/v1/candidates", {"exclude_sen": True}, "exclude_sen"),
        ("/v1/candidates", {"user_id": "../../etc/passwd"}, "user_id"),
        ("/v1/candidates", {"recent_item_ids": ["i001", "a/b"]}, "recent_item_ids.1"),
        ("/v1/candidates", {"k": "many"}, "k"),
        ("/v1/candidates", {"filters": {"nope": ["x"]}}, "filters.nope"),
        ("/v1/candidates", {"text": "x" * 501}, "text"),
    ],
)
def test_invalid_fields_are_named(client: TestClient, path: str, payload: dict, field: str) -> None:
    body = assert_error(client.post(path, json=payload), 422, field)
    assert body["fields"][0]["field"] == field


def test_unknown_items_are_listed(client: TestClient) -> None:
    body = assert_error(client.post("/v1/recommendations", json={"recent_item_ids": ["i001", "zz1", "zz2"]}), 422, "recent_item_ids")
    assert body["unknown_item_ids"] == ["zz1", "zz2"]
    body = assert_error(client.get("/v1/items/zz9"), 404, "item_id")
    assert body["unknown_item_ids"] == ["zz9"]
    assert_error(client.get("/v1/items/zz9/similar"), 404, "item_id")
    assert_error(client.get("/v1/items/zz9/image"), 404, "item_id")
    assert_error(client.get("/v1/users/nobody"), 404, "user_id")


def test_bad_bodies(client: TestClient) -> None:
    assert_error(client.post("/v1/candidates", content=b'{"k": 3', headers={"content-type": "application/json"}), 400, "malformed JSON")
    assert_error(client.post("/v1/candidates", content=b"k=3", headers={"content-type": "text/plain"}), 415, "content-type")
    assert_error(client.post("/v1/candidates", content=b"[1, 2]", headers={"content-type": "application/json"}), 422, "body")
    assert_error(client.post("/v1/candidates", content=b"x" * (9 * 1024 * 1024), headers={"content-type": "application/json"}), 413, "body")
    assert_error(client.get("/v1/items/i000/similar", params={"k": 0}), 422, "k")
    assert_error(client.get("/v1/users/sample", params={"n": 99}), 422, "n")
    assert_error(client.post("/v1/search", data={"text": "   "}), 422, "text")
    assert client.get("/v1/items/..%2F..%2Fetc%2Fpasswd/image").status_code in (404, 422)
    assert client.get("/v1/items/%2E%2E/image").status_code in (404, 422)


def bomb_png(side: int = 5000) -> bytes:
    """A tiny file that decodes to side x side pixels (a decompression bomb for our 16.7 Mpixel limit)."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


@pytest.mark.parametrize("via", ["json", "multipart"])
def test_bad_images(client: TestClient, via: str) -> None:
    def send(data: bytes, content_type: str = "image/png"):  # type: ignore[no-untyped-def]
        if via == "json":
            return client.post("/v1/recommendations", json={"image_base64": base64.b64encode(data).decode(), "k": 3})
        return client.post("/v1/search", files={"image": ("upload", data, content_type)}, data={"k": "3"})

    field = "image_base64" if via == "json" else "image"
    body = assert_error(send(b"this is not an image"), 422, field)
    assert "not an image" in body["message"]
    bomb = bomb_png()
    assert len(bomb) < 100_000
    assert_error(send(bomb), 413, field)
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    assert_error(send(gif.getvalue(), "image/png"), 415, field)
    truncated = png(400, 400)[:200]
    assert_error(send(truncated), 422, field)
    if via == "json":
        assert_error(client.post("/v1/recommendations", json={"image_base64": "%%%not base64%%%"}), 422, field)
        assert_error(client.post("/v1/recommendations", json={"image_base64": "data:text/html;base64,PGI+"}), 415, field)
    else:
        assert_error(send(png(), "text/html"), 415, field)
        assert_error(send(b"\xff" * (MAX_IMAGE_BYTES + 10)), 413, field)


def test_unexpected_error_is_clean_json_500(service: BundleService, monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        monkeypatch.setattr(service, "similar", lambda item_id, k: 1 / 0)
        response = c.get("/v1/items/i000/similar")
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error" and "ZeroDivision" not in response.text


def test_no_service_yet_is_503(tmp_path: Path) -> None:
    from serving.reload import ServiceHolder

    with TestClient(create_app(ServiceHolder(tmp_path))) as c:
        assert c.get("/ready").status_code == 503
        assert_error(c.post("/v1/candidates", json={}), 503, "no model bundle")


# ---------------------------------------------------------------- the spec and the server agree (schemathesis --checks all)


def request_schema_accepts(client: TestClient, component: str, payload: object) -> bool:
    """Whether the OpenAPI spec's request schema ``component`` allows ``payload``."""
    import jsonschema

    spec = client.get("/openapi.json").json()
    validator = jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{component}", "components": spec["components"]})
    return validator.is_valid(payload)


@pytest.mark.parametrize("path", ["/v1/candidates", "/v1/recommendations"])
@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])  # the fast path, the route
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"details": 0}, "details"),  # was accepted as false (pydantic's lax mode)
        ({"details": 1}, "details"),
        ({"exclude_seen": "true"}, "exclude_seen"),
        ({"k": "3"}, "k"),
        ({"k": True}, "k"),
        ({"k": 2.5}, "k"),
        ({"text_weight": "0.5"}, "text_weight"),
        ({"image_weight": False}, "image_weight"),
    ],
)
def test_json_values_of_another_type_are_rejected(client: TestClient, path: str, content_type: str, payload: dict, field: str) -> None:
    import json

    component = "CandidatesRequest" if path == "/v1/candidates" else "RecommendationsRequest"
    assert not request_schema_accepts(client, component, payload)
    body = assert_error(client.post(path, content=json.dumps(payload).encode(), headers={"content-type": content_type}), 422, field)
    assert body["fields"][0]["field"] == field


def test_json_whole_numbers_and_booleans_are_accepted(client: TestClient) -> None:
    payload = {"k": 5.0, "details": False, "exclude_seen": True, "text_weight": 1}  # 5.0 is an integer in JSON Schema
    assert request_schema_accepts(client, "CandidatesRequest", payload)
    assert len(client.post("/v1/candidates", json=payload).json()["items"]) == 5
    assert len(client.post("/v1/recommendations", json={"k": 3.0, "n_candidates": 20.0}).json()["items"]) == 3


def test_filters_spec_and_server_agree(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    filters = spec["components"]["schemas"]["CandidatesRequest"]["properties"]["filters"]
    # Every key must match the pattern (before: patternProperties left other keys unconstrained).
    assert "patternProperties" not in filters
    assert filters["propertyNames"] == {"pattern": "^[A-Za-z0-9_]{1,64}$"}
    assert filters["additionalProperties"] == {"type": "array", "items": {"type": "string", "maxLength": 200}}
    for path in ("/v1/candidates", "/v1/recommendations"):
        assert spec["paths"][path]["post"]["responses"]["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}

    # A key the spec forbids: the spec and the server both reject it.
    for payload in ({"filters": {"u:ó!": [{"x": 1}]}}, {"filters": {"a b": ["x"]}}, {"filters": {"product_type": [1]}}):
        assert not request_schema_accepts(client, "CandidatesRequest", payload)
        body = assert_error(client.post("/v1/candidates", json=payload), 422, "filters")
        assert body["fields"][0]["field"].startswith("filters.")
    # A well-formed key that is not a catalogue column: allowed by the spec, a documented 422 naming it.
    payload = {"filters": {"nope": ["x"]}}
    assert request_schema_accepts(client, "CandidatesRequest", payload)
    for path in ("/v1/candidates", "/v1/recommendations"):
        body = assert_error(client.post(path, json=payload), 422, "filters.nope")
        assert body["fields"] == [{"field": "filters.nope", "problem": body["fields"][0]["problem"]}]
        assert "unknown" in body["message"] and "product_type" in body["message"]  # lists the columns it can filter on
    assert client.post("/v1/candidates", json={"filters": {"product_type": ["boots"]}, "k": 3}).status_code == 200


def test_search_image_is_a_binary_upload(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body_schema = spec["paths"]["/v1/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    image = spec["components"]["schemas"][body_schema]["properties"]["image"]
    # Binary, not `anyOf: [binary, null]` (which clients send as a plain text field such as "null").
    assert image["type"] == "string" and image["format"] == "binary" and image["contentMediaType"] == "application/octet-stream"
    assert "anyOf" not in image
    # A file part, and a part without a filename (e.g. `curl -F image=<photo.png`), are both read as the image.
    assert len(client.post("/v1/search", files={"image": ("x.png", png(), "image/png")}, data={"k": "3"}).json()["items"]) == 3
    assert len(client.post("/v1/search", files={"image": (None, png())}, data={"k": "3"}).json()["items"]) == 3
    # Text that is not an image: 422 naming the field, not "Expected UploadFile".
    body = assert_error(client.post("/v1/search", files={"image": (None, "null")}, data={"k": "3"}), 422, "image")
    assert "not an image" in body["message"]


@pytest.mark.parametrize(
    ("request_args", "field"),
    [
        ({"method": "GET", "url": "/v1/items/i000/similar?details=0"}, "details"),  # was read as false
        ({"method": "GET", "url": "/v1/items/i000/similar?details=yes"}, "details"),
        ({"method": "GET", "url": "/v1/items/i000/similar?k=%2B3"}, "k"),  # "+3"
        ({"method": "GET", "url": "/v1/items/i000/similar?k=3.5"}, "k"),
        ({"method": "GET", "url": "/v1/users/sample?n=1_0"}, "n"),
        ({"method": "GET", "url": "/v1/users/u001?n_recent=%2B0.0"}, "n_recent"),
        ({"method": "POST", "url": "/v1/search", "data": {"text": "red", "details": "0"}}, "details"),
        ({"method": "POST", "url": "/v1/search", "data": {"text": "red", "text_weight": "+0.5"}}, "text_weight"),
        ({"method": "POST", "url": "/v1/search", "data": {"text": "red", "text_weight": ""}}, "text_weight"),  # was the default
        ({"method": "POST", "url": "/v1/search", "data": {"text": "red", "k": ""}}, "k"),
    ],
)
def test_query_and_form_values_must_spell_their_type(client: TestClient, request_args: dict, field: str) -> None:
    body = assert_error(client.request(**request_args), 422, field)
    assert body["fields"][0]["field"] == field


def test_query_and_form_values_in_json_spelling_are_accepted(client: TestClient, service: BundleService) -> None:
    assert len(client.get("/v1/items/i000/similar", params={"k": "3.0", "details": "false"}).json()["items"]) == 3
    assert len(client.get("/v1/users/sample", params={"n": "2"}).json()["users"]) == 2
    found = client.post("/v1/search", data={"text": "red", "k": "2.0", "text_weight": "1e-1", "details": "true"}).json()["items"]
    assert len(found) == 2 and found[0]["item"]["name"]
