"""The ``standin`` content backend: TF-IDF + SVD text vectors and photo descriptors, fitted in seconds.

A real (if shallow) content signal for catalogues where the learned encoders are too slow or not
wanted (the development bundle, CI, a first run on a new shop). Text and photo live in separate
spaces, so the shared space is their concatenation: a text is ``[0 | text]``, a photo
``[photo | 0]``, and a fused item vector ``[w_i * photo | w_t * text]`` (renormalised). A fused
cosine is then a weighted mix of the photo cosine and the text cosine, and the two-stage search,
similar items and the ranking features work on it unchanged.

The fitted vocabulary and projection are saved as a versioned folder like the ``aligned`` heads
(``<heads_dir>/<version>/standin.npz`` and ``<heads_dir>/LATEST``), so a bundle carries the encoder
that made its vectors and can embed search queries.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from features.content.encoders import ContentEncoder
from features.content.images import ImageInput
from recsys.atomic import write_dir, write_text
from recsys.vectors import ItemVectors, l2_normalise

log = logging.getLogger(__name__)

ENCODER = "standin-tfidf-svd"
PHOTO_DIM = 64
FILE = "standin.npz"
_HUE_BINS, _SAT_BINS, _VAL_BINS = 8, 2, 2
_LAYOUT = (4, 8)  # width x height cells of the silhouette part (photos are portrait)


class StandinEncoder(ContentEncoder):
    """TF-IDF (words and bigrams, sublinear tf) reduced by truncated SVD, beside 64-d photo descriptors.

    Args:
        terms: vocabulary, column order of ``idf`` and ``components``.
        idf: (V,) inverse document frequencies.
        components: (d, V) SVD projection.
    """

    def __init__(self, terms: np.ndarray, idf: np.ndarray, components: np.ndarray):
        self.terms, self.idf, self.components = terms, idf.astype(np.float32), components.astype(np.float32)
        self.text_dim = int(components.shape[0])
        self.dim = PHOTO_DIM + self.text_dim
        digest = hashlib.sha256(self.components.tobytes() + "\n".join(terms.tolist()).encode()).hexdigest()[:12]
        self.identity = f"{ENCODER}{self.text_dim}-photo{PHOTO_DIM}-{digest}"
        self._vectorizer = _vectorizer(min_df=1)
        if len(terms):
            self._vectorizer.vocabulary_ = {t: i for i, t in enumerate(terms.tolist())}
            self._vectorizer.idf_ = self.idf.astype(np.float64)

    @classmethod
    def fit(cls, texts: Sequence[str], dim: int = 128, seed: int = 0) -> StandinEncoder:
        """Fit the text part on catalogue texts.

        Args:
            texts: one text per catalogue item.
            dim: text vector size (fewer SVD components on a tiny vocabulary; the rest stay zero).
            seed: SVD seed.

        Returns:
            The fitted encoder.

        A catalogue without words (photos only, or neither) gives an empty vocabulary: every
        text vector is then zero, and the photo part carries the content alone.
        """
        lowered = [t.lower() for t in texts]
        if not any(any(ch.isalnum() for ch in t) for t in lowered):
            log.warning("stand-in text encoder: no words in %d catalogue texts; text vectors are zero", len(lowered))
            return cls(np.zeros(0, dtype=str), np.zeros(0, dtype=np.float32), np.zeros((dim, 0), dtype=np.float32))
        tfidf = _vectorizer(min_df=2 if len(lowered) > 1000 else 1)
        try:
            matrix = tfidf.fit_transform(lowered)
        except ValueError:  # every word below min_df: keep them all
            tfidf = _vectorizer(min_df=1)
            matrix = tfidf.fit_transform(lowered)
        k = max(1, min(dim, matrix.shape[1] - 1, matrix.shape[0] - 1))
        svd = TruncatedSVD(n_components=k, random_state=seed, algorithm="randomized", n_iter=4).fit(matrix)
        components = np.zeros((dim, matrix.shape[1]), dtype=np.float32)
        components[:k] = svd.components_
        log.info("stand-in text encoder: %d texts, vocabulary %d, SVD to %d of %d dims", len(lowered), matrix.shape[1], k, dim)
        return cls(np.asarray(tfidf.get_feature_names_out(), dtype=str), tfidf.idf_, components)

    def text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """(n, text_dim) unit vectors of the text part alone; a text with no known word gives a zero row."""
        if not len(self.terms):
            return np.zeros((len(texts), self.text_dim), dtype=np.float32)
        matrix = self._vectorizer.transform([t.lower() for t in texts])
        return l2_normalise(np.asarray(matrix @ self.components.T, dtype=np.float32))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 128, progress: bool = True) -> np.ndarray:
        """(n, dim) vectors ``[0 | text]``."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, PHOTO_DIM:] = self.text_vectors(texts)
        return out

    def encode_images(self, images: Sequence[ImageInput], batch_size: int = 32, progress: bool = True) -> np.ndarray:
        """(n, dim) vectors ``[photo | 0]``.

        Raises:
            ValueError: an image cannot be decoded (the message names it).
        """
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for i, image in enumerate(images):
            out[i, :PHOTO_DIM] = _descriptor_of(image)
        return out

    def fuse(self, image: np.ndarray, text: np.ndarray, has_image: np.ndarray, image_weight: float, text_weight: float) -> np.ndarray:
        """``[w_i * photo | w_t * text] / |w|`` for every item: a missing photo is a zero block.

        Photo and text are separate blocks here, so an item without a photo must not get its text
        block at full length (the shared-space rule): its text cosine would outrank every item
        with a photo on a words-only query.
        """
        total = float(np.hypot(image_weight, text_weight))
        return ((image_weight * image + text_weight * text) / total).astype(np.float32)

    def save(self, heads_dir: str | Path) -> Path:
        """Write a new version below ``heads_dir`` and point ``LATEST`` at it.

        Args:
            heads_dir: the versions folder (``content.heads_dir``).

        Returns:
            The version folder.
        """
        version = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{self.identity.rsplit('-', 1)[-1]}"

        def populate(tmp: Path) -> None:
            np.savez(tmp / FILE, terms=self.terms, idf=self.idf, components=self.components)

        heads_dir = Path(heads_dir)
        folder = write_dir(heads_dir / version, populate, replace=True)
        write_text(heads_dir / "LATEST", version + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> StandinEncoder:
        """Read a version folder written by :meth:`save`.

        Raises:
            FileNotFoundError: the folder holds no stand-in encoder.
        """
        path = Path(folder) / FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no stand-in content encoder ({FILE}); run `recsys content` first")
        with np.load(path, allow_pickle=False) as z:
            return cls(z["terms"], z["idf"], z["components"])


def _vectorizer(min_df: int) -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, 2), min_df=min_df, sublinear_tf=True, dtype=np.float32)


