"""Bundle reload: atomic swap, in-flight requests finish on the old service, broken bundles are refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recsys.bundle import copy_bundle, load_bundle, set_latest
from serving.app import create_app
from serving.bundle_service import BundleService
from serving.reload import ReloadError, ServiceHolder, load_service
from serving.service import Query, ScoredItem


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, shop_bundle_path: Path) -> Path:
    """Two good bundle versions and a tampered copy of one, below one bundles folder."""
    root = tmp_path_factory.mktemp("reload")
    trained = load_bundle(shop_bundle_path)
    for version in ("v-a", "v-b", "v-broken"):
        copy_bundle(trained, root / "bundles", version)
    ranker = root / "bundles" / "v-broken" / "ranker" / "ranker.txt"
    ranker.write_text(ranker.read_text().replace("tree", "TREE", 1))  # same size class, wrong checksum
    set_latest(root / "bundles", "v-a")
    return root / "bundles"


@pytest.fixture
def client(bundles: Path) -> Iterator[tuple[TestClient, ServiceHolder]]:
    holder = ServiceHolder(bundles, bundle_path=bundles / "v-a", service=load_service(bundles / "v-a"))
    with TestClient(create_app(holder)) as c:
        yield c, holder


def test_reload_swaps_versions(client: tuple[TestClient, ServiceHolder], bundles: Path) -> None:
    c, holder = client
    assert c.get("/ready").json()["model_version"] == "v-a"
    r = c.post("/admin/reload", json={"version": "v-b"})
    assert r.json() == {"status": "reloaded", "previous_version": "v-a", "model_version": "v-b"}
    assert c.post("/v1/candidates", json={"k": 2}).json()["model_version"] == "v-b"
    assert c.post("/admin/reload", json={"version": "v-b"}).json()["status"] == "unchanged"
    r = c.post("/admin/reload")  # no body: follow the latest pointer
    assert r.json()["model_version"] == "v-a"
    metrics = c.get("/metrics").text
    assert 'recsys_model_info{version="v-a"} 1.0' in metrics and 'recsys_model_info{version="v-b"} 0.0' in metrics
    assert 'recsys_model_reloads_total{outcome="reloaded"} 2.0' in metrics


def test_broken_bundle_is_rejected_and_old_keeps_serving(client: tuple[TestClient, ServiceHolder]) -> None:
    c, _ = client
    r = c.post("/admin/reload", json={"version": "v-broken"})
    assert r.status_code == 409
    assert "checksum mismatch" in r.json()["message"] and "still serving v-a" in r.json()["message"]
    assert c.post("/v1/candidates", json={"k": 2}).json()["model_version"] == "v-a"
    r = c.post("/admin/reload", json={"version": "v-missing"})
    assert r.status_code == 404 and "version" in r.json()["message"]
    assert c.post("/admin/reload", json={"version": "../etc"}).status_code == 422
    assert 'recsys_model_reloads_total{outcome="rejected"} 2.0' in c.get("/metrics").text


def test_admin_token(bundles: Path) -> None:
    holder = ServiceHolder(bundles, bundle_path=bundles / "v-a", service=load_service(bundles / "v-a"))
    with TestClient(create_app(holder, admin_token="s3cret")) as c:
        assert c.post("/admin/reload").status_code == 403
        assert c.post("/admin/reload", headers={"X-Admin-Token": "s3cret"}).status_code == 200


class _Gate:
    """A service wrapper whose candidates() waits until released: a request 'in flight'."""

    def __init__(self, inner: BundleService):
        self.inner = inner
        self.entered, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    @property
    def version(self) -> str:
        return self.inner.version

    def candidates(self, query: Query) -> list[ScoredItem]:
        if query.k == 7:
            self.entered.set()
            assert self.release.wait(10)
        return self.inner.candidates(query)


def test_in_flight_request_finishes_on_old_service(bundles: Path) -> None:
    old = _Gate(BundleService.load(bundles / "v-a"))
    holder = ServiceHolder(bundles, bundle_path=bundles / "v-a", service=old)  # type: ignore[arg-type]
    results: dict[str, str] = {}
    with TestClient(create_app(holder)) as c:
        slow = threading.Thread(target=lambda: results.update(slow=c.post("/v1/candidates", json={"k": 7}).json()["model_version"]))
        slow.start()
        assert old.entered.wait(10)
        assert c.post("/admin/reload", json={"version": "v-b"}).json()["model_version"] == "v-b"
        results["new"] = c.post("/v1/candidates", json={"k": 3}).json()["model_version"]
        old.release.set()
        slow.join(10)
    assert results == {"slow": "v-a", "new": "v-b"}


def test_holder_without_root_cannot_reload(bundles: Path) -> None:
    holder = ServiceHolder(None, service=load_service(bundles / "v-a"))
    with pytest.raises(ReloadError, match="without a bundles folder"):
        holder.reload()


def test_pointer_watch_reloads_when_latest_moves(bundles: Path) -> None:
    import asyncio

    holder = ServiceHolder(bundles, bundle_path=bundles / "v-a", service=load_service(bundles / "v-a"))

    async def run() -> None:
        task = asyncio.create_task(holder.watch_pointer(0.05))
        set_latest(bundles, "v-b")
        try:
            for _ in range(200):
                await asyncio.sleep(0.05)
                if holder.version == "v-b":
                    break
        finally:
            task.cancel()
            set_latest(bundles, "v-a")

    asyncio.run(run())
    assert holder.version == "v-b"
