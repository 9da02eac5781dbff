"""Tower sizes and feature keys: plain data, importable without torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

USER_ID, ITEM_ID, HIST_ITEM = "user_id", "item_id", "hist_item_id"


@dataclass(frozen=True)
class TowerSpec:
    """Sizes that define the towers (saved with the weights to rebuild the module).

    Attributes:
        n_users: rows of the user-id table.
        n_items: rows of the item-id table.
        category_sizes: rows of each metadata table, in ``categories`` order.
        categories: metadata column names.
        user_dense_dim: width of user dense features (ALS | content centroid | attributes | stats).
        item_dense_dim: width of item dense features (content | ALS | price).
        als_dim: ALS factor width (the user dense features start with it; item dense has it after content).
        content_dim: content vector width.
        id_dim: id and history embedding width.
        category_dim: metadata embedding width.
        hidden: hidden layer sizes of both MLPs.
        output_dim: learned output width.
    """

    n_users: int
    n_items: int
    category_sizes: tuple[int, ...]
    categories: tuple[str, ...]
    user_dense_dim: int
    item_dense_dim: int
    als_dim: int
    content_dim: int
    id_dim: int = 64
    category_dim: int = 16
    hidden: tuple[int, ...] = (256,)
    output_dim: int = 64

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> "TowerSpec":
        """The spec of ``dataclasses.asdict(spec)`` read back from JSON (its tuples come back as lists).

        Args:
            saved: the saved fields.

        Returns:
            The spec.
        """
        tuples = {name: tuple(saved[name]) for name in ("category_sizes", "categories", "hidden")}
        return cls(**{**saved, **tuples})

    @property
    def item_keys(self) -> list[str]:
        """Sparse feature keys of the item tower: item id, then one per category."""
        return [ITEM_ID, *(f"cat_{c}" for c in self.categories)]

    @property
    def user_keys(self) -> list[str]:
        """Sparse feature keys of the user tower: user id, history items, then history categories."""
        return [USER_ID, HIST_ITEM, *(f"hist_cat_{c}" for c in self.categories)]

    @property
    def keys(self) -> list[str]:
        """All sparse feature keys, user tower's first."""
        return [*self.user_keys, *self.item_keys]