def _descriptor_of(image: ImageInput) -> np.ndarray:
    if isinstance(image, Image.Image):
        return photo_descriptor(image)
    try:
        with Image.open(image) as img:
            return photo_descriptor(img)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot decode image {image}: {exc}") from exc


def photo_descriptor(image: Image.Image) -> np.ndarray:
    """A 64-d descriptor of a product photo: foreground colour histogram + coarse silhouette.

    Product photos show one article on a light background, so pixels close to white are treated
    as background. Half the vector is a hue/saturation/value histogram of the foreground (colour),
    half a 4x8 grid of foreground coverage (shape). Each half is centred and normalised, so the
    cosine of two descriptors averages a colour and a shape similarity.

    Args:
        image: any PIL image (decoded by the caller, which enforces size limits).

    Returns:
        (64,) float32, unit length (zeros only for a degenerate image).
    """
    if image.format == "JPEG":
        image.draft("RGB", (64, 96))  # decode at reduced scale: ~10x faster for catalogue photos
    small = np.asarray(image.convert("RGB").resize((_LAYOUT[0] * 4, _LAYOUT[1] * 4), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    flat = small.reshape(-1, 3)
    foreground = flat.min(axis=1) < 0.9
    if foreground.sum() < 8:  # nearly blank photo: use every pixel
        foreground = np.ones(len(flat), dtype=bool)
    hsv = _rgb_to_hsv(flat[foreground])
    h = np.minimum((hsv[:, 0] * _HUE_BINS).astype(int), _HUE_BINS - 1)
    s = np.minimum((hsv[:, 1] * _SAT_BINS).astype(int), _SAT_BINS - 1)
    v = np.minimum((hsv[:, 2] * _VAL_BINS).astype(int), _VAL_BINS - 1)
    hist = np.bincount((h * _SAT_BINS + s) * _VAL_BINS + v, minlength=_HUE_BINS * _SAT_BINS * _VAL_BINS).astype(np.float32)
    colour = np.sqrt(hist / hist.sum())
    cover = foreground.reshape(_LAYOUT[1] * 4, _LAYOUT[0] * 4).astype(np.float32)
    layout = cover.reshape(_LAYOUT[1], 4, _LAYOUT[0], 4).mean(axis=(1, 3)).reshape(-1)
    parts = [colour - colour.mean(), layout - layout.mean()]
    out = np.concatenate([p / max(float(np.linalg.norm(p)), 1e-6) for p in parts]) / np.sqrt(2.0)
    return out.astype(np.float32)


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """Vectorised colorsys.rgb_to_hsv for an (n, 3) array in [0, 1]."""
    maxc, minc = rgb.max(axis=1), rgb.min(axis=1)
    delta = maxc - minc
    safe = np.where(delta > 0, delta, 1.0)
    r, g, b = (rgb[:, i] for i in range(3))
    hue = np.where(maxc == r, (g - b) / safe, np.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = np.where(delta > 0, (hue / 6.0) % 1.0, 0.0)
    sat = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1.0), 0.0)
    return np.stack([hue, sat, maxc], axis=1).astype(np.float32)


def catalogue_text(items: pl.DataFrame, columns: list[str]) -> list[str]:
    """One lower-cased string per catalogue row from the given text columns (nulls skipped).

    Args:
        items: the catalogue.
        columns: text columns to join.

    Returns:
        One text per row.

    Raises:
        ValueError: no column is given, or one is missing from the catalogue.
    """
    missing = [c for c in columns if c not in items.columns]
    if missing:
        raise ValueError(f"catalogue has no text column(s) {missing}; available: {items.columns}")
    if not columns:
        raise ValueError("data.items.columns.text is empty: the stand-in encoder needs text columns")
    parts = [pl.col(c).cast(pl.Utf8).fill_null("") for c in columns]
    return items.select(pl.concat_str(parts, separator=" . ").str.to_lowercase().alias("t"))["t"].to_list()


def build_standin_vectors(items: pl.DataFrame, text_columns: list[str], dim: int = 128, seed: int = 0) -> ItemVectors:
    """Text-only stand-in vectors of a catalogue (no photos read): for tests and quick experiments.

    Args:
        items: the catalogue (``item_id`` first; ``has_image`` is copied when present).
        text_columns: columns joined into each item's text.
        dim: text vector size.
        seed: SVD seed.

    Returns:
        ItemVectors whose ``fused`` is the text part (zero image rows), from :class:`StandinEncoder`.
    """
    texts = catalogue_text(items, text_columns)
    encoder = StandinEncoder.fit(texts, dim, seed)
    text = encoder.encode_texts(texts)
    image = np.zeros_like(text)
    has_image = np.zeros(len(texts), dtype=bool)
    return ItemVectors(np.asarray(items["item_id"].cast(pl.String).to_list(), dtype=str), image, text,
                       encoder.fuse(image, text, has_image, 0.0, 1.0), has_image, encoder.identity)
