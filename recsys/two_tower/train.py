"""The training loop, always through torchrec's DistributedModelParallel.

A single process runs as a one-rank gloo group, so one code path serves both a laptop and
``torchrun --nproc_per_node=N``: the embedding tables are sharded (one rank: table-wise on it;
several: the item table column-wise across ranks, the small tables table-wise) and updated by
torchrec's fused Adagrad in the backward pass, which touches only the rows a batch used
(a dense Adagrad over a 105k-row table made each step 3-4x slower). Dense layers use Adam.
Every rank takes its slice of the same global batch; validation runs on every rank (identical
inputs), so early stopping decides the same way everywhere.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import faiss
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward as apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from recsys.config import TwoTowerConfig
from recsys.evaluation.metrics import recall_at_k
from recsys.two_tower.batching import make_batch
from recsys.two_tower.features import ItemTable, Queries, ValidationSet
from recsys.two_tower.loss import log_sampling_probability, sampled_softmax_loss
from recsys.two_tower.model import TowerSpec, TwoTower
from recsys.two_tower.ranks import TrainingJob, next_job, share

if TYPE_CHECKING:
    from torch.distributed._shard.sharded_tensor import ShardedTensor

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        epochs: epochs run.
        best_epoch: epoch (1-based) of the best validation recall (= epochs without validation).
        best_recall: that recall (nan without validation).
        history: per-epoch loss, recall, seconds and examples/s.
        seconds: total training time (without feature building).
        examples_per_second: training examples per second over all epochs (all ranks together).
    """

    epochs: int = 0
    best_epoch: int = 0
    best_recall: float = float("nan")
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    examples_per_second: float = 0.0


def is_distributed() -> bool:
    """Whether a torch.distributed process group is already running (e.g. under torchrun)."""
    return dist.is_available() and dist.is_initialized()


@contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """Yield (world size, rank); outside torchrun a one-rank gloo group lives for the block."""
    if is_distributed():
        yield dist.get_world_size(), dist.get_rank()
        return
    with tempfile.TemporaryDirectory(prefix="recsys-pg-") as tmp:
        # A file store needs no free port, so parallel test runs cannot collide.
        store = dist.FileStore(f"{tmp}/store", 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        try:
            yield 1, 0
        finally:
            dist.destroy_process_group()


def build_model(spec: TowerSpec, config: TwoTowerConfig) -> tuple[nn.Module, TwoTower, torch.optim.Optimizer]:
    """The sharded model and its optimizer (call inside :func:`process_group`).

    Args:
        spec: table and feature sizes.
        config: seed and learning rates (embedding Adagrad, dense Adam).

    Returns:
        (DistributedModelParallel module, the TwoTower inside it, combined optimizer).
    """
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation

    torch.manual_seed(config.seed)
    tower = TwoTower(spec)
    apply_optimizer_in_backward(torch.optim.Adagrad, tower.ebc.parameters(), {"lr": config.embedding_learning_rate})
    world = dist.get_world_size()
    constraints = {
        name: ParameterConstraints(sharding_types=["table_wise"], compute_kernels=["fused"])
        for name in ["t_user", "t_item", *(f"t_{c}" for c in spec.categories)]
    }
    if world > 1:
        # The item table is split across ranks by embedding columns (torchrec offers no row-wise
        # sharding on CPU); the small tables are placed whole on one rank each.
        constraints["t_item"] = ParameterConstraints(sharding_types=["column_wise"], compute_kernels=["fused"])
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=world, compute_device="cpu"),
        constraints=constraints,
        storage_reservation=FixedPercentageStorageReservation(0.15),
    )
    plan = planner.collective_plan(tower, pg=dist.GroupMember.WORLD)
    with warnings.catch_warnings():
        # torchrec 1.8 still hands DDP the deprecated broadcast_buffers argument.
        warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
        module = DistributedModelParallel(tower, device=torch.device("cpu"), plan=plan)
    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(module.named_parameters())),
        lambda params: torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay),
    )
    return module, tower, CombinedOptimizer([module.fused_optimizer, dense])


