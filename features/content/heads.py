"""Projection heads of the ``aligned`` backend and their versioned on-disk artifact.

A heads version is a folder ``<heads_dir>/<version>/`` with ``heads.safetensors`` (weights,
input standardisation and the learned temperature) and ``manifest.json`` (format version,
architecture, the identities of the frozen backbones the heads were trained on, training
settings and held-out metrics). ``<heads_dir>/LATEST`` names the newest version. Written
atomically: a reader sees a complete version or none.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recsys.atomic import write_dir, write_text

FORMAT_VERSION = 1


class Head(nn.Module):
    """Standardise the frozen features, then a small MLP (or a linear map) into the shared space.

    Args:
        in_dim: backbone feature size.
        out_dim: shared space size.
        hidden: hidden width; 0 gives a linear head.
        dropout: dropout on the hidden layer (training only).
    """

    mean: torch.Tensor  # buffers (registered in __init__)
    std: torch.Tensor

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 1024, dropout: float = 0.1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
            )
        else:
            self.net = nn.Linear(in_dim, out_dim)

    def set_standardisation(self, features: torch.Tensor) -> None:
        """Fix the input mean/std from training features (kept frozen afterwards)."""
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in_dim) frozen features -> (n, out_dim) unit vectors."""
        return nn.functional.normalize(self.net((x - self.mean) / self.std), dim=-1)


class AlignmentHeads(nn.Module):
    """An image head, a text head and a learnable temperature (stored as log logit scale).

    Args:
        image_dim / text_dim: backbone feature sizes.
        dim: shared space size.
        hidden / dropout: see :class:`Head`.
        temperature: initial softmax temperature.
    """

    def __init__(self, image_dim: int, text_dim: int, dim: int = 256, hidden: int = 1024, dropout: float = 0.1, temperature: float = 0.07):
        super().__init__()
        self.config = {"image_dim": image_dim, "text_dim": text_dim, "dim": dim, "hidden": hidden, "dropout": dropout}
        self.image = Head(image_dim, dim, hidden, dropout)
        self.text = Head(text_dim, dim, hidden, dropout)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @property
    def scale(self) -> torch.Tensor:
        """The logit scale (1 / temperature), at most 100."""
        # CLIP clamps the logit scale at 100 so the temperature cannot collapse.
        return self.log_scale.exp().clamp(max=100.0)


def save_heads(heads: AlignmentHeads, heads_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write a new heads version and point ``LATEST`` at it.

    Args:
        heads: trained heads.
        heads_dir: the versions folder.
        manifest: extra JSON-able facts (backbone identities, settings, metrics, run id).

    Returns:
        The version folder.
    """
    from safetensors.torch import save_file

    heads_dir = Path(heads_dir)
    heads_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in heads.state_dict().items()}
    digest = hashlib.sha256(b"".join(t.numpy().tobytes() for _, t in sorted(tensors.items()))).hexdigest()[:12]
    version = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{digest}"

    def populate(tmp: Path) -> None:
        save_file(tensors, str(tmp / "heads.safetensors"), metadata={"format_version": str(FORMAT_VERSION)})
        full = {"format_version": FORMAT_VERSION, "version": version, "sha256": digest, "architecture": heads.config, **manifest}
        (tmp / "manifest.json").write_text(json.dumps(full, indent=2, sort_keys=True, default=str))

    write_dir(heads_dir / version, populate, replace=False)
    write_text(heads_dir / "LATEST", version + "\n")
    return heads_dir / version


def load_heads(version_dir: str | Path) -> tuple[AlignmentHeads, dict[str, Any]]:
    """Load a heads version (eval mode) and its manifest.

    Args:
        version_dir: the heads version folder (``manifest.json`` + ``heads.safetensors``).

    Returns:
        (the heads, the manifest dict).

    Raises:
        FileNotFoundError: the folder or one of its files is missing.
        ValueError: unknown format version.
    """
    from safetensors.torch import load_file

    version_dir = Path(version_dir)
    manifest_path = version_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no heads manifest at {manifest_path}")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{manifest_path}: unsupported format_version {manifest.get('format_version')}")
    arch = manifest["architecture"]
    heads = AlignmentHeads(arch["image_dim"], arch["text_dim"], arch["dim"], arch["hidden"], arch["dropout"])
    heads.load_state_dict(load_file(str(version_dir / "heads.safetensors")))
    heads.eval()
    return heads, manifest


def latest_heads(heads_dir: str | Path) -> Path:
    """The folder ``LATEST`` points to.

    Args:
        heads_dir: the folder holding the heads versions and ``LATEST``.

    Returns:
        The version folder (not checked to exist).

    Raises:
        FileNotFoundError: nothing trained yet.
    """
    pointer = Path(heads_dir) / "LATEST"
    if not pointer.is_file():
        raise FileNotFoundError(f"no trained heads in {heads_dir}: run `recsys content` first")
    return Path(heads_dir) / pointer.read_text().strip()
