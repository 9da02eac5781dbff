"""End-to-end fixtures: the development bundle trained on the H&M sample, and the real server in a subprocess.

The bundle is what `make serve-dev` serves: `recsys train` on configs/hm_dev.yaml (3% of the
customers, stand-in content encoder; about a minute), copied as two versions plus a tampered copy,
so reload and checksum rejection are exercised for real on a production bundle.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.bundle import copy_bundle, set_latest
from recsys.config import PROJECT_ROOT, load_config
from tests.e2e.live import Server, ServerError, free_port, run_server, stop  # noqa: F401  (re-exported for the tests)
from training.pipeline import Pipeline

VERSIONS = ("v-e2e-a", "v-e2e-b")
BROKEN = "v-e2e-broken"


@pytest.fixture(scope="session")
def e2e_bundles(hm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundles folder with two good versions of the H&M development bundle and one with a bad checksum."""
    root = tmp_path_factory.mktemp("e2e")
    config = load_config(PROJECT_ROOT / "configs" / "hm_dev.yaml", overrides={"work_dir": str(root / "work"), "data": {"data_dir": str(hm_dir)}})
    trained = Pipeline(config).run().bundle
    bundles = root / "bundles"
    for version in (*VERSIONS, BROKEN):
        copy_bundle(trained, bundles, version)
    target = bundles / BROKEN / "generator" / "als" / "arrays.npz"
    data = bytearray(target.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte: same size, wrong checksum
    target.write_bytes(bytes(data))
    set_latest(bundles, VERSIONS[0])
    return bundles


@pytest.fixture(scope="session")
def server(e2e_bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server (1 worker) shared by the server, property-based and browser tests."""
    try:
        with run_server(e2e_bundles, tmp_path_factory.mktemp("server") / "server.log") as running:
            yield running
    except ServerError as exc:
        pytest.fail(str(exc))