@torch.no_grad()
def item_vectors(module: nn.Module, spec: TowerSpec, items: ItemTable, batch_size: int = 8192) -> np.ndarray:
    """Item-tower vectors for the whole catalogue (ids hidden for items never bought in training).

    Args:
        module: the (sharded) two-tower model; left in eval mode.
        spec: feature layout.
        items: per-item features.
        batch_size: items per forward pass.

    Returns:
        (n_items, output_dim) float32.
    """
    module.eval()
    out: np.ndarray | None = None
    for start in range(0, items.n_items, batch_size):
        rows = np.arange(start, min(start + batch_size, items.n_items))
        b = make_batch(spec, None, items, rows)
        out = _write_rows(out, items.n_items, start, module(b.features, b.user_dense, b.item_dense)[1][: len(rows)])
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def _write_rows(out: np.ndarray | None, n: int, start: int, block: torch.Tensor) -> np.ndarray:
    """Write a batch's vectors into the (n, d) float32 result, allocated at the first batch.

    One preallocated result instead of a list of batches, its concatenation and a float32 copy:
    three copies of (n x 448) floats were a 3.6 GB spike for the 100x catalogue's 619k items,
    at every epoch's validation, and 6 GB for its 1.2M users' vectors.
    """
    if out is None:
        out = np.empty((n, block.shape[1]), dtype=np.float32)
    out[start : start + len(block)] = block.numpy()
    return out


@torch.no_grad()
def user_vectors(module: nn.Module, spec: TowerSpec, items: ItemTable, queries: Queries, batch_size: int = 4096) -> np.ndarray:
    """User-tower vectors for queries.

    Args:
        module: the (sharded) two-tower model; left in eval mode.
        spec: feature layout.
        items: per-item features (for the history bags).
        queries: one row per user query.
        batch_size: queries per forward pass.

    Returns:
        (len(queries), output_dim) float32; (0, 0) when there are no queries.
    """
    module.eval()
    out: np.ndarray | None = None
    for start in range(0, len(queries), batch_size):
        idx = np.arange(start, min(start + batch_size, len(queries)))
        b = make_batch(spec, queries.subset(idx), items, np.empty(0, dtype=np.int64))
        out = _write_rows(out, len(queries), start, module(b.features, b.user_dense, b.item_dense)[0][: len(idx)])
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def validation_recall(module: nn.Module, spec: TowerSpec, items: ItemTable, validation: ValidationSet, k: int) -> float:
    """Mean Recall@k of the exact top k over the whole catalogue (the project's recall_at_k).

    Args:
        module: the (sharded) two-tower model.
        spec: feature layout.
        items: per-item features.
        validation: queries and their catalogue rows bought in the validation window.
        k: list length.

    Returns:
        The mean recall (nan without queries).
    """
    v = item_vectors(module, spec, items)
    u = user_vectors(module, spec, items, validation.queries)
    if not len(u):
        return float("nan")
    # FAISS's blocked exact search (BLAS products, a heap per query): a dense score matrix and a
    # partition per query cost ~10x more, which on a 10x log (255k items, ~100k validation queries)
    # made each epoch's validation take longer than the epoch. Near-ties may order differently,
    # which moves a recall only when they straddle the k-th place.
    _, top = faiss.knn(np.ascontiguousarray(u, dtype=np.float32), np.ascontiguousarray(v, dtype=np.float32), min(k, len(v)), metric=faiss.METRIC_INNER_PRODUCT)
    recalls = [recall_at_k(row.tolist(), truth.tolist(), k) for row, truth in zip(top, validation.truth)]
    return float(np.mean(recalls))


