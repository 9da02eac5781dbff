"""Two-tower training over several torchrun ranks inside one ``recsys train``.

    torchrun --standalone --nproc_per_node=2 -m training.cli train --config configs/hm.yaml
    make train NPROC=2

Rank 0 runs the whole pipeline; every other rank only joins the two-tower's training runs. When
rank 0 reaches :func:`recsys.two_tower.train.train` it writes that run's inputs (tower sizes,
config, item table, training examples, validation queries) as ``.npy`` files under the work dir
and broadcasts the folder; the followers open them memory-mapped (on one machine the page cache
holds one copy; across machines the work dir must be a shared filesystem), train on their slice
of every global batch in the same DistributedModelParallel group, and wait for the next run.
Rank 0 releases them when the pipeline ends, also when it fails.

The rest of the pipeline (ALS, features, search, LightGBM) stays on rank 0, so extra ranks pay off
only while the two-tower trains; their idle wait is a blocking socket read, not a busy loop.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist

from recsys.atomic import write_dir
from recsys.config import TwoTowerConfig
from recsys.two_tower.features import ItemTable, Queries, ValidationSet
from recsys.two_tower.spec import TowerSpec

log = logging.getLogger(__name__)

# Followers wait in a collective while rank 0 runs hours of other stages between two-tower runs.
WAIT_TIMEOUT = dt.timedelta(days=2)
STOP = "stop"


@dataclass
class TrainingJob:
    """The inputs of one two-tower training run, as rank 0 hands them to the other ranks.

    Attributes:
        spec: tower sizes.
        config: hyper-parameters.
        items: item features.
        queries: one query per training example.
        targets: (n,) positive catalogue row per query.
        validation: held-out queries with their truth rows, or None (a fixed epoch count).
        epochs: the fixed epoch count, or None.
    """

    spec: TowerSpec
    config: TwoTowerConfig
    items: ItemTable
    queries: Queries
    targets: np.ndarray
    validation: ValidationSet | None
    epochs: int | None

    def save(self, directory: Path) -> Path:
        """Write the job as ``job.json`` and one ``.npy`` per array (atomically: temp folder, then rename).

        Args:
            directory: the job's folder.

        Returns:
            ``directory``.
        """

        def populate(tmp: Path) -> None:
            items = {f.name: getattr(self.items, f.name) for f in dataclasses.fields(self.items)}
            arrays: dict[str, np.ndarray] = {
                **{f"items_{k}": v for k, v in items.items() if isinstance(v, np.ndarray)},
                **self.queries.arrays("queries"),
                "targets": self.targets,
            }
            if self.validation is not None:
                arrays.update(self.validation.queries.arrays("validation"))
                lengths = np.array([len(t) for t in self.validation.truth], dtype=np.int64)
                arrays["truth_indptr"] = np.concatenate([np.zeros(1, np.int64), np.cumsum(lengths)])
                arrays["truth_rows"] = np.concatenate([*self.validation.truth, np.zeros(0, np.int64)]).astype(np.int64)
            for name, value in arrays.items():
                np.save(tmp / f"{name}.npy", value, allow_pickle=False)
            meta = {
                "spec": dataclasses.asdict(self.spec),
                "config": self.config.model_dump(mode="json"),
                "items": {k: v for k, v in items.items() if not isinstance(v, np.ndarray)},
                "has_validation": self.validation is not None,
                "epochs": self.epochs,
            }
            (tmp / "job.json").write_text(json.dumps(meta))

        return write_dir(directory, populate)

    @classmethod
    def load(cls, directory: Path) -> TrainingJob:
        """Open a saved job, its arrays memory-mapped (read-only: training never writes them).

        Args:
            directory: a folder written by :meth:`save`.

        Returns:
            The job.
        """
        meta = json.loads((directory / "job.json").read_text())

        def array(name: str) -> np.ndarray:
            return np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)

        names = [f.name for f in dataclasses.fields(ItemTable)]
        fields: dict[str, Any] = {n: meta["items"][n] if n in meta["items"] else array(f"items_{n}") for n in names}
        items = ItemTable(**fields)
        queries = Queries(**{f.name: array(f"queries_{f.name}") for f in dataclasses.fields(Queries)})
        validation = None
        if meta["has_validation"]:
            indptr, rows = array("truth_indptr"), np.asarray(array("truth_rows"))
            truth = [rows[indptr[i] : indptr[i + 1]] for i in range(len(indptr) - 1)]
            validation = ValidationSet(Queries(**{f.name: array(f"validation_{f.name}") for f in dataclasses.fields(Queries)}), truth)
        return cls(TowerSpec.from_dict(meta["spec"]), TwoTowerConfig(**meta["config"]), items, queries, array("targets"), validation, meta["epochs"])


@dataclass
class _Leader:
    """Rank 0's side: where jobs are written and how many have been handed out."""

    exchange_dir: Path
    jobs: int = 0


_leader: _Leader | None = None


def world() -> tuple[int, int]:
    """(world size, rank) of the torchrun launch this process belongs to; (1, 0) outside torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


@contextmanager
def rank_group(exchange_dir: Path) -> Iterator[int]:
    """Join torchrun's gloo group for a whole ``recsys train``; yield this process's rank.

    On rank 0 the block runs the pipeline and every two-tower run inside it is shared with the
    other ranks (:func:`share`); they are released when the block ends, however it ends. Outside
    torchrun (or with one rank) this yields 0 and changes nothing.

    Args:
        exchange_dir: where rank 0 writes the jobs (under the work dir; shared by every rank).

    Yields:
        The rank.
    """
    global _leader
    size, rank = world()
    if size <= 1:
        yield 0
        return
    dist.init_process_group("gloo", timeout=WAIT_TIMEOUT)
    try:
        if rank == 0:
            _leader = _Leader(exchange_dir)
            try:
                yield 0
            finally:
                _leader = None
                _broadcast(STOP)
                shutil.rmtree(exchange_dir, ignore_errors=True)
        else:
            yield rank
    finally:
        dist.destroy_process_group()


def share(job: TrainingJob) -> Path | None:
    """On rank 0 inside :func:`rank_group`: hand ``job`` to the other ranks before training it.

    Args:
        job: the run's inputs.

    Returns:
        The job's folder (remove it once the run is over), or None where no ranks follow this
        process (outside torchrun, or a torchrun launch where every rank trains on its own, as
        ``recsys.two_tower.distributed`` does).
    """
    if _leader is None:
        return None
    _leader.jobs += 1
    directory = job.save(_leader.exchange_dir / f"job-{_leader.jobs:03d}")
    log.info("two-tower run %d shared with %d other rank(s) through %s", _leader.jobs, dist.get_world_size() - 1, directory)
    _broadcast(str(directory))
    return directory


def next_job() -> TrainingJob | None:
    """On a follower rank: wait for rank 0's next shared run (see :func:`recsys.two_tower.train.follow`).

    Returns:
        The run's inputs, or None when rank 0 has released the followers.
    """
    message = _broadcast(None)
    return None if message == STOP else TrainingJob.load(Path(message))


def _broadcast(message: str | None) -> Any:
    """Rank 0's message to every rank (its argument is ignored elsewhere)."""
    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]
