"""A disk cache of vectors keyed by encoder identity + content hash.

Each encoder identity gets its own folder; inside it, vectors are appended as small ``.npz``
shards (``keys`` + ``vectors``, no pickle), each written atomically (temp file, then rename).
A run that is interrupted keeps every shard it finished, and a re-run computes only what is
missing. Keys are content hashes, so renaming a file or re-ordering inputs costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm.auto import tqdm

from recsys.atomic import write_text

log = logging.getLogger(__name__)

T = TypeVar("T")


def content_hash(data: bytes | str) -> str:
    """A stable key for some content (sha1 is plenty: this is a cache key, not a signature).

    Args:
        data: bytes, or a string (hashed as UTF-8).

    Returns:
        40 hex characters.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha1(data).hexdigest()


def identity_slug(identity: str) -> str:
    """A short folder name for an encoder identity string.

    Args:
        identity: the encoder identity.

    Returns:
        The first 20 hex characters of its SHA-256.
    """
    return hashlib.sha256(identity.encode()).hexdigest()[:20]


class VectorCache:
    """Vectors of one encoder identity, stored as shards below ``root/<identity slug>/``.

    Args:
        root: the cache folder (shared by all encoders).
        identity: the encoder's identity (name + version + weights hash + preprocessing).
    """

    def __init__(self, root: str | Path, identity: str):
        self.identity = identity
        self.dir = Path(root) / identity_slug(identity)
        self._rows: dict[str, np.ndarray] = {}
        self._load()

    def _load(self) -> None:
        if not self.dir.is_dir():
            return
        for shard in sorted(self.dir.glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as z:
                    keys, vectors = z["keys"], z["vectors"]
            except (OSError, ValueError, KeyError) as exc:
                # A shard is only ever renamed into place complete, so this is outside damage.
                log.warning("ignoring unreadable cache shard %s: %s", shard, exc)
                continue
            for k, v in zip(keys.tolist(), vectors):
                self._rows[k] = v

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def get_many(self, keys: Sequence[str]) -> np.ndarray:
        """Stacked vectors for ``keys`` (all must be present)."""
        return np.stack([self._rows[k] for k in keys]).astype(np.float32)

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store one shard atomically and keep the vectors in memory.

        Args:
            keys: content hashes.
            vectors: (len(keys), d) vectors, stored as float32.

        Raises:
            ValueError: ``keys`` and ``vectors`` differ in length.
        """
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys but {len(vectors)} vectors")
        if not len(keys):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "identity.txt").exists():
            write_text(self.dir / "identity.txt", self.identity + "\n")
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        tmp = self.dir / f".{name}.tmp.npz"
        np.savez(tmp, keys=np.asarray(list(keys), dtype=str), vectors=np.asarray(vectors, dtype=np.float32))
        tmp.replace(self.dir / f"{name}.npz")
        for k, v in zip(keys, np.asarray(vectors, dtype=np.float32)):
            self._rows[k] = v


def cached_encode(
    items: Sequence[T],
    keys: Sequence[str],
    encode_batch: Callable[[list[T]], np.ndarray],
    cache: VectorCache | None,
    batch_size: int,
    shard_batches: int = 8,
    desc: str = "encode",
    progress: bool = True,
) -> np.ndarray:
    """Encode ``items`` in batches, reusing and filling the cache.

    Args:
        items: inputs, aligned with ``keys``.
        keys: content hashes; duplicates are computed once.
        encode_batch: maps a list of inputs to an (n, d) float32 array.
        cache: where to look up and store vectors; None computes everything.
        batch_size: inputs per forward pass.
        shard_batches: batches per cache shard (how much an interruption can lose).
        desc: progress-bar label.
        progress: show a progress bar.

    Returns:
        (len(items), d) float32 vectors in input order.
    """
    if len(items) != len(keys):
        raise ValueError(f"{len(items)} inputs but {len(keys)} keys")
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    todo = [i for k, i in first.items() if cache is None or k not in cache]
    computed: dict[str, np.ndarray] = {}
    if todo:
        log.info("%s: %d to compute, %d cached", desc, len(todo), len(first) - len(todo))
        bar = tqdm(total=len(todo), desc=desc, unit="it", disable=not progress, mininterval=5)
        pending_keys: list[str] = []
        pending_vecs: list[np.ndarray] = []
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            vecs = np.asarray(encode_batch([items[i] for i in chunk]), dtype=np.float32)
            chunk_keys = [keys[i] for i in chunk]
            if cache is None:
                computed.update(zip(chunk_keys, vecs))
            else:
                pending_keys += chunk_keys
                pending_vecs.append(vecs)
                if len(pending_vecs) >= shard_batches:
                    cache.put_many(pending_keys, np.concatenate(pending_vecs))
                    pending_keys, pending_vecs = [], []
            bar.update(len(chunk))
        if cache is not None and pending_vecs:
            cache.put_many(pending_keys, np.concatenate(pending_vecs))
        bar.close()
    if cache is None:
        return np.stack([computed[k] for k in keys]).astype(np.float32) if len(keys) else np.zeros((0, 0), np.float32)
    return cache.get_many(keys) if len(keys) else np.zeros((0, 0), np.float32)
