"""Contrastive alignment of the projection heads (LiT: locked towers, trained heads) and its evaluation.

Training pairs are (photo features, text features) of catalogue items. Each step pairs an item
with its full text or, with probability ``1 - full_text_share``, one of its short views
("a photo of a black dress"), so the text head learns both description-like and prompt-like
inputs. The loss is CLIP's symmetric InfoNCE with a learned temperature; texts that are
identical inside a batch (two black dresses) are treated as shared positives rather than as
negatives of each other.

Evaluation uses product groups held out from training (H&M ``product_code``: colour variants
of a held-out product are held out too).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from features.content.heads import AlignmentHeads
from features.content.text import type_prompts
from recsys.content_config import AlignmentSettings, EvaluationSettings
from recsys.evaluation.metrics import recall_at_k, top_k_indices

log = logging.getLogger(__name__)


@dataclass
class AlignmentData:
    """Frozen features of the items with a photo, in one row order.

    Attributes:
        image: (n, di) image features.
        text: (n, dt) full-text features.
        views: (v, n, dt) short-view features (v may be 0).
        text_ids: (1 + v, n) int ids of the underlying strings (equal strings, equal ids).
        groups: (n,) product group per item.
        types: (n,) product type name per item.
        item_ids: (n,) external ids.
    """

    image: np.ndarray
    text: np.ndarray
    views: np.ndarray
    text_ids: np.ndarray
    groups: np.ndarray
    types: np.ndarray
    item_ids: np.ndarray

    @property
    def n(self) -> int:
        """Number of items (rows)."""
        return len(self.image)


@dataclass
class Split:
    """Row indices of train / validation / test items (disjoint product groups)."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def split_by_group(groups: np.ndarray, test_share: float, validation_share: float, seed: int = 0) -> Split:
    """Assign whole product groups to train, validation or test.

    Args:
        groups: group label per row.
        test_share / validation_share: shares of groups (not rows) held out.
        seed: shuffles the groups.
    """
    unique = np.unique(groups)
    rng = np.random.default_rng(seed)
    shuffled = unique[rng.permutation(len(unique))]
    n_test = max(1, round(test_share * len(unique)))
    n_val = round(validation_share * len(unique))
    test_groups, val_groups = set(shuffled[:n_test].tolist()), set(shuffled[n_test : n_test + n_val].tolist())
    labels = groups.tolist()
    test = np.array([i for i, g in enumerate(labels) if g in test_groups], dtype=np.int64)
    val = np.array([i for i, g in enumerate(labels) if g in val_groups], dtype=np.int64)
    train = np.array([i for i, g in enumerate(labels) if g not in test_groups and g not in val_groups], dtype=np.int64)
    return Split(train, val, test)


