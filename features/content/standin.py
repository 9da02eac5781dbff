"""A stand-in content encoder: TF-IDF of the catalogue text reduced with truncated SVD.

It is a real (if shallow) content signal behind the :class:`~features.content.vectors.ItemVectors`
interface, so retrieval and candidates can be built and measured before the learned encoders
(features/content, issue 3) land. Switching to those is a file change: every consumer reads the
configured ``retrieval.content_vectors`` path and only falls back to these vectors when it is absent.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from features.content.vectors import ItemVectors, l2_normalise

log = logging.getLogger(__name__)

ENCODER = "standin-tfidf-svd"


def catalogue_text(items: pl.DataFrame, columns: list[str]) -> list[str]:
    """One lower-cased string per catalogue row from the configured text columns (nulls skipped).

    Raises:
        ValueError: a configured column is missing from the catalogue.
    """
    missing = [c for c in columns if c not in items.columns]
    if missing:
        raise ValueError(f"catalogue has no text column(s) {missing}; available: {items.columns}")
    if not columns:
        raise ValueError("data.items.columns.text is empty: the stand-in encoder needs text columns")
    parts = [pl.col(c).cast(pl.Utf8).fill_null("") for c in columns]
    return items.select(pl.concat_str(parts, separator=" . ").str.to_lowercase().alias("t"))["t"].to_list()


def build_standin_vectors(items: pl.DataFrame, text_columns: list[str], dim: int = 128, seed: int = 0) -> ItemVectors:
    """TF-IDF (words and bigrams) -> truncated SVD -> L2-normalised ``dim``-d vectors.

    Args:
        items: the catalogue (``item_id`` first; ``has_image`` is copied when present).
        text_columns: columns joined into each item's text.
        dim: output size (clipped below the vocabulary size for tiny catalogues).
        seed: SVD seed.

    Returns:
        ItemVectors with ``text`` = ``fused`` = the SVD vectors and zero ``image`` rows, labelled
        ``encoder="standin-tfidf-svd"``.
    """
    from sklearn.decomposition import TruncatedSVD  # imported here: only the stand-in needs scikit-learn
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = catalogue_text(items, text_columns)
    tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2 if len(texts) > 1000 else 1, sublinear_tf=True, dtype=np.float32)
    matrix = tfidf.fit_transform(texts)
    k = max(1, min(dim, matrix.shape[1] - 1, matrix.shape[0] - 1))
    log.info("stand-in content vectors: %d items, vocabulary %d, SVD to %d dims", matrix.shape[0], matrix.shape[1], k)
    reduced = TruncatedSVD(n_components=k, random_state=seed, algorithm="randomized", n_iter=4).fit_transform(matrix)
    vectors = np.zeros((len(texts), dim), dtype=np.float32)
    vectors[:, :k] = l2_normalise(reduced.astype(np.float32))
    has_image = items["has_image"].to_numpy() if "has_image" in items.columns else np.zeros(len(texts), dtype=bool)
    return ItemVectors(
        item_ids=np.asarray(items["item_id"].to_list(), dtype=str),
        image=np.zeros_like(vectors),
        text=vectors,
        fused=vectors.copy(),
        has_image=has_image.astype(bool),
        encoder=f"{ENCODER}-{dim}",
    )


def load_or_build(path: Path, standin_path: Path, items: pl.DataFrame, text_columns: list[str], dim: int = 128) -> ItemVectors:
    """The configured content vectors when present, else the cached stand-in (built on first use).

    Args:
        path: the real ItemVectors file (from the content encoders).
        standin_path: where the stand-in is cached.
        items: the catalogue (used only to build the stand-in).
        text_columns: catalogue text columns.
        dim: stand-in size.
    """
    if path.is_file():
        vectors = ItemVectors.load(path)
        log.info("content vectors from %s (encoder %s, %d items x %d)", path, vectors.encoder, len(vectors.item_ids), vectors.dim)
        return vectors
    if standin_path.is_file():
        vectors = ItemVectors.load(standin_path)
        if len(vectors.item_ids) == items.height and vectors.encoder == f"{ENCODER}-{dim}":
            log.warning("%s not found: using cached stand-in content vectors %s", path, standin_path)
            return vectors
    log.warning("%s not found: building stand-in content vectors (%s) at %s", path, ENCODER, standin_path)
    vectors = build_standin_vectors(items, text_columns, dim)
    vectors.save(standin_path)
    return vectors
