"""One validated data set: interactions, catalogue, optional customers and images."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys.config import DataConfig
from recsys.data.images import ImageStore, check_decodable
from recsys.data.loading import load_interactions, load_items, load_users
from recsys.data.report import DataValidationError, ValidationIssue, ValidationReport

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """Everything the pipeline reads, validated.

    Attributes:
        interactions: canonical interactions (see :mod:`recsys.data.loading`).
        items: the catalogue with ``item_id`` first and a boolean ``has_image`` column.
        users: customer attributes keyed by ``user_id`` (None when not configured).
        images: resolves an item's photo.
        report: every finding of the load.
        fingerprint: a hash of the input files' names, sizes and mtimes (for run tracking).
    """

    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame | None
    images: ImageStore
    report: ValidationReport = field(default_factory=ValidationReport)
    fingerprint: str = ""


def file_fingerprint(paths: list[Path]) -> str:
    """A cheap, stable fingerprint of input files (name, size, mtime); changes when a file changes.

    Args:
        paths: the input files (order does not matter).

    Returns:
        16 hex characters.
    """
    h = hashlib.sha256()
    for p in sorted(paths):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def load_dataset(config: DataConfig) -> Dataset:
    """Load, validate and cross-check the configured files.

    Args:
        config: the data section of the project config.

    Returns:
        The validated :class:`Dataset`.

    Raises:
        DataValidationError: a file or row fails validation under the ``fail`` policy; the message
            names the file, the column, the count and example values.
    """
    report = ValidationReport()
    policy = config.validation
    inter_path = config.resolve(config.interactions.path)
    items_path = config.resolve(config.items.path)
    assert inter_path is not None and items_path is not None
    items = load_items(items_path, config.items, policy, report)
    interactions = load_interactions(inter_path, config.interactions, policy, report)
    if config.user_sample is not None:
        interactions = sample_users(interactions, config.user_sample, report, str(inter_path))

    if config.catalogue == "interacted":
        before = items.height
        items = items.filter(pl.col("item_id").is_in(interactions["item_id"].implode()))
        report.add(ValidationIssue(str(items_path), config.items.columns.item_id, "catalogue='interacted': items never interacted with left out by config", before - items.height, [], "info", f"dropped {before - items.height:,} rows"))
        report.counts["items_loaded"] = items.height
    known = interactions["item_id"].is_in(items["item_id"].implode())
    unknown = int((~known).sum())
    if unknown:
        examples = interactions.filter(~known)["item_id"].unique(maintain_order=True).head(policy.max_examples).to_list()
        issue = ValidationIssue(str(inter_path), config.interactions.columns.item_id, "item not in the catalogue", unknown, examples)
        if policy.unknown_items == "fail":
            report.add(issue)
            raise DataValidationError([issue])
        if policy.unknown_items == "drop":
            interactions = interactions.filter(known)
            report.counts["interactions_loaded"] = interactions.height
            issue = ValidationIssue(issue.file, issue.column, issue.problem, unknown, examples, "warning", f"dropped {unknown:,} rows")
        else:
            issue = ValidationIssue(issue.file, issue.column, issue.problem, unknown, examples, "warning", "kept")
        report.add(issue)

    images = ImageStore(config.resolve(config.items.image_dir), config.items.image_template)
    items = _attach_images(items, images, config, report)

    users = None
    if config.users is not None:
        users_path = config.resolve(config.users.path)
        assert users_path is not None
        users = load_users(users_path, config.users, policy, report)

    files = [p for p in (inter_path, items_path, config.resolve(config.users.path) if config.users else None) if p]
    dataset = Dataset(interactions, items, users, images, report, file_fingerprint(files))
    log.info("loaded data set:\n%s", report.describe())
    return dataset


def sample_users(interactions: pl.DataFrame, share: float, report: ValidationReport, file: str) -> pl.DataFrame:
    """Keep a stable share of users (by a hash of the id), reported so the cut is never silent.

    Args:
        interactions: canonical interactions.
        share: fraction of users to keep (0..1).
        report: receives an ``info`` finding with the dropped row count.
        file: the interactions file (named in the finding).

    Returns:
        The kept users' interactions.
    """
    keep = (pl.col("user_id").hash(seed=0) % 10_000) < int(share * 10_000)
    kept = interactions.filter(keep)
    dropped = interactions.height - kept.height
    report.add(ValidationIssue(file, "user_id", f"user_sample={share}: interactions of other users left out by config", dropped, [], "info", f"dropped {dropped:,} rows"))
    report.counts["interactions_loaded"] = kept.height
    return kept


def _attach_images(items: pl.DataFrame, images: ImageStore, config: DataConfig, report: ValidationReport) -> pl.DataFrame:
    """Add ``has_image``; missing photos are normal (reported as info), undecodable ones follow the policy."""
    policy = config.validation
    ids = items["item_id"].to_list()
    if images.root is None or policy.check_images == "none":
        has = [images.root is not None] * len(ids) if policy.check_images == "none" else [False] * len(ids)
        return items.with_columns(pl.Series("has_image", has))
    if not images.root.is_dir():
        raise DataValidationError([ValidationIssue(str(images.root), "", "image folder not found", len(ids))])
    has = images.existing(ids)
    missing = len(ids) - sum(has)
    report.counts["items_with_image"] = sum(has)
    if missing:
        report.add(
            ValidationIssue(str(images.root), "image", "items without an image file (text/metadata only)", missing, [i for i, h in zip(ids, has) if not h][: policy.max_examples], "info", "kept")
        )
    if policy.check_images == "decode":
        bad: list[tuple[str, str]] = []
        for i, (item_id, present) in enumerate(zip(ids, has)):
            if not present:
                continue
            path = images.path_for(item_id)
            reason = check_decodable(path) if path else "unsafe id"
            if reason:
                bad.append((item_id, f"{path}: {reason}"))
                has[i] = False
        if bad:
            issue = ValidationIssue(
                str(images.root), "image", "image file cannot be decoded", len(bad), [b[1] for b in bad[: policy.max_examples]]
            )
            if policy.on_error == "fail":
                report.add(issue)
                raise DataValidationError([issue])
            report.add(
                ValidationIssue(issue.file, issue.column, issue.problem, issue.count, issue.examples, "warning", "treated as items without an image")
            )
    return items.with_columns(pl.Series("has_image", has, dtype=pl.Boolean))
