"""The content-encoder interface: images and texts -> L2-normalised float32 vectors in one space.

Backends: ``aligned`` (:mod:`features.content.aligned`, the offline default) and ``clip``
(:mod:`features.content.clip`). Every backend caches on disk by encoder identity + content
hash (:mod:`features.content.cache`), so a re-run computes nothing twice.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from features.content.cache import VectorCache, cached_encode, content_hash
from features.content.images import ImageInput
from features.content.text import join_parts
from recsys.vectors import fuse, l2_normalise

log = logging.getLogger(__name__)


class ContentEncoder(ABC):
    """Encodes images and texts into one shared space.

    Attributes:
        identity: names the encoder exactly (backend, weights hash, preprocessing); cache key prefix.
        dim: size of the shared space.
    """

    identity: str
    dim: int

    @abstractmethod
    def encode_images(self, images: Sequence[ImageInput], batch_size: int = 32, progress: bool = True) -> np.ndarray:
        """(n, dim) float32 unit vectors for image paths or PIL images."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str], batch_size: int = 128, progress: bool = True) -> np.ndarray:
        """(n, dim) float32 unit vectors for texts."""

    def encode_item_texts(self, parts: Sequence[Sequence[str]], batch_size: int = 128, progress: bool = True) -> np.ndarray:
        """(n, dim) unit vectors of catalogue item texts given in parts (``parts[p][i]``).

        The default joins the parts into one text per item; a backend may encode them separately.
        """
        joined = [join_parts(item) for item in zip(*parts)]
        return self.encode_texts(joined, batch_size, progress)

    def fuse(self, image: np.ndarray, text: np.ndarray, has_image: np.ndarray, image_weight: float, text_weight: float) -> np.ndarray:
        """Fused item vectors from image and text vectors of this encoder's space.

        Args:
            image: (n, dim) image vectors (zero rows where ``has_image`` is False).
            text: (n, dim) text vectors.
            has_image: (n,) bool.
            image_weight: weight of the image.
            text_weight: weight of the text.

        Returns:
            (n, dim) float32; the default (one shared space): the weighted sum, renormalised, and the
            text alone for an item without a photo.
        """
        return fuse(image, text, has_image, image_weight, text_weight)


class CachedFeatures:
    """Batched, disk-cached application of one feature function (a tower or a whole model).

    Args:
        identity: the function's identity (cache folder).
        fn: a batch of inputs -> (n, d) float32.
        key: content hash of one input.
        cache_root: cache folder, or None to compute everything.
        threads: torch intra-op threads while encoding (the shared machine has two cores).
    """

    def __init__(
        self,
        identity: str,
        fn: Callable[[list], np.ndarray],
        key: Callable[[Any], str],
        cache_root: str | Path | None,
        threads: int = 2,
    ):
        self.identity, self.fn, self.key, self.threads = identity, fn, key, threads
        self.cache = VectorCache(cache_root, identity) if cache_root is not None else None

    def __call__(self, inputs: Sequence, batch_size: int, desc: str, progress: bool = True) -> np.ndarray:
        keys = [self.key(x) for x in inputs]
        previous = torch.get_num_threads()
        torch.set_num_threads(min(previous, self.threads))
        try:
            return cached_encode(list(inputs), keys, self.fn, self.cache, batch_size, desc=desc, progress=progress)
        finally:
            torch.set_num_threads(previous)


def text_key(text: str) -> str:
    """Content hash of a text.

    Args:
        text: the text.

    Returns:
        Its :func:`content_hash`.
    """
    return content_hash(text)


def resolve(work_path: Path, path: str) -> Path:
    """A configured path: absolute stays, relative is below the work dir.

    Args:
        work_path: the project's work dir.
        path: the configured path.

    Returns:
        The resolved path.
    """
    p = Path(path)
    return p if p.is_absolute() else work_path / p


def normalised(x: np.ndarray) -> np.ndarray:
    """Unit rows, float32.

    Args:
        x: (n, d) array.

    Returns:
        (n, d) float32 with L2-normalised rows (zero rows stay zero).
    """
    return l2_normalise(np.asarray(x, dtype=np.float32))
