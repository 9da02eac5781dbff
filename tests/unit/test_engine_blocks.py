"""Protects batch ranking in blocks of users: the lists are those of one pass over every user."""

from __future__ import annotations

from pathlib import Path

import pytest

import features.engine as engine_module
from tests.unit.serving_fixtures import shop_service


def test_ranking_users_in_blocks_gives_the_one_pass_lists(shop_bundle_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = shop_service(shop_bundle_path).engine
    users = engine.data.user_index.ids[:23].tolist()
    candidates = engine.generator.generate(users)
    monkeypatch.setattr(engine_module, "RANK_BLOCK", 10**6)
    one_pass = engine.rank_users(users, 12, candidates)
    monkeypatch.setattr(engine_module, "RANK_BLOCK", 5)  # 23 users: four full blocks and a short one
    assert engine.rank_users(users, 12, candidates) == one_pass
    assert list(one_pass) == users and all(len(v) == 12 for v in one_pass.values())


def test_batch_ranking_does_not_build_the_per_request_history_lookup(shop_bundle_path: Path) -> None:
    """Offline evaluation ranks in batches; the lookup a server needs per request was 1.2 GB at 100x."""
    service = shop_service(shop_bundle_path)
    assert service.engine._states_lookup is not None, "a server groups the histories at load, not in a request"
    engine = engine_module.RecommendationEngine(service.config, service.data, service.engine.generator, service.engine.vectors, service.engine.ranker)
    users = engine.data.user_index.ids[:7].tolist()
    assert engine.rank_users(users, 12) == service.engine.rank_users(users, 12)
    assert engine._states_lookup is None
    engine.warm_up()
    assert engine._states_lookup is not None
