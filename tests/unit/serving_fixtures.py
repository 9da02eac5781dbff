"""A real development service trained on the synthetic shop, shared by the serving unit tests."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import make_shop, shop_config

from serving.dev_service import DevService, DevSettings


def shop_service(root: Path) -> DevService:
    """Train the dev service on a fresh synthetic shop below ``root`` (~2 s)."""
    data = make_shop(root / "shop", n_users=60, n_items=36)
    config = shop_config(data, root / "work")
    return DevService.train(config, DevSettings(days=8, als_factors=8, als_iterations=4, per_source=20, rerank_rounds=10))
