"""Multimodal product search and similar items over the catalogue's content vectors.

The one implementation that Python callers, notebooks and the HTTP service use. A query is a
text, an image, or both. Two stages:

1. candidates: the query vector ``normalise(w * text + (1 - w) * image)`` with equal weights
   (``first_pass_text_weight`` 0.5) against every item's fused vector, top ``candidates``;
2. rerank: each candidate scores ``t * <text, item> + (1 - t) * <image, item>`` with text-heavy
   weights (``rerank_text_weight`` 0.9), so the words of the query decide the final order while
   the photo still pulls in lookalikes at the first stage.

With a single modality both stages use it alone and the rerank keeps the first-stage order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from features.content.encoders import ContentEncoder
from features.content.images import ImageInput
from recsys.content_config import SearchSettings
from recsys.evaluation.metrics import top_k_indices
from recsys.vectors import ItemVectors, l2_normalise


@dataclass
class SearchResult:
    """Ranked items, best first."""

    item_ids: list[str]
    scores: list[float]


class ContentSearch:
    """Search and similar items over :class:`ItemVectors`.

    Args:
        vectors: the catalogue's vectors.
        encoder: encodes query texts and images (must be the encoder that made ``vectors``);
            None allows only vector queries and similar items.
        settings: candidate count and stage weights.
    """

    def __init__(self, vectors: ItemVectors, encoder: ContentEncoder | None = None, settings: SearchSettings = SearchSettings()):
        if encoder is not None and encoder.identity != vectors.encoder:
            raise ValueError(f"query encoder {encoder.identity!r} did not produce these item vectors ({vectors.encoder!r})")
        self.vectors, self.encoder, self.settings = vectors, encoder, settings

    def search(
        self,
        text: str | None = None,
        image: ImageInput | None = None,
        k: int = 20,
        rerank_text_weight: float | None = None,
        require_image: bool = False,
        exclude: Sequence[str] = (),
    ) -> SearchResult:
        """Items for a text and/or image query.

        Args:
            text: query words.
            image: query photo (path or PIL image).
            k: results wanted.
            rerank_text_weight: overrides the configured second-stage text weight.
            require_image: only items with a photo (e.g. for a visual grid).
            exclude: item ids never returned.

        Raises:
            ValueError: neither text nor image given, or no encoder to embed them.
        """
        if text is None and image is None:
            raise ValueError("a search needs a text, an image, or both")
        if self.encoder is None:
            raise ValueError("this ContentSearch has no encoder; use search_vectors()")
        q_text = self.encoder.encode_texts([text], progress=False)[0] if text is not None else None
        q_image = self.encoder.encode_images([image], progress=False)[0] if image is not None else None
        return self.search_vectors(q_text, q_image, k, rerank_text_weight, require_image, exclude)

    def search_vectors(
        self,
        text: np.ndarray | None,
        image: np.ndarray | None,
        k: int = 20,
        rerank_text_weight: float | None = None,
        require_image: bool = False,
        exclude: Sequence[str] = (),
    ) -> SearchResult:
        """The two-stage search for already-encoded query vectors (see the module docstring).

        Args:
            text: unit query vector from the text encoder, or None.
            image: unit query vector from the image encoder, or None.
            k: results wanted.
            rerank_text_weight: overrides the configured second-stage text weight.
            require_image: only items with a photo.
            exclude: item ids never returned.

        Raises:
            ValueError: ``k`` is not positive, or neither vector given.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if text is None and image is None:
            raise ValueError("a search needs a text vector, an image vector, or both")
        fused = self.vectors.fused
        first = _mix(text, image, self.settings.first_pass_text_weight)
        scores = fused @ first
        mask = self._mask(require_image, exclude)
        scores[~mask] = -np.inf
        n_candidates = min(max(self.settings.candidates, k), int(mask.sum()))
        if n_candidates == 0:
            return SearchResult([], [])
        candidates = top_k_indices(scores, n_candidates)
        t = self.settings.rerank_text_weight if rerank_text_weight is None else rerank_text_weight
        if text is not None and image is not None:
            rerank = t * (fused[candidates] @ text) + (1.0 - t) * (fused[candidates] @ image)
        else:
            rerank = scores[candidates]
        order = top_k_indices(rerank.astype(np.float32), min(k, len(candidates)))
        picked = candidates[order]
        return SearchResult(self.vectors.item_ids[picked].tolist(), rerank[order].astype(float).tolist())

    def similar_items(self, item_id: str, k: int = 10, kind: str = "fused", require_image: bool = False) -> SearchResult:
        """Nearest items to one item by its ``kind`` vector (the item itself is left out).

        Args:
            item_id: the item.
            k: results wanted.
            kind: which vectors to compare: ``"fused"``, ``"text"`` or ``"image"``.
            require_image: only items with a photo (always so for ``kind="image"``).

        Raises:
            KeyError: unknown item.
            ValueError: ``kind="image"`` for an item without a photo.
        """
        row = self.vectors.index.get(item_id)
        if row is None:
            raise KeyError(f"unknown item {item_id!r}")
        if kind == "image" and not self.vectors.has_image[row]:
            raise ValueError(f"item {item_id!r} has no photo; use kind='fused' or 'text'")
        matrix = getattr(self.vectors, kind)
        scores = matrix @ matrix[row]
        mask = self._mask(require_image or kind == "image", (item_id,))
        scores[~mask] = -np.inf
        top = top_k_indices(scores, min(k, int(mask.sum())))
        return SearchResult(self.vectors.item_ids[top].tolist(), scores[top].astype(float).tolist())

    def _mask(self, require_image: bool, exclude: Sequence[str]) -> np.ndarray:
        mask = self.vectors.has_image.copy() if require_image else np.ones(len(self.vectors.item_ids), dtype=bool)
        if len(exclude):
            rows = self.vectors.index.lookup(list(exclude))
            mask[rows[rows >= 0]] = False
        return mask


def _mix(text: np.ndarray | None, image: np.ndarray | None, text_weight: float) -> np.ndarray:
    if text is None:
        return np.asarray(image, dtype=np.float32)
    if image is None:
        return np.asarray(text, dtype=np.float32)
    return l2_normalise((text_weight * text + (1.0 - text_weight) * image)[None, :].astype(np.float32))[0]