def one_per_group(rows: np.ndarray, groups: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` rows with distinct groups (colour variants would make retrieval ambiguous).

    Args:
        rows: candidate rows.
        groups: group label per row of the whole data set.
        limit: most rows to return.
        seed: the order rows are considered in.

    Returns:
        The picked rows (int64), in the shuffled order.
    """
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    picked = []
    for r in rows[rng.permutation(len(rows))].tolist():
        if groups[r] not in seen:
            seen.add(groups[r])
            picked.append(r)
            if len(picked) == limit:
                break
    return np.array(sorted(picked), dtype=np.int64)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, text_ids: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch; equal texts are shared positives.

    Args:
        image / text: (b, d) unit vectors, row i of each is a pair.
        text_ids: (b,) ids of the texts.
        scale: logit scale (1 / temperature).
    """
    logits = scale * image @ text.T
    positives = (text_ids[:, None] == text_ids[None, :]).float()
    targets = positives / positives.sum(1, keepdim=True)
    loss_i2t = -(targets * logits.log_softmax(1)).sum(1).mean()
    loss_t2i = -(targets * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2


@dataclass
class TrainingHistory:
    """Per-epoch loss and validation score; the epoch whose heads were kept."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0


def train_heads(
    data: AlignmentData,
    split: Split,
    settings: AlignmentSettings,
    evaluation: EvaluationSettings,
    type_prompt_features: Callable[[list[str]], np.ndarray] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[AlignmentHeads, TrainingHistory]:
    """Train the heads on ``split.train``; keep the epoch that scores best on ``split.validation``.

    Args:
        data: frozen features.
        split: row split.
        settings: optimiser, architecture and sampling settings.
        evaluation: retrieval size and zero-shot prompts for validation.
        type_prompt_features: texts -> frozen text features (for zero-shot validation); None skips it.
        on_epoch: called with (epoch, metrics) after each epoch (MLflow logging).

    Returns:
        The best heads (eval mode) and the history.
    """
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    heads = AlignmentHeads(data.image.shape[1], data.text.shape[1], settings.dim, settings.hidden, settings.dropout, settings.temperature)
    train = split.train
    image = torch.from_numpy(data.image.astype(np.float32))
    all_text = [data.text.astype(np.float32)] + [v.astype(np.float32) for v in data.views]
    text_stack = torch.from_numpy(np.stack(all_text))  # (1 + v, n, dt)
    text_ids = torch.from_numpy(data.text_ids.astype(np.int64))
    heads.image.set_standardisation(image[train])
    heads.text.set_standardisation(text_stack[:, train].reshape(-1, text_stack.shape[-1]))
    optimiser = torch.optim.AdamW(heads.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(train) / settings.batch_size)))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=settings.learning_rate, total_steps=settings.epochs * steps_per_epoch, pct_start=0.1
    )
    n_views = text_stack.shape[0]
    history = TrainingHistory()
    best_score, best_state, since_best = -np.inf, None, 0
    start = time.perf_counter()
    for epoch in range(settings.epochs):
        heads.train()
        order = train[rng.permutation(len(train))]
        # Which text each item is paired with this epoch: the full text or one random short view.
        use_full = rng.random(len(order)) < settings.full_text_share
        view = np.where(use_full, 0, rng.integers(1, max(n_views, 2), len(order))) if n_views > 1 else np.zeros(len(order), np.int64)
        losses = []
        for s in range(0, len(order), settings.batch_size):
            rows = torch.from_numpy(order[s : s + settings.batch_size])
            v = torch.from_numpy(view[s : s + settings.batch_size])
            if len(rows) < 2:
                continue
            img = heads.image(image[rows])
            txt = heads.text(text_stack[v, rows])
            loss = contrastive_loss(img, txt, text_ids[v, rows], heads.scale)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        metrics = {"loss": float(np.mean(losses)), "temperature": float(1.0 / heads.scale.detach())}
        if len(split.validation):
            metrics.update(
                {
                    f"val_{k}": v
                    for k, v in evaluate_heads(heads, data, split.validation, evaluation, type_prompt_features, seed=settings.seed).items()
                    if "/" not in k  # per-class accuracies only in the final report
                }
            )
            score = metrics["val_t2i_recall@10"] + metrics.get("val_zero_shot_accuracy", 0.0)
        else:
            score = -metrics["loss"]
        metrics["seconds"] = time.perf_counter() - start
        history.epochs.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        log.info("epoch %d/%d: %s", epoch + 1, settings.epochs, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if score > best_score:
            best_score, best_state, since_best, history.best_epoch = score, copy.deepcopy(heads.state_dict()), 0, epoch
        else:
            since_best += 1
            if since_best >= settings.patience:
                log.info("early stop after epoch %d (best %d)", epoch + 1, history.best_epoch + 1)
                break
    if best_state is not None:
        heads.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    return heads.eval(), history


def retrieval_recalls(queries: np.ndarray, gallery: np.ndarray, ks: tuple[int, ...] = (1, 10)) -> dict[int, float]:
    """Recall@k when query i's only match is gallery row i (uses the shared metric implementation).

    Args:
        queries: (n, d) unit vectors.
        gallery: (n, d) unit vectors, row i paired with query i.
        ks: cut-offs.

    Returns:
        k -> mean recall.
    """
    scores = queries @ gallery.T
    top = top_k_indices(scores, max(ks))
    out = {}
    for k in ks:
        out[k] = float(np.mean([recall_at_k(top[i].tolist(), [i], k) for i in range(len(queries))]))
    return out


def zero_shot_classes(types: np.ndarray, rows: np.ndarray, n: int) -> list[str]:
    """The ``n`` most frequent non-empty product types among ``rows`` (ties by name).

    Args:
        types: product type per row.
        rows: the rows to count.
        n: how many types.
    """
    names, counts = np.unique(types[rows], return_counts=True)
    ranked = sorted((int(-c), str(t)) for t, c in zip(names, counts) if t)
    return [t for _, t in ranked[:n]]


def class_embeddings(classes: list[str], prompts: list[str], encode_texts: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """One unit vector per class: the mean of its prompts' embeddings (prompt ensembling).

    Args:
        classes: product types.
        prompts: templates with ``{type}``.
        encode_texts: texts -> (n, d) vectors.

    Returns:
        (len(classes), d) unit vectors.
    """
    texts = [p for c in classes for p in type_prompts(c, prompts)]
    emb = encode_texts(texts).reshape(len(classes), len(prompts), -1).mean(1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def zero_shot_predictions(
    image: np.ndarray,
    types: np.ndarray,
    rows: np.ndarray,
    classes: list[str],
    prompts: list[str],
    encode_texts: Callable[[list[str]], np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero-shot product-type predictions: each image goes to the class whose prompt embedding is nearest.

    Args:
        image: (n, d) unit image vectors.
        types: product type per row.
        rows: rows to classify (those whose type is not among ``classes`` are left out).
        classes: the candidate types.
        prompts: templates with ``{type}``; their embeddings are averaged per class.
        encode_texts: prompts -> unit vectors in the image space.

    Returns:
        (rows classified, true class index, predicted class index).
    """
    keep = rows[np.isin(types[rows], classes)]
    truth = np.array([classes.index(t) for t in types[keep]], dtype=np.int64)
    pred = (image[keep] @ class_embeddings(classes, prompts, encode_texts).T).argmax(1) if len(keep) else np.zeros(0, np.int64)
    return keep, truth, pred


def head_text_encoder(heads: AlignmentHeads, text_features: Callable[[list[str]], np.ndarray]) -> Callable[[list[str]], np.ndarray]:
    """Texts -> shared space through frozen features and the text head.

    Args:
        heads: the trained heads (its text head is used).
        text_features: texts -> frozen backbone features.

    Returns:
        A function texts -> (n, dim) vectors.
    """

    def encode(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return heads.text(torch.from_numpy(text_features(texts).astype(np.float32))).numpy()

    return encode


def evaluate_embeddings(
    image: np.ndarray,
    text: np.ndarray,
    groups: np.ndarray,
    types: np.ndarray,
    rows: np.ndarray,
    evaluation: EvaluationSettings,
    encode_texts: Callable[[list[str]], np.ndarray] | None = None,
    classes: list[str] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Held-out alignment quality of paired image and text embeddings (any backend).

    Args:
        image / text: (n, d) unit vectors of the same items.
        groups / types: product group and type per row.
        rows: held-out rows to evaluate on.
        evaluation: retrieval size and prompts.
        encode_texts: prompts -> unit vectors in the same space; None skips zero-shot.
        classes: zero-shot classes; default: the most frequent types among all rows.
        seed: which held-out items form the retrieval set.

    Returns:
        ``t2i_recall@1/@10``, ``i2t_recall@1/@10``, ``retrieval_items``, and with prompts
        ``zero_shot_accuracy`` (prompt ensemble), ``zero_shot_accuracy_single`` (first prompt only)
        and ``zero_shot_items``.
    """
    picked = one_per_group(rows, groups, evaluation.retrieval_items, seed)
    t2i, i2t = retrieval_recalls(text[picked], image[picked]), retrieval_recalls(image[picked], text[picked])
    out = {
        "t2i_recall@1": t2i[1],
        "t2i_recall@10": t2i[10],
        "i2t_recall@1": i2t[1],
        "i2t_recall@10": i2t[10],
        "retrieval_items": float(len(picked)),
    }
    classes = classes or zero_shot_classes(types, np.arange(len(types)), evaluation.zero_shot_types)
    if encode_texts is not None and len(classes) >= 2:
        keep, truth, pred = zero_shot_predictions(image, types, rows, classes, evaluation.zero_shot_prompts, encode_texts)
        _, _, pred_single = zero_shot_predictions(image, types, rows, classes, evaluation.zero_shot_prompts[:1], encode_texts)
        out["zero_shot_accuracy"] = float(np.mean(pred == truth)) if len(keep) else float("nan")
        out["zero_shot_accuracy_single"] = float(np.mean(pred_single == truth)) if len(keep) else float("nan")
        out["zero_shot_items"] = float(len(keep))
        for i, c in enumerate(classes):
            out[f"zero_shot_accuracy/{c}"] = float(np.mean(pred[truth == i] == i)) if np.any(truth == i) else float("nan")
    return out


def evaluate_heads(
    heads: AlignmentHeads,
    data: AlignmentData,
    rows: np.ndarray,
    evaluation: EvaluationSettings,
    text_features: Callable[[list[str]], np.ndarray] | None = None,
    classes: list[str] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """:func:`evaluate_embeddings` of the heads applied to frozen features (eval mode, restored after).

    Args:
        heads: the heads under evaluation.
        data: frozen features, groups and types of every item.
        rows: held-out rows to evaluate on.
        evaluation: retrieval size and prompts.
        text_features: texts -> frozen text features, for zero-shot; None skips it.
        classes: zero-shot classes; default: the most frequent types among all rows.
        seed: which held-out items form the retrieval set.
    """
    was_training = heads.training
    heads.eval()
    try:
        with torch.inference_mode():
            image = heads.image(torch.from_numpy(data.image[rows].astype(np.float32))).numpy()
            text = heads.text(torch.from_numpy(data.text[rows].astype(np.float32))).numpy()
        full_image = np.zeros((data.n, image.shape[1]), np.float32)
        full_text = np.zeros_like(full_image)
        full_image[rows], full_text[rows] = image, text
        encode = head_text_encoder(heads, text_features) if text_features is not None else None
        classes = classes or zero_shot_classes(data.types, np.arange(data.n), evaluation.zero_shot_types)
        return evaluate_embeddings(full_image, full_text, data.groups, data.types, rows, evaluation, encode, classes, seed)
    finally:
        heads.train(was_training)
