"""The configured content encoder: one factory above every backend (``aligned``, ``clip``, ``standin``)."""

from __future__ import annotations

from pathlib import Path

from features.content.aligned import AlignedEncoder
from features.content.clip import ClipEncoder
from features.content.encoders import ContentEncoder, resolve
from features.content.heads import latest_heads
from features.content.standin import FILE as STANDIN_FILE
from features.content.standin import StandinEncoder
from recsys.content_config import ContentConfig


def build_encoder(config: ContentConfig, work_path: Path, heads_dir: str | Path | None = None) -> ContentEncoder:
    """The configured backend, ready to encode.

    Args:
        config: the ``content`` section.
        work_path: the project work dir (cache and heads live below it).
        heads_dir: for ``aligned`` and ``standin``, a specific fitted version; default: the latest.

    Returns:
        The encoder.

    Raises:
        FileNotFoundError: the heads (or the stand-in's fitted vocabulary) have not been made yet
            (run ``recsys content``).
    """
    cache_root = resolve(work_path, config.cache_dir)
    if config.backend == "clip":
        return ClipEncoder(config.clip.model, cache_root=cache_root, max_length=config.clip.max_length, threads=config.threads)
    path = Path(heads_dir) if heads_dir is not None else latest_heads(resolve(work_path, config.heads_dir))
    if config.backend == "standin" or (path / STANDIN_FILE).is_file():  # a catalogue without photos falls back to it
        return StandinEncoder.load(path)
    return AlignedEncoder.from_config(config, path, cache_root)
