"""The content stage of a training run (MLflow-tracked): backbone features (cached) -> alignment -> evaluation -> item vectors.

``recsys content`` and ``recsys train`` call :func:`run_content`. With the ``clip`` backend there is
nothing to train: the catalogue is encoded with the checkpoint and evaluated on the same held-out
items; the ``standin`` backend fits its TF-IDF vocabulary on the catalogue texts in seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features.content.aligned import AlignedEncoder, Backbones
from features.content.alignment import (
    AlignmentData,
    Split,
    evaluate_embeddings,
    evaluate_heads,
    split_by_group,
    train_heads,
    zero_shot_classes,
)
from features.content.backends import build_encoder
from features.content.catalogue import CatalogueInputs, catalogue_inputs
from features.content.encoders import ContentEncoder, resolve
from features.content.heads import save_heads
from features.content.standin import StandinEncoder
from recsys.atomic import write_json
from recsys.config import ProjectConfig
from recsys.content_config import ContentConfig
from recsys.data import Dataset
from recsys.vectors import ItemVectors, l2_normalise
from training.tracking import log_metrics, start_run

log = logging.getLogger(__name__)

MIN_ALIGNMENT_PHOTOS = 50  # fewer photo-text pairs than this cannot train alignment heads


@dataclass
class ContentResult:
    """What one run of the content stage produced."""

    vectors_path: Path | None
    encoder: str
    metrics: dict[str, float] = field(default_factory=dict)
    heads_dir: Path | None = None
    run_id: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def content_config(config: ProjectConfig) -> ContentConfig:
    """The project's ``content`` section (defaults when the YAML has none)."""
    return config.content


def alignment_data(inputs: CatalogueInputs, backbones: Backbones, progress: bool = True) -> tuple[AlignmentData, np.ndarray]:
    """Frozen features of every item with a photo (computed once, then read from the cache).

    Returns:
        The data and the catalogue rows it covers.
    """
    rows = np.flatnonzero(inputs.has_image)
    image = backbones.images([inputs.image_paths[i] for i in rows], progress)
    texts = [inputs.texts[i] for i in rows]
    views = [[v[i] for i in rows] for v in inputs.views]
    text = backbones.item_texts([[p[i] for i in rows] for p in inputs.parts], progress)
    view_feats = np.stack([backbones.texts(v, progress) for v in views]) if views else np.zeros((0, len(rows), text.shape[1]), np.float32)
    ids: dict[str, int] = {}
    text_ids = np.array([[ids.setdefault(t, len(ids)) for t in column] for column in [texts, *views]], dtype=np.int64)
    data = AlignmentData(image, text, view_feats, text_ids, inputs.groups[rows], inputs.types[rows], inputs.item_ids[rows])
    return data, rows


def train_alignment(config: ProjectConfig, cc: ContentConfig, data: AlignmentData, backbones: Backbones) -> tuple[AlignedEncoder, dict[str, Any], Path, str | None]:
    """Train, evaluate on the held-out test groups, save a heads version and log it all to MLflow.

    Returns:
        The encoder with the new heads, the test metrics, the heads folder and the MLflow run id.
    """
    a = cc.alignment
    split = split_by_group(data.groups, a.holdout_share, a.validation_share, a.seed)
    classes = zero_shot_classes(data.types, np.arange(data.n), cc.evaluation.zero_shot_types)
    log.info("alignment split: %d train / %d validation / %d test items", len(split.train), len(split.validation), len(split.test))

    def prompt_features(texts: list[str]) -> np.ndarray:
        return backbones.texts(texts, progress=False)

    with _tracker(config, cc) as run:
        run_id = run.info.run_id
        heads, history = train_heads(data, split, a, cc.evaluation, prompt_features, on_epoch=_epoch_logger())
        metrics = evaluate_heads(heads, data, split.test, cc.evaluation, prompt_features, classes, seed=a.seed)
        metrics.update({"train_items": float(len(split.train)), "validation_items": float(len(split.validation)), "test_items": float(len(split.test))})
        metrics.update({"best_epoch": float(history.best_epoch + 1), "train_seconds": history.seconds})
        manifest = {
            "backbones": backbones.identities,
            "alignment": a.model_dump(),
            "evaluation": cc.evaluation.model_dump(),
            "zero_shot_classes": classes,
            "metrics": metrics,
            "history": history.epochs,
            "mlflow_run_id": run_id,
        }
        heads_dir = save_heads(heads, resolve(config.work_path, cc.heads_dir), manifest)
        import mlflow

        log_metrics({k: v for k, v in metrics.items() if "/" not in k}, prefix="test_")
        mlflow.log_artifacts(str(heads_dir), artifact_path=f"heads/{heads_dir.name}")
        mlflow.set_tag("heads_version", heads_dir.name)
    log.info("alignment test metrics: %s", {k: round(v, 4) for k, v in metrics.items() if "/" not in k})
    return AlignedEncoder(backbones, heads, heads_dir.name), metrics, heads_dir, run_id


def _tracker(config: ProjectConfig, cc: ContentConfig) -> Any:
    """The MLflow run of the alignment training (store and experiment from training.tracking)."""
    return start_run(config, "content-alignment", params={"content": cc.model_dump(exclude={"clip"})}, tags={"stage": "content"})


def _epoch_logger() -> Any:
    return lambda epoch, metrics: log_metrics(metrics, step=epoch)