def train(
    spec: TowerSpec,
    config: TwoTowerConfig,
    items: ItemTable,
    queries: Queries,
    targets: np.ndarray,
    validation: ValidationSet | None = None,
    epochs: int | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[TwoTower, TrainResult]:
    """Train the towers; with ``validation``, stop early on Recall@k and keep the best weights.

    Args:
        spec: tower sizes.
        config: hyper-parameters.
        items: item features.
        queries: one query per training example.
        targets: (n,) positive catalogue row per query.
        validation: held-out queries and truth for early stopping (None: run ``epochs``).
        epochs: fixed epoch count (default ``config.max_epochs``).
        on_epoch: called with (epoch, metrics) after each epoch (e.g. MLflow logging).

    Returns:
        (the trained TwoTower, unwrapped from any DistributedModelParallel, and the run summary).
    """
    shared = share(TrainingJob(spec, config, items, queries, targets, validation, epochs))
    try:
        with process_group() as (world, rank), _threads(config), _in_backward_optimizers_released():
            return _train(spec, config, items, queries, targets, validation, epochs, on_epoch, world, rank)
    finally:
        if shared is not None:
            shutil.rmtree(shared, ignore_errors=True)


def follow() -> int:
    """A follower rank's life under torchrun: train every run rank 0 shares, until it says stop.

    Returns:
        How many runs this rank joined.
    """
    done = 0
    while (job := next_job()) is not None:
        run_job(job)
        done += 1
    log.info("rank %d: released after %d two-tower run(s)", dist.get_rank(), done)
    return done


def run_job(job: TrainingJob) -> TrainResult:
    """A follower rank's part of one shared training run (see :mod:`recsys.two_tower.ranks`).

    Args:
        job: the run's inputs, as rank 0 shared them.

    Returns:
        The run summary (the same on every rank); the weights are rank 0's to keep.
    """
    with process_group() as (world, rank), _threads(job.config), _in_backward_optimizers_released():
        _, result = _train(job.spec, job.config, job.items, job.queries, job.targets, job.validation, job.epochs, None, world, rank)
    return result


@contextmanager
def _in_backward_optimizers_released() -> Iterator[None]:
    """Forget, on the way out, the in-backward optimizers a training run registered with torch.

    ``_apply_optimizer_in_backward`` keeps each parameter it is given in module-level weak maps
    whose values (the parameter's gradient accumulator, hooks closing over its Adagrad optimizer)
    hold the parameter, so the weak keys never die: every run leaked its unsharded embedding
    tables and their Adagrad sums (~0.9 GB per run at the 100x rung, so a label fold started
    1.7 GB higher after the first fold's two runs).
    """
    registry = importlib.import_module("torch.distributed.optim.apply_optimizer_in_backward")
    before = {id(p) for p in registry.param_to_acc_grad_map.keys()}
    try:
        yield
    finally:
        for param in [p for p in registry.param_to_acc_grad_map.keys() if id(p) not in before]:
            for handle in registry.param_to_optim_hook_handle_map.pop(param, []):
                handle.remove()
            registry.param_to_acc_grad_map.pop(param, None)
            for attr in ("_in_backward_optimizers", "_optimizer_classes", "_optimizer_kwargs"):
                if hasattr(param, attr):
                    delattr(param, attr)


@contextmanager
def _threads(config: TwoTowerConfig) -> Iterator[None]:
    """torch's intra-op threads: ``config.threads``, split while training between the ranks that share a machine.

    Ranks on one machine (torchrun's ``LOCAL_WORLD_SIZE``) each get their share of ``config.threads``
    for the run: a full thread pool per rank would oversubscribe the cores. Afterwards the process
    (rank 0 goes on to compute every user's vector) has all of ``config.threads`` again.
    """
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if is_distributed() else 1
    torch.set_num_threads(max(1, config.threads // max(local, 1)))
    try:
        yield
    finally:
        torch.set_num_threads(config.threads)


def _train(
    spec: TowerSpec,
    config: TwoTowerConfig,
    items: ItemTable,
    queries: Queries,
    targets: np.ndarray,
    validation: ValidationSet | None,
    epochs: int | None,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
    world: int,
    rank: int,
) -> tuple[TwoTower, TrainResult]:
    module, tower, optimizer = build_model(spec, config)
    counts = torch.from_numpy(items.target_counts.astype(np.float32))
    candidates = np.flatnonzero(items.known) if items.known.any() else np.arange(items.n_items)
    local_batch = max(2, config.batch_size // world)
    global_batch = local_batch * world
    n = len(targets)
    # A big window trains on a fresh draw of ``epoch_examples`` each epoch: an epoch's cost stays flat.
    per_epoch = min(n, config.epoch_examples) if config.epoch_examples else n
    steps = max(1, per_epoch // global_batch)
    max_epochs = epochs or config.max_epochs
    result = TrainResult()
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs, start_all, seen = 0, time.perf_counter(), 0
    log.info(
        "two-tower: %d examples (%d drawn per epoch), %d steps/epoch of %d (x%d ranks), up to %d epochs",
        n, per_epoch, steps, local_batch, world, max_epochs,
    )
    for epoch in range(1, max_epochs + 1):
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(n)
        drop_item = rng.random(n) < config.id_dropout
        drop_user = rng.random(n) < config.user_id_dropout
        cold = drop_item & (rng.random(n) < config.cold_simulation)
        module.train()
        t0, total = time.perf_counter(), 0.0
        for step in range(steps):
            idx = order[step * global_batch + rank * local_batch : step * global_batch + (rank + 1) * local_batch]
            extra = rng.choice(candidates, size=config.extra_negatives) if config.extra_negatives else np.empty(0, np.int64)
            rows = np.concatenate([targets[idx], extra])
            pad = np.zeros(len(extra), dtype=bool)
            drops, colds = np.concatenate([drop_item[idx], pad]), np.concatenate([cold[idx], pad])
            batch = make_batch(spec, queries.subset(idx), items, rows, drop_item_id=drops, drop_user_id=drop_user[idx], cold_dense=colds)
            users, cands = module(batch.features, batch.user_dense, batch.item_dense)
            log_q = None
            if config.logq_correction:
                log_q = log_sampling_probability(counts, torch.from_numpy(rows), len(idx), len(extra), len(candidates))
            loss = sampled_softmax_loss(users[: len(idx)], cands[: len(rows)], torch.from_numpy(rows), log_q, config.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            if (step + 1) % max(1, steps // 4) == 0:
                rate = (step + 1) * global_batch / (time.perf_counter() - t0)
                log.info("epoch %d step %d/%d loss %.4f (%.0f examples/s)", epoch, step + 1, steps, total / (step + 1), rate)
        seconds = time.perf_counter() - t0
        seen += steps * global_batch
        if world > 1:  # report the loss averaged over ranks, not rank 0's half of the batch
            summed = torch.tensor([total])
            dist.all_reduce(summed)
            total = float(summed[0]) / world
        metrics = {"loss": total / steps, "examples": float(steps * global_batch), "epoch_seconds": seconds, "examples_per_second": steps * global_batch / seconds}
        if validation is not None:
            metrics[f"val_recall_at_{config.validation_k}"] = validation_recall(module, spec, items, validation, config.validation_k)
        result.history.append(metrics)
        result.epochs = epoch
        log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if validation is None:
            result.best_epoch = epoch
            continue
        recall = metrics[f"val_recall_at_{config.validation_k}"]
        if not recall <= result.best_recall:  # also true for the first (nan best)
            result.best_recall, result.best_epoch, bad_epochs = recall, epoch, 0
            best_state = full_state(tower)
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                log.info("early stop after epoch %d (best %d: recall %.4f)", epoch, result.best_epoch, result.best_recall)
                break
    result.seconds = time.perf_counter() - start_all
    result.examples_per_second = seen / max(result.seconds, 1e-9)
    # Hand back a plain, unsharded module (usable after the process group is gone).
    plain = TwoTower(spec)
    plain.load_state_dict(best_state if best_state is not None else full_state(tower))
    plain.eval()
    return plain, result


def full_state(tower: TwoTower) -> dict[str, torch.Tensor]:
    """The whole state dict as plain tensors on every rank (collective: all ranks must call it).

    Args:
        tower: the (possibly sharded) model being trained.

    Returns:
        Parameter name -> full tensor; sharded tables are gathered into whole CPU tensors.
    """
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    with warnings.catch_warnings():
        # torchrec 1.8 stores sharded tables as ShardedTensor, which torch marks deprecated.
        warnings.filterwarnings("ignore", message="Please use DTensor instead", category=FutureWarning)
        return _full_state(tower, ShardedTensor)


def _full_state(tower: TwoTower, sharded: type[ShardedTensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in tower.state_dict().items():
        if isinstance(value, sharded):
            full = torch.zeros(value.size(), dtype=value.dtype)
            if dist.get_world_size() == 1:
                for shard in value.local_shards():
                    offsets = shard.metadata.shard_offsets
                    sizes = shard.metadata.shard_sizes
                    full[offsets[0] : offsets[0] + sizes[0], offsets[1] : offsets[1] + sizes[1]] = shard.tensor
            else:
                value.gather(dst=0, out=full if dist.get_rank() == 0 else None)
                dist.broadcast(full, src=0)
            out[key] = full
        else:
            out[key] = value.detach().clone()
    return out
