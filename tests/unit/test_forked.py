"""forked_map and recommend_in_blocks: batch scoring over forked workers gives the lists of one process.

Protects: results come back in block order whatever the number of workers; the work may close
over objects that cannot be pickled (fitted models); a worker's exception reaches the caller and
a worker that dies (e.g. killed for memory) fails the call instead of hanging it; the evaluation's
lists are the model's own, the same for 1 and 2 workers.
"""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

import recsys.evaluation.protocol as protocol
from recsys.config import ProjectConfig
from recsys.data import TrainingData, load_dataset, split_by_time
from recsys.forked import forked_map
from recsys.registry import build_model
from tests.conftest import make_shop, shop_config


def test_results_come_back_in_block_order_for_any_number_of_workers() -> None:
    lock = threading.Lock()  # unpicklable: the work is inherited by the fork, never pickled
    blocks = [list(range(i, i + 3)) for i in range(0, 30, 3)]

    def work(block: list[int]) -> tuple[int, ...]:
        with lock:
            return tuple(x * x for x in block)

    serial = forked_map(work, blocks, workers=1)
    assert serial == [tuple(x * x for x in b) for b in blocks]
    assert forked_map(work, blocks, workers=2) == serial
    assert forked_map(work, blocks, workers=5) == serial


def test_a_workers_error_reaches_the_caller() -> None:
    def work(block: int) -> int:
        if block == 3:
            raise ValueError("block 3 is broken")
        return block

    with pytest.raises(ValueError, match="block 3 is broken"):
        forked_map(work, list(range(6)), workers=2)


def test_a_worker_that_dies_fails_the_call_instead_of_hanging_it() -> None:
    parent = os.getpid()

    def work(block: int) -> int:
        if block == 2 and os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
        return block

    with pytest.raises(RuntimeError, match="a worker died"):
        forked_map(work, list(range(6)), workers=2)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProjectConfig, TrainingData]:
    tmp = tmp_path_factory.mktemp("forked")
    config = shop_config(make_shop(tmp / "shop"), tmp / "work")
    ds = load_dataset(config.data)
    split = split_by_time(ds.interactions, config.split)
    return config, TrainingData.build(split.history, ds.items, ds.users, as_of=split.test_start)


@pytest.mark.parametrize("name", ["popularity", "als"])
def test_evaluation_lists_are_the_models_own_for_one_or_two_workers(world: tuple[ProjectConfig, TrainingData], name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = world
    model = build_model(name, config).fit(data)
    users = data.user_index.ids[:40].tolist() + ["nobody-knows-me"]
    monkeypatch.setattr(protocol, "EVALUATION_BLOCK", 7)  # several blocks, the last one short
    for exclude in (False, True):
        expected = model.recommend(users, 10, exclude_seen=exclude).as_dict()
        assert protocol.recommend_in_blocks(model, users, 10, exclude, workers=1) == expected
        assert protocol.recommend_in_blocks(model, users, 10, exclude, workers=2) == expected


def test_popularity_ranks_the_catalogue_once_with_the_lists_of_per_user_scoring(world: tuple[ProjectConfig, TrainingData]) -> None:
    from recsys.models.base import ScoringRecommender

    config, data = world
    model = build_model("popularity", config).fit(data)
    assert isinstance(model, ScoringRecommender)
    users = data.user_index.ids[:25].tolist() + ["nobody-knows-me"]
    for exclude in (False, True):
        fast = model.top_rows(users, 8, exclude)
        per_user = ScoringRecommender.top_rows(model, users, 8, exclude)  # the generic path: every user's scores partitioned
        for a, b in zip(fast[0] + fast[1], per_user[0] + per_user[1]):
            np.testing.assert_array_equal(a, b)