def item_vectors(inputs: CatalogueInputs, encoder: ContentEncoder, cc: ContentConfig, progress: bool = True) -> ItemVectors:
    """Image, text and fused vectors of the whole catalogue (no photo: zero image row, text-only fused)."""
    text = encoder.encode_item_texts(inputs.parts, cc.text_batch_size, progress)
    image = np.zeros_like(text)
    rows = np.flatnonzero(inputs.has_image)
    if len(rows):
        image[rows] = encoder.encode_images([inputs.image_paths[i] for i in rows], cc.image_batch_size, progress)
    fused = encoder.fuse(image, text, inputs.has_image, cc.fusion.image_weight, cc.fusion.text_weight)
    return ItemVectors(inputs.item_ids.copy(), image, l2_normalise(text), fused, inputs.has_image.copy(), encoder.identity)


def run_content(config: ProjectConfig, dataset: Dataset, train: bool = True, progress: bool = True) -> ContentResult:
    """Run the content stage and write the catalogue's :class:`ItemVectors`.

    Args:
        config: the project config (``content`` section, work dir).
        dataset: the loaded data set.
        train: for ``aligned``, train new heads (False: use the latest trained version).
        progress: show progress bars.

    Returns:
        Paths, encoder identity and held-out metrics.
    """
    cc = content_config(config)
    cache_root = resolve(config.work_path, cc.cache_dir)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    inputs = catalogue_inputs(dataset, cc, cc.group_column, cc.type_column)
    has_text = any(t.strip() for t in inputs.texts)
    photos = int(inputs.has_image.sum())
    if not has_text and not photos:
        log.warning("content: the catalogue has neither text nor photos: no content vectors; the content source, "
                    "content features and search are off")
        return ContentResult(None, "none", {"items": float(inputs.n), "photos": 0.0}, None, None, {})
    backend = cc.backend
    if backend == "aligned" and photos < MIN_ALIGNMENT_PHOTOS:
        log.warning("content: the aligned backend learns from photo-text pairs and the catalogue has %d photos; "
                    "using the standin backend (TF-IDF text%s)", photos, ", photo descriptors" if photos else "")
        backend = "standin"
    metrics: dict[str, float] = {"items": float(inputs.n), "photos": float(photos)}
    heads_dir, run_id = None, None
    encoder: ContentEncoder
    if backend == "aligned":
        backbones = Backbones(cc, cache_root)
        data, _ = alignment_data(inputs, backbones, progress)
        timings["backbone_features"] = time.perf_counter() - start
        if train:
            encoder, aligned_metrics, heads_dir, run_id = train_alignment(config, cc, data, backbones)
            metrics.update(aligned_metrics)
        else:
            encoder = build_encoder(cc, config.work_path)
        timings["alignment"] = time.perf_counter() - start - timings["backbone_features"]
    elif backend == "standin" and train:
        standin = StandinEncoder.fit(inputs.texts, cc.standin_dim, cc.alignment.seed)
        heads_dir = standin.save(resolve(config.work_path, cc.heads_dir))
        encoder = standin
    else:
        encoder = build_encoder(cc, config.work_path)
    t = time.perf_counter()
    vectors = item_vectors(inputs, encoder, cc, progress)
    if backend == "clip":
        metrics.update(evaluate_item_vectors(vectors, inputs, cc, encoder))
    timings["item_vectors"] = time.perf_counter() - t
    path = vectors.save(resolve(config.work_path, cc.vectors_path))
    log.info("wrote %s: %d items x %d (%d with image), encoder %s", path, len(vectors.item_ids), vectors.dim, int(vectors.has_image.sum()), vectors.encoder)
    result = ContentResult(path, encoder.identity, metrics, heads_dir, run_id, timings)
    write_json(path.with_name("metrics.json"), {"encoder": encoder.identity, "heads_dir": str(heads_dir) if heads_dir else None, "mlflow_run_id": run_id, "metrics": metrics, "seconds": timings}, sort_keys=True, default=float)
    return result


def heldout_items(inputs: CatalogueInputs, cc: ContentConfig) -> np.ndarray:
    """Catalogue rows of the items held out from alignment training (whole product groups).

    The same group split the alignment stage uses, so any backend (or a notebook) evaluates on
    items the heads never saw.
    """
    rows = np.flatnonzero(inputs.has_image)
    a = cc.alignment
    split: Split = split_by_group(inputs.groups[rows], a.holdout_share, a.validation_share, a.seed)
    return rows[split.test]


def evaluate_item_vectors(vectors: ItemVectors, inputs: CatalogueInputs, cc: ContentConfig, encoder: ContentEncoder) -> dict[str, float]:
    """Held-out alignment quality of finished item vectors (``clip`` runs, notebooks).

    Args:
        vectors: item vectors in catalogue order (as ``inputs``).
        inputs: the catalogue inputs (groups, types).
        cc: the content section (split shares, evaluation settings).
        encoder: encodes zero-shot prompts into the same space.

    Returns:
        The metrics of :func:`evaluate_embeddings`.
    """
    return evaluate_embeddings(
        vectors.image, vectors.text, inputs.groups, inputs.types, heldout_items(inputs, cc), cc.evaluation,
        lambda texts: encoder.encode_texts(texts, progress=False), seed=cc.alignment.seed,
        classes=zero_shot_classes(inputs.types, np.flatnonzero(inputs.has_image), cc.evaluation.zero_shot_types),
    )
