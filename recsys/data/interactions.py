"""Training interactions encoded for models: contiguous ids and a sparse user x item matrix."""

from __future__ import annotations

import datetime as dt
import hashlib
import weakref
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import scipy.sparse as sp


class IdIndex:
    """A bijection between external string ids and contiguous row numbers ``0..n-1``.

    Args:
        ids: the external ids, in row order; must be unique.
    """

    def __init__(self, ids: list[str] | np.ndarray):
        self.ids = np.asarray(ids, dtype=str)
        self._pos = {v: i for i, v in enumerate(self.ids.tolist())}
        if len(self._pos) != len(self.ids):
            raise ValueError(f"IdIndex needs unique ids: {len(self.ids) - len(self._pos)} duplicates")

    @classmethod
    def shared(cls, ids: list[str] | np.ndarray) -> "IdIndex":
        """An index of ``ids``: the live one with the same ids, if there is one, else a new one.

        The models of a loaded bundle each saved the same users: at the 100x rung four copies of a
        1.2M-user index (507 MB each: the ids as 64 4-byte characters, and the lookup dict) were
        held side by side in every stage that loads a generator, and in the server. An index is
        never changed after it is built, so they can be one object.

        Args:
            ids: the external ids, in row order; must be unique.
        """
        array = np.ascontiguousarray(np.asarray(ids, dtype=str))
        key = (array.dtype.str, len(array), hashlib.blake2b(array.view(np.uint8).data).digest())
        hit = _SHARED_INDEXES.get(key)
        if hit is not None and np.array_equal(hit.ids, array):
            return hit
        index = cls(array)
        _SHARED_INDEXES[key] = index
        return index

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, key: str) -> bool:
        return key in self._pos

    def get(self, key: str) -> int | None:
        """Row of ``key``, or None if unknown."""
        return self._pos.get(key)

    def lookup(self, keys: list[str] | np.ndarray, missing: int = -1) -> np.ndarray:
        """Rows of many keys; unknown keys map to ``missing``.

        Args:
            keys: external ids.
            missing: the row reported for an unknown id.

        Returns:
            (len(keys),) int64 rows.
        """
        return np.fromiter((self._pos.get(k, missing) for k in keys), dtype=np.int64, count=len(keys))

    @cached_property
    def id_order(self) -> np.ndarray:
        """Each row's place when the ids are sorted as strings (ties broken by id, as Python sorts them)."""
        order = np.empty(len(self.ids), dtype=np.int64)
        order[np.argsort(self.ids, kind="stable")] = np.arange(len(self.ids))
        return order


# Live indexes by (dtype, length, digest of the ids); an entry goes when its index is no longer used.
_SHARED_INDEXES: "weakref.WeakValueDictionary[tuple[str, int, bytes], IdIndex]" = weakref.WeakValueDictionary()


@dataclass
class TrainingData:
    """What a recommender is fitted on: the interactions before a cutoff, encoded once and shared.

    Attributes:
        interactions: canonical interactions (all strictly before ``as_of``).
        items: the catalogue (``item_id`` first); row ``i`` is item index ``i``.
        users: optional customer attributes.
        item_index: catalogue items, then any interaction items missing from the catalogue.
        user_index: users with at least one interaction, in first-seen order.
        as_of: the end of the training window (exclusive); "now" for time-decayed features.
    """

    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame | None
    item_index: IdIndex
    user_index: IdIndex
    as_of: dt.datetime

    @classmethod
    def build(
        cls,
        interactions: pl.DataFrame,
        items: pl.DataFrame,
        users: pl.DataFrame | None = None,
        as_of: dt.datetime | None = None,
    ) -> "TrainingData":
        """Encode interactions against the catalogue.

        Args:
            interactions: canonical interactions of the training window.
            items: the catalogue (the item universe).
            users: optional customer attributes.
            as_of: end of the window; defaults to the day after the last interaction.
        """
        catalogue_ids = items["item_id"].to_list()
        extra = interactions.filter(~pl.col("item_id").is_in(items["item_id"].implode()))["item_id"].unique(maintain_order=True)
        if extra.len():
            items = pl.concat([items, pl.DataFrame({"item_id": extra})], how="diagonal_relaxed")
            catalogue_ids += extra.to_list()
        user_ids = interactions["user_id"].unique(maintain_order=True).to_list()
        if as_of is None:
            last = interactions["timestamp"].max() if interactions.height else dt.datetime(1970, 1, 1)
            assert isinstance(last, dt.datetime)
            as_of = dt.datetime.combine(last.date(), dt.time()) + dt.timedelta(days=1)
        return cls(interactions, items, users, IdIndex.shared(catalogue_ids), IdIndex.shared(user_ids), as_of)

    @cached_property
    def encoded(self) -> pl.DataFrame:
        """Interactions with integer ``user_idx`` and ``item_idx`` columns added.

        Only the two index columns are new: the interaction columns are shared with
        :attr:`interactions`, where joining onto the whole frame copied every one of them (1.7 GB
        for the 20M-row history of the 100x rung, held for as long as the window lives).
        """
        u = pl.DataFrame({"user_id": self.user_index.ids.tolist(), "user_idx": np.arange(len(self.user_index))})
        i = pl.DataFrame({"item_id": self.item_index.ids.tolist(), "item_idx": np.arange(len(self.item_index))})
        user_idx = self.interactions.select("user_id").join(u, on="user_id", how="left", maintain_order="left")["user_idx"]
        item_idx = self.interactions.select("item_id").join(i, on="item_id", how="left", maintain_order="left")["item_idx"]
        return self.interactions.with_columns(user_idx, item_idx)

    @cached_property
    def user_items(self) -> sp.csr_matrix:
        """Users x items, float32, summed interaction weights (repeat purchases add up)."""
        e = self.encoded
        m = sp.csr_matrix(
            (e["weight"].to_numpy().astype(np.float32), (e["user_idx"].to_numpy(), e["item_idx"].to_numpy())),
            shape=(len(self.user_index), len(self.item_index)),
            dtype=np.float32,
        )
        m.sum_duplicates()
        return m

    @property
    def n_users(self) -> int:
        """Users with at least one interaction in the window."""
        return len(self.user_index)

    @property
    def n_items(self) -> int:
        """Items in :attr:`item_index` (catalogue plus interaction-only items)."""
        return len(self.item_index)
