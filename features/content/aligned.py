"""The ``aligned`` backend: frozen MiniLM + EfficientNet-Lite0 with contrastively trained heads."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from features.content.backbones import ImageTower, TextTower
from features.content.encoders import CachedFeatures, ContentEncoder, text_key
from features.content.heads import AlignmentHeads, load_heads
from features.content.images import ImageInput, image_key
from recsys.content_config import ContentConfig
from recsys.vectors import l2_normalise

log = logging.getLogger(__name__)


class Backbones:
    """The two frozen towers behind the feature cache (their features are the slow part).

    Args:
        config: the ``content`` section (input size, token limit, threads).
        cache_root: feature cache folder, or None for no cache.
    """

    def __init__(self, config: ContentConfig, cache_root: str | Path | None):
        b = config.backbone
        self.image_tower = ImageTower(b.image_height, b.image_width)
        self.text_tower = TextTower(b.text_max_length)
        self.image_features = CachedFeatures(self.image_tower.identity, self.image_tower.encode, image_key, cache_root, config.threads)
        self.text_features = CachedFeatures(self.text_tower.identity, self.text_tower.encode, text_key, cache_root, config.threads)
        self.image_batch_size, self.text_batch_size = config.image_batch_size, config.text_batch_size

    @property
    def identities(self) -> dict[str, str]:
        """The towers' identities, ``{"image": ..., "text": ...}``."""
        return {"image": self.image_tower.identity, "text": self.text_tower.identity}

    def images(self, images: Sequence[ImageInput], progress: bool = True, batch_size: int | None = None) -> np.ndarray:
        """(n, 1280) image features.

        Args:
            images: paths or PIL images.
            progress: show a progress bar.
            batch_size: images per forward pass (default: the configured one).
        """
        return self.image_features(images, batch_size or self.image_batch_size, "image features", progress)

    def item_texts(self, parts: Sequence[Sequence[str]], progress: bool = True) -> np.ndarray:
        """(n, 384) item text features: the normalised sum of the parts' features (empty parts skipped).

        Each distinct part is encoded once (colour variants share name and description).

        Args:
            parts: ``parts[p][i]`` is part p of item i.
            progress: show a progress bar.

        Raises:
            ValueError: no parts.
        """
        total: np.ndarray | None = None
        for part in parts:
            feats = self.texts(part, progress)
            feats[np.array([not t for t in part], dtype=bool)] = 0.0
            total = feats if total is None else total + feats
        if total is None:
            raise ValueError("item texts need at least one part")
        return l2_normalise(total)

    def texts(self, texts: Sequence[str], progress: bool = True, batch_size: int | None = None) -> np.ndarray:
        """(n, 384) text features; sorted by length inside so batches pad little.

        Args:
            texts: the texts, results in this order.
            progress: show a progress bar.
            batch_size: texts per forward pass (default: the configured one).
        """
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        feats = self.text_features([texts[i] for i in order], batch_size or self.text_batch_size, "text features", progress)
        out = np.empty_like(feats)
        out[order] = feats
        return out


class AlignedEncoder(ContentEncoder):
    """Frozen towers + trained projection heads.

    Args:
        backbones: the cached frozen towers.
        heads: trained heads (eval mode).
        version: the heads version (part of the identity).
    """

    def __init__(self, backbones: Backbones, heads: AlignmentHeads, version: str):
        self.backbones, self.heads, self.version = backbones, heads.eval(), version
        self.dim = int(heads.config["dim"])
        ids = backbones.identities
        self.identity = f"aligned:{version}|{ids['image']}|{ids['text']}"

    @classmethod
    def from_config(cls, config: ContentConfig, heads_dir: str | Path, cache_root: str | Path | None) -> "AlignedEncoder":
        """Load a heads version and check it was trained on the configured backbones.

        Args:
            config: the ``content`` section (backbone input size, token limit, batch sizes).
            heads_dir: the heads version folder.
            cache_root: feature cache folder, or None.

        Raises:
            ValueError: the heads were trained on other backbone features (input size, weights).
        """
        heads, manifest = load_heads(heads_dir)
        backbones = Backbones(config, cache_root)
        trained_on = manifest.get("backbones", {})
        if trained_on and trained_on != backbones.identities:
            raise ValueError(
                f"heads in {heads_dir} were trained on backbones {trained_on}, but the config gives {backbones.identities}"
            )
        return cls(backbones, heads, manifest["version"])

    def project_images(self, features: np.ndarray) -> np.ndarray:
        """Image features -> shared space."""
        with torch.inference_mode():
            return self.heads.image(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy()

    def project_texts(self, features: np.ndarray) -> np.ndarray:
        """Text features -> shared space."""
        with torch.inference_mode():
            return self.heads.text(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy()

    def encode_images(self, images: Sequence[ImageInput], batch_size: int = 32, progress: bool = True) -> np.ndarray:
        """Cached backbone image features projected by the image head."""
        if not len(images):
            return np.zeros((0, self.dim), np.float32)
        return self.project_images(self.backbones.images(images, progress, batch_size))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 128, progress: bool = True) -> np.ndarray:
        """Cached backbone text features projected by the text head."""
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        return self.project_texts(self.backbones.texts(texts, progress, batch_size))

    def encode_item_texts(self, parts: Sequence[Sequence[str]], batch_size: int = 128, progress: bool = True) -> np.ndarray:
        """Catalogue item texts in parts, composed as in training (:meth:`Backbones.item_texts`)."""
        if not len(parts) or not len(parts[0]):
            return np.zeros((0, self.dim), np.float32)
        return self.project_texts(self.backbones.item_texts(parts, progress))
