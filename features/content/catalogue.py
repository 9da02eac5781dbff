"""The catalogue as content-encoder inputs: item texts, photo paths, product groups and types."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from features.content.text import join_parts, render_texts
from recsys.content_config import ContentConfig
from recsys.data import Dataset

log = logging.getLogger(__name__)


@dataclass
class CatalogueInputs:
    """Per-item inputs, in catalogue order.

    Attributes:
        item_ids: external ids.
        texts: the full item text (the ``content.text_parts`` joined).
        parts: per part template, one text per item (``parts[p][i]``).
        views: short texts per item, one list per ``content.short_views`` template.
        image_paths: photo path per item ("" when there is none).
        has_image: bool per item.
        groups: product group per item (H&M: ``product_code``; colour variants share it), used so
            held-out products do not leak through a variant.
        types: product type name per item ("" when unknown).
    """

    item_ids: np.ndarray
    texts: list[str]
    parts: list[list[str]]
    views: list[list[str]]
    image_paths: list[str]
    has_image: np.ndarray
    groups: np.ndarray
    types: np.ndarray

    @property
    def n(self) -> int:
        """Number of catalogue items."""
        return len(self.item_ids)


def catalogue_inputs(dataset: Dataset, config: ContentConfig, group_column: str | None = None, type_column: str | None = None) -> CatalogueInputs:
    """Build every encoder input from the validated data set.

    Args:
        dataset: the loaded data set (its ``items`` and ``images``).
        config: the ``content`` section (templates).
        group_column: product grouping column; the item id itself when None or absent.
        type_column: product type column for zero-shot evaluation ("" for every item when None or absent).
    """
    items = dataset.items
    item_ids = items["item_id"].cast(pl.String).to_numpy().astype(str)
    # A catalogue without text has one empty part per item (its text vectors are zero).
    parts = [render_texts(items, t) for t in config.text_parts] or [[""] * items.height]
    texts = [join_parts(p) for p in zip(*parts)]
    views = [render_texts(items, t) for t in config.short_views]
    has_image = items["has_image"].to_numpy().astype(bool) if "has_image" in items.columns else np.zeros(len(item_ids), bool)
    paths = []
    for item_id, ok in zip(item_ids.tolist(), has_image.tolist()):
        p = dataset.images.path_for(item_id) if ok else None
        paths.append(str(p) if p is not None else "")
    has_image &= np.array([bool(p) for p in paths], dtype=bool)
    groups = items[group_column].cast(pl.String).to_numpy().astype(str) if group_column and group_column in items.columns else item_ids
    types = items[type_column].fill_null("").cast(pl.String).to_numpy().astype(str) if type_column and type_column in items.columns else np.full(len(item_ids), "")
    log.info("catalogue: %d items, %d with a photo, %d product groups", len(item_ids), int(has_image.sum()), len(set(groups.tolist())))
    return CatalogueInputs(item_ids, texts, parts, views, paths, has_image, groups, types)
