"""Ranked item lists of a batch of users as two arrays (item rows and per-user offsets).

Sources hand the fusion item rows, not id strings: a batch job over every customer (the
precomputed table at the 100x rung: 1.2M customers x ~1,000 listed items) spent a fifth of its
time mapping strings back to rows in a 619k-entry dict. Id strings are made only where a caller
wants them (a request's lists, offline scoring).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RowLists:
    """One ranked list of item rows per user, stored flat: user ``i`` has ``rows[offsets[i]:offsets[i + 1]]``.

    Attributes:
        rows: int64 item rows, each user's list best first.
        offsets: (n_users + 1,) int64 start of each user's list, ascending, ``offsets[-1] == len(rows)``.
    """

    rows: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0 or self.offsets[-1] != len(self.rows):
            raise ValueError(f"RowLists: offsets must run from 0 to len(rows)={len(self.rows)}, got {self.offsets[:3]}...{self.offsets[-3:]}")

    @classmethod
    def from_arrays(cls, lists: Sequence[np.ndarray]) -> RowLists:
        """Pack per-user arrays of item rows.

        Args:
            lists: one array of item rows per user, best first.

        Returns:
            The packed lists.
        """
        lengths = np.fromiter((len(a) for a in lists), dtype=np.int64, count=len(lists))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        rows = np.concatenate([np.asarray(a, dtype=np.int64) for a in lists]) if len(lists) else np.zeros(0, dtype=np.int64)
        return cls(rows.astype(np.int64, copy=False), offsets)

    @classmethod
    def repeated(cls, rows: np.ndarray, n_users: int) -> RowLists:
        """The same list for ``n_users`` users.

        Args:
            rows: the one list of item rows.
            n_users: how many users.

        Returns:
            The packed lists.
        """
        rows = np.asarray(rows, dtype=np.int64)
        return cls(np.tile(rows, n_users), np.arange(n_users + 1, dtype=np.int64) * len(rows))

    @classmethod
    def from_matrix(cls, rows: np.ndarray, keep: np.ndarray | None = None) -> RowLists:
        """Lists from a (n_users, k) matrix of rows (a search result), leaving out -1 padding and users not kept.

        Args:
            rows: (n_users, k) item rows, -1 where a search found fewer than k.
            keep: (n_users,) bool; a user with False gets an empty list.

        Returns:
            The packed lists.
        """
        valid = rows >= 0
        if keep is not None:
            valid &= np.asarray(keep, dtype=bool)[:, None]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(valid.sum(axis=1), out=offsets[1:])
        return cls(rows[valid].astype(np.int64, copy=False), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """(n_users,) list lengths."""
        return np.diff(self.offsets)

    def of(self, user: int) -> np.ndarray:
        """The ``user``-th list (a view)."""
        return self.rows[self.offsets[user] : self.offsets[user + 1]]

    def owners(self) -> np.ndarray:
        """(len(rows),) the user position of every stored row."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    def positions(self) -> np.ndarray:
        """(len(rows),) each stored row's 0-based place in its user's list."""
        return np.arange(len(self.rows), dtype=np.int64) - np.repeat(self.offsets[:-1], self.lengths)

    def mapped(self, row_map: np.ndarray) -> RowLists:
        """The same lists with every row replaced by ``row_map[row]`` (e.g. index rows to catalogue rows)."""
        return RowLists(row_map[self.rows], self.offsets)

    def head(self, k: int) -> RowLists:
        """The first ``k`` rows of every list."""
        return self._where(self.positions() < k)

    def without(self, seen: RowLists, n_items: int, k: int) -> RowLists:
        """Each list with the user's ``seen`` rows left out, then cut to ``k``.

        Args:
            seen: rows to leave out, one list per user (the same users, same order).
            n_items: an upper bound of the rows (they are keyed as ``user * n_items + row``).
            k: list length after filtering.

        Returns:
            The filtered lists.
        """
        if len(seen) != len(self):
            raise ValueError(f"RowLists.without: {len(seen)} seen lists for {len(self)} users")
        seen_keys = np.sort(seen.owners() * n_items + seen.rows)
        keys = self.owners() * n_items + self.rows
        at = np.minimum(np.searchsorted(seen_keys, keys), max(len(seen_keys) - 1, 0))
        is_seen = seen_keys[at] == keys if len(seen_keys) else np.zeros(len(keys), dtype=bool)
        kept = self._where(~is_seen)
        return kept.head(k)

    def to_id_lists(self, users: Sequence[str], item_ids: np.ndarray) -> dict[str, list[str]]:
        """user id -> ranked item ids.

        Args:
            users: the user ids, one per list.
            item_ids: item id per row.

        Returns:
            The lists as id strings (a user listed twice keeps the last list, as a dict does).
        """
        if len(users) != len(self):
            raise ValueError(f"RowLists.to_id_lists: {len(users)} users for {len(self)} lists")
        flat = item_ids[self.rows].tolist()
        bounds = self.offsets.tolist()
        return {u: flat[bounds[i] : bounds[i + 1]] for i, u in enumerate(users)}

    def _where(self, keep: np.ndarray) -> RowLists:
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.owners()[keep], minlength=len(self)), out=offsets[1:])
        return RowLists(self.rows[keep], offsets)
