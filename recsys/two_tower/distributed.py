"""Entry point for the two-tower early-stopping run, alone or under torchrun.

    python -m recsys.two_tower.distributed --config configs/hm.yaml --out artifacts/two_tower_dist
    torchrun --nproc_per_node=2 -m recsys.two_tower.distributed --config configs/hm.yaml --out ...

It fits on the split's training window and stops early on its validation window (never the
test window). Every rank builds the same features (deterministic, so identical); embedding
tables are sharded across ranks by DistributedModelParallel over gloo. Rank 0 writes
``result.json`` (per-epoch loss, validation recall, examples/s, world size) and the weights
(``tower.safetensors`` + ``spec.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch.distributed as dist  # noqa: E402

from recsys.atomic import write_json  # noqa: E402
from recsys.config import load_config  # noqa: E402
from recsys.data import TrainingData, load_dataset, split_by_time  # noqa: E402
from recsys.two_tower.recommender import TwoTowerRecommender, holdout  # noqa: E402

log = logging.getLogger("recsys.two_tower.distributed")


def run(config_path: str, out: Path, overrides: dict[str, object] | None = None) -> dict[str, object]:
    """Run the early-stopping training on the split's train/validation windows.

    Args:
        config_path: project YAML.
        out: result folder (written by rank 0).
        overrides: nested config overrides (e.g. ``{"retrieval": {"two_tower": {"max_epochs": 3}}}``).

    Returns:
        The result summary (identical on every rank).
    """
    config = load_config(config_path, overrides)
    dataset = load_dataset(config.data)
    split = split_by_time(dataset.interactions, config.split)
    window = TrainingData.build(split.history, dataset.items, dataset.users, as_of=split.test_start)
    model = TwoTowerRecommender.from_config(config)
    vectors = model.features.vectors()
    inner, truth = holdout(window, config.retrieval.two_tower.validation_days)
    result = model.early_stopping_run(inner, truth, vectors)
    world = dist.get_world_size() if dist.is_initialized() else 1
    summary: dict[str, object] = {
        "world_size": world,
        "best_epoch": result.best_epoch,
        "best_recall": result.best_recall,
        "epochs": result.epochs,
        "history": result.history,
        "seconds": result.seconds,
        "examples_per_second": result.examples_per_second,
        "validation_users": len(truth),
    }
    if not dist.is_initialized() or dist.get_rank() == 0:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        tower = model.last_tower
        assert tower is not None  # set by early_stopping_run
        save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(out / "tower.safetensors"))
        (out / "spec.json").write_text(json.dumps(dataclasses.asdict(tower.spec)))
        write_json(out / "result.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--config``, ``--out``, ``--override``; joins torchrun's process group when launched by it.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0).
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/hm.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--override", default="{}", help="JSON of nested config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [rank %(process)d] %(name)s: %(message)s")
    started = False
    if "RANK" in os.environ and not dist.is_initialized():
        dist.init_process_group("gloo")
        started = True
    try:
        summary = run(args.config, args.out, json.loads(args.override))
        log.info("best validation recall %.4f at epoch %s", summary["best_recall"], summary["best_epoch"])
    finally:
        if started:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
