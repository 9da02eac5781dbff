"""Light content encoders for the development service: TF-IDF + SVD text vectors and photo descriptors.

They are real (if shallow) content signals that train in seconds, so the HTTP layer, the web page
and their tests exercise genuine text search, image search and similarity without the learned
encoders of ``features/content``. Both encode catalogue items and visitor queries the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from features.content.vectors import l2_normalise

PHOTO_DIM = 64
_HUE_BINS, _SAT_BINS, _VAL_BINS = 8, 2, 2
_LAYOUT = (4, 8)  # width x height cells of the silhouette part (photos are portrait)


@dataclass
class TextEncoder:
    """TF-IDF (words and bigrams, sublinear tf) reduced by truncated SVD; rows L2-normalised.

    Attributes:
        terms: vocabulary, column order of ``idf`` and ``components``.
        idf: (V,) inverse document frequencies.
        components: (d, V) SVD projection.
    """

    terms: np.ndarray
    idf: np.ndarray
    components: np.ndarray

    @classmethod
    def fit(cls, texts: list[str], dim: int, seed: int = 0) -> tuple["TextEncoder", np.ndarray]:
        """Fit on catalogue texts; returns the encoder and the (n, dim) item vectors."""
        tfidf = _vectorizer(min_df=2 if len(texts) > 1000 else 1)
        matrix = tfidf.fit_transform(texts)
        k = max(1, min(dim, matrix.shape[1] - 1, matrix.shape[0] - 1))
        svd = TruncatedSVD(n_components=k, random_state=seed, algorithm="randomized", n_iter=4).fit(matrix)
        components = np.zeros((dim, matrix.shape[1]), dtype=np.float32)
        components[:k] = svd.components_
        terms = np.asarray(tfidf.get_feature_names_out(), dtype=str)
        encoder = cls(terms, tfidf.idf_.astype(np.float32), components)
        return encoder, l2_normalise(np.asarray(matrix @ components.T, dtype=np.float32))

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), d) vectors; a text with no known word gives a zero row."""
        tfidf = _vectorizer(min_df=1)
        tfidf.vocabulary_ = {t: i for i, t in enumerate(self.terms.tolist())}
        tfidf.idf_ = self.idf.astype(np.float64)
        matrix = tfidf.transform([t.lower() for t in texts])
        return l2_normalise(np.asarray(matrix @ self.components.T, dtype=np.float32))

    def save(self, path: Path) -> None:
        np.savez(path, terms=self.terms, idf=self.idf, components=self.components)

    @classmethod
    def load(cls, path: Path) -> "TextEncoder":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["terms"], z["idf"], z["components"])


def _vectorizer(min_df: int) -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, 2), min_df=min_df, sublinear_tf=True, dtype=np.float32)


def photo_descriptor(image: Image.Image) -> np.ndarray:
    """A 64-d descriptor of a product photo: foreground colour histogram + coarse silhouette.

    H&M photos show one garment on a light background, so pixels close to white are treated as
    background. Half the vector is a hue/saturation/value histogram of the foreground (colour),
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


def catalogue_photos(paths: list[Path | None]) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of catalogue photos; (n, 64) matrix and a bool mask of photos that decoded."""
    out = np.zeros((len(paths), PHOTO_DIM), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    for i, path in enumerate(paths):
        if path is None:
            continue
        try:
            with Image.open(path) as img:
                out[i] = photo_descriptor(img)
            ok[i] = True
        except (OSError, ValueError):  # an unreadable file is an item without a photo
            continue
    return out, ok
