"""The production service over the synthetic shop's bundle (``shop_bundle_path`` in tests/conftest.py).

The serving unit tests run on exactly what production runs: the pipeline's stages (stand-in
content encoder, ALS, two-tower, candidates, LambdaRank ranker, evaluation) write a verified
bundle, and :class:`~serving.bundle_service.BundleService` loads it.
"""

from __future__ import annotations

from pathlib import Path

from recsys.bundle import load_bundle
from serving.bundle_service import BundleService


def shop_service(bundle_path: Path) -> BundleService:
    """The production service over a verified bundle folder (each caller gets its own instance)."""
    return BundleService(load_bundle(bundle_path))
