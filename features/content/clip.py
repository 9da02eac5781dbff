"""The ``clip`` backend: a transformers CLIP checkpoint (local folder or hub id) for users who have one.

No CLIP weights can be obtained on the project's own machines (see ../shared/docs/MODELS.md),
so this path is exercised by tests on a tiny randomly initialised CLIP saved to a local folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from features.content.encoders import CachedFeatures, ContentEncoder, normalised, text_key
from features.content.images import ImageInput, image_key, open_rgb

if TYPE_CHECKING:
    from transformers.modeling_outputs import BaseModelOutputWithPooling


def _embedding(output: torch.Tensor | BaseModelOutputWithPooling) -> torch.Tensor:
    """transformers 5 returns a ``BaseModelOutputWithPooling`` whose ``pooler_output`` is the projection."""
    if isinstance(output, torch.Tensor):
        return output
    assert output.pooler_output is not None, "CLIP's get_*_features always set the projection"
    return output.pooler_output


class ClipEncoder(ContentEncoder):
    """CLIP image and text towers, L2-normalised, behind the vector cache.

    Args:
        model: local directory or hub id (hub ids load only from the local HF cache when offline).
        cache_root: vector cache folder, or None.
        max_length: token limit for texts.
        threads: torch threads while encoding.
    """

    def __init__(self, model: str | Path, cache_root: str | Path | None = None, max_length: int = 77, threads: int = 2):
        from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

        self.source = str(model)
        try:
            self.model = CLIPModel.from_pretrained(self.source).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(self.source)
            self.processor = CLIPImageProcessorPil.from_pretrained(self.source)
        except OSError as exc:
            raise FileNotFoundError(f"content.clip.model: cannot load CLIP from {self.source!r}: {exc}") from exc
        self.max_length = min(max_length, int(self.model.config.text_config.max_position_embeddings))
        self.dim = int(self.model.config.projection_dim)
        self.identity = f"clip:{self._weights_digest()}:len{self.max_length}:v1"
        self._images = CachedFeatures(self.identity + ":image", self._encode_image_batch, image_key, cache_root, threads)
        self._texts = CachedFeatures(self.identity + ":text", self._encode_text_batch, text_key, cache_root, threads)

    def _weights_digest(self) -> str:
        """Hash of every parameter: two checkpoints with one name never share cache entries."""
        h = hashlib.sha256(self.model.config.to_json_string().encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def _encode_image_batch(self, images: list[ImageInput]) -> np.ndarray:
        pixels = self.processor(images=[open_rgb(im) for im in images], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = _embedding(self.model.get_image_features(pixel_values=pixels))
        return normalised(out.float().numpy())

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            out = _embedding(self.model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))
        return normalised(out.float().numpy())

    def encode_images(self, images: Sequence[ImageInput], batch_size: int = 32, progress: bool = True) -> np.ndarray:
        """CLIP image embeddings, L2-normalised and cached."""
        if not len(images):
            return np.zeros((0, self.dim), np.float32)
        return self._images(images, batch_size, "clip images", progress)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 128, progress: bool = True) -> np.ndarray:
        """CLIP text embeddings (truncated to ``max_length`` tokens), L2-normalised and cached."""
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        return self._texts(texts, batch_size, "clip texts", progress)
