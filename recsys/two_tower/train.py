"""The training loop: one process, or several under torchrun with DistributedModelParallel.

Sparse tables are updated by Adagrad applied in the backward pass (torchrec's fused optimizer
when sharded), dense layers by Adam. Under torchrun every rank takes its slice of the same
global batch; validation runs on every rank (identical inputs), so early stopping decides the
same way everywhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward as apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from recsys.config import TwoTowerConfig
from recsys.evaluation.metrics import recall_at_k, top_k_indices
from recsys.two_tower.batching import make_batch
from recsys.two_tower.features import ItemTable, Queries
from recsys.two_tower.loss import log_sampling_probability, sampled_softmax_loss
from recsys.two_tower.model import TowerSpec, TwoTower

log = logging.getLogger(__name__)


@dataclass
class ValidationSet:
    """Queries with their ground truth (catalogue rows bought in the validation window)."""

    queries: Queries
    truth: list[np.ndarray]


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
    return dist.is_available() and dist.is_initialized()


def build_model(spec: TowerSpec, config: TwoTowerConfig) -> tuple[nn.Module, TwoTower, torch.optim.Optimizer]:
    """The model (wrapped in DistributedModelParallel when a process group is up) and its optimizer.

    Returns:
        (module to call, the underlying TwoTower, optimizer).
    """
    torch.manual_seed(config.seed)
    tower = TwoTower(spec)
    apply_optimizer_in_backward(torch.optim.Adagrad, tower.ebc.parameters(), {"lr": config.embedding_learning_rate})
    module: nn.Module = tower
    if is_distributed():
        from torchrec.distributed import DistributedModelParallel as DMP
        from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology

        world = dist.get_world_size()
        # Shard the big item table by rows across ranks, the rest table-wise: the layout a catalogue
        # that outgrows one machine would use.
        constraints = {"t_item": ParameterConstraints(sharding_types=["row_wise"])}
        for name in ["t_user", *(f"t_{c}" for c in spec.categories)]:
            constraints[name] = ParameterConstraints(sharding_types=["table_wise"])
        planner = EmbeddingShardingPlanner(topology=Topology(world_size=world, compute_device="cpu"), constraints=constraints)
        plan = planner.collective_plan(tower, pg=dist.GroupMember.WORLD)
        module = DMP(tower, device=torch.device("cpu"), plan=plan)
        sparse_opt = module.fused_optimizer
        dense = KeyedOptimizerWrapper(
            dict(in_backward_optimizer_filter(module.named_parameters())), lambda p: torch.optim.Adam(p, lr=config.learning_rate, weight_decay=config.weight_decay)
        )
        return module, tower, CombinedOptimizer([sparse_opt, dense])
    dense_params = [p for n, p in tower.named_parameters() if not n.startswith("ebc.")]
    return module, tower, torch.optim.Adam(dense_params, lr=config.learning_rate, weight_decay=config.weight_decay)


@torch.no_grad()
def item_vectors(module: nn.Module, spec: TowerSpec, items: ItemTable, batch_size: int = 8192) -> np.ndarray:
    """Item-tower vectors for the whole catalogue (ids hidden for items never bought in training)."""
    module.eval()
    out = []
    for start in range(0, items.n_items, batch_size):
        rows = np.arange(start, min(start + batch_size, items.n_items))
        b = make_batch(spec, None, items, rows)
        out.append(module(b.features, b.user_dense, b.item_dense)[1][: len(rows)].numpy())
    return np.concatenate(out).astype(np.float32)


@torch.no_grad()
def user_vectors(module: nn.Module, spec: TowerSpec, items: ItemTable, queries: Queries, batch_size: int = 4096) -> np.ndarray:
    """User-tower vectors for queries."""
    module.eval()
    out = []
    for start in range(0, len(queries), batch_size):
        idx = np.arange(start, min(start + batch_size, len(queries)))
        b = make_batch(spec, queries.subset(idx), items, np.empty(0, dtype=np.int64))
        out.append(module(b.features, b.user_dense, b.item_dense)[0][: len(idx)].numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def validation_recall(module: nn.Module, spec: TowerSpec, items: ItemTable, validation: ValidationSet, k: int) -> float:
    """Mean Recall@k of the exact top k over the whole catalogue (the project's recall_at_k)."""
    v = item_vectors(module, spec, items)
    u = user_vectors(module, spec, items, validation.queries)
    recalls = []
    for start in range(0, len(u), 512):
        top = top_k_indices(u[start : start + 512] @ v.T, k)
        for row, truth in zip(top, validation.truth[start : start + 512]):
            recalls.append(recall_at_k(row.tolist(), truth.tolist(), k))
    return float(np.mean(recalls)) if recalls else float("nan")


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
    torch.set_num_threads(config.threads)
    world, rank = (dist.get_world_size(), dist.get_rank()) if is_distributed() else (1, 0)
    module, tower, optimizer = build_model(spec, config)
    counts = torch.from_numpy(items.target_counts.astype(np.float32))
    candidates = np.flatnonzero(items.known) if items.known.any() else np.arange(items.n_items)
    local_batch = max(2, config.batch_size // world)
    global_batch = local_batch * world
    n = len(targets)
    steps = max(1, n // global_batch)
    max_epochs = epochs or config.max_epochs
    result = TrainResult()
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs, start_all, seen = 0, time.perf_counter(), 0
    log.info("two-tower: %d examples, %d steps/epoch of %d (x%d ranks), up to %d epochs", n, steps, local_batch, world, max_epochs)
    for epoch in range(1, max_epochs + 1):
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(n)
        drop_item = rng.random(n) < config.id_dropout
        drop_user = rng.random(n) < config.user_id_dropout
        module.train()
        t0, total = time.perf_counter(), 0.0
        for step in range(steps):
            idx = order[step * global_batch + rank * local_batch : step * global_batch + (rank + 1) * local_batch]
            extra = rng.choice(candidates, size=config.extra_negatives) if config.extra_negatives else np.empty(0, np.int64)
            rows = np.concatenate([targets[idx], extra])
            drops = np.concatenate([drop_item[idx], np.zeros(len(extra), dtype=bool)])
            batch = make_batch(spec, queries.subset(idx), items, rows, drop_item_id=drops, drop_user_id=drop_user[idx])
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
        metrics = {"loss": total / steps, "epoch_seconds": seconds, "examples_per_second": steps * global_batch / seconds}
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
            best_state = _local_state(tower)
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                log.info("early stop after epoch %d (best %d: recall %.4f)", epoch, result.best_epoch, result.best_recall)
                break
    result.seconds = time.perf_counter() - start_all
    result.examples_per_second = seen / max(result.seconds, 1e-9)
    if best_state is not None:
        _load_local_state(tower, best_state)
    return tower, result


def _local_state(tower: TwoTower) -> dict[str, torch.Tensor] | None:
    """A copy of the weights to restore the best epoch; None when sharded (the last epoch is kept)."""
    if is_distributed():
        return None
    return {k: v.detach().clone() for k, v in tower.state_dict().items()}


def _load_local_state(tower: TwoTower, state: dict[str, torch.Tensor]) -> None:
    tower.load_state_dict(state)


def gather_state(tower: TwoTower) -> dict[str, torch.Tensor]:
    """A full, unsharded state dict (collective: every rank must call it; rank 0 gets the tables)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    out: dict[str, torch.Tensor] = {}
    for key, value in tower.state_dict().items():
        if isinstance(value, ShardedTensor):
            full = torch.zeros(value.size()) if dist.get_rank() == 0 else None
            value.gather(dst=0, out=full)
            if full is not None:
                out[key] = full
        else:
            out[key] = value.detach().clone()
    return out
