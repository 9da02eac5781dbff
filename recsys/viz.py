"""Pictures people would rather look at than read: product image grids and comparison plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# No matplotlib.use() here: notebooks keep their inline backend, and headless scripts get
# matplotlib's automatic Agg fallback.
import matplotlib.pyplot as plt
import polars as pl
from matplotlib.figure import Figure
from PIL import Image

from recsys.atomic import atomic_path
from recsys.data.images import ImageStore


def _thumbnail(images: ImageStore, item_id: str, size: tuple[int, int] = (112, 168)) -> Image.Image | None:
    path = images.path_for(item_id)
    if path is None or not path.is_file():
        return None
    with Image.open(path) as img:
        return img.convert("RGB").resize(size)


def image_grid(
    rows: Sequence[tuple[str, Sequence[str]]],
    images: ImageStore,
    items: pl.DataFrame | None = None,
    label_column: str | None = None,
    hits: Sequence[set[str]] | None = None,
    max_cols: int = 8,
) -> Figure:
    """A grid of product photos: one row per (row label, item ids); a grey placeholder where no photo exists.

    Args:
        rows: (label, item ids) per row, e.g. ("history", [...]), ("variant A", [...]).
        images: resolves photos by item id.
        items: catalogue for captions (``item_id`` + ``label_column``).
        label_column: caption column (the config's ``data.items.columns.name``); None: the item id.
        hits: per row, items to mark with a green frame (e.g. bought on the test day).
        max_cols: photos per row.
    """
    named = items is not None and label_column is not None and label_column in items.columns
    names = dict(zip(items["item_id"].to_list(), items[label_column].to_list())) if named and items is not None and label_column is not None else {}
    n_rows = max(len(rows), 1)
    fig, axes = plt.subplots(n_rows, max_cols, figsize=(max_cols * 1.5, n_rows * 2.5), squeeze=False)
    for r, (label, ids) in enumerate(rows):
        for c in range(max_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(ids):
                ax.axis("off")
                continue
            item = ids[c]
            thumb = _thumbnail(images, item)
            if thumb is None:
                ax.set_facecolor("#e5e5e5")
                ax.text(0.5, 0.5, "no photo", ha="center", va="center", fontsize=8, color="#666", transform=ax.transAxes)
            else:
                ax.imshow(thumb)
            caption = str(names.get(item, item))[:18]
            ax.set_xlabel(caption, fontsize=7)
            hit = hits is not None and r < len(hits) and item in hits[r]
            for spine in ax.spines.values():
                spine.set_edgecolor("#1a9850" if hit else "#cccccc")
                spine.set_linewidth(3 if hit else 0.5)
        axes[r][0].set_ylabel(label, fontsize=9, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 80) -> Path:
    """Save a figure as PNG atomically and close it.

    Args:
        fig: the figure.
        path: the ``.png`` file.
        dpi: resolution.

    Returns:
        ``path``.
    """
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
