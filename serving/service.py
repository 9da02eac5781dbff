"""The contract between the HTTP layer and the models behind it.

The FastAPI app (``serving/app.py``) only talks to a :class:`RecommendationService`; the
production implementation loads a trained model bundle (``serving/bundle_service.py``). Keeping
the contract here means the HTTP layer, the web page and their tests do not depend on how the
models were trained, and a new bundle can be swapped in behind a running server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image

from recsys.query import InvalidQueryError, Query, RankedItem, Reasons, ScoredItem, UnknownItemsError

__all__ = [
    "InvalidQueryError", "ItemInfo", "Query", "RankedItem", "Reasons", "RecommendationService", "ScoredItem",
    "UnknownItemsError", "UserSummary",
]


@dataclass(frozen=True)
class ItemInfo:
    """Catalogue facts shown to people (name, attributes, price; ``display``: the labels the config maps,
    e.g. product_type -> its value)."""

    item_id: str
    name: str
    attributes: dict[str, str | float | None]
    has_image: bool
    display: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UserSummary:
    """A customer and their recent purchases (most recent first), for pickers and the history strip."""

    user_id: str
    n_purchases: int
    recent_item_ids: list[str]


class RecommendationService(Protocol):
    """What the HTTP layer needs. Every method is safe to call from several threads at once."""

    @property
    def version(self) -> str:
        """The model bundle version being served."""
        ...

    def candidates(self, query: Query) -> list[ScoredItem]:
        """Candidate generation: merged sources, best first; popularity when nothing is known.

        Raises:
            UnknownItemsError: ``query.recent_item_ids`` holds ids not in the catalogue.
        """
        ...

    def recommendations(self, query: Query, n_candidates: int = 200) -> list[RankedItem]:
        """Candidates reranked by the learned ranker, each with its reasons."""
        ...

    def similar(self, item_id: str, k: int) -> list[ScoredItem]:
        """Items closest to ``item_id`` by fused content vector (raises UnknownItemsError)."""
        ...

    def search(self, text: str | None, image: Image.Image | None, text_weight: float, image_weight: float, k: int) -> list[ScoredItem]:
        """Multimodal search, two-stage (equal weights fetch, text-heavy rerank)."""
        ...

    def item(self, item_id: str) -> ItemInfo:
        """Catalogue facts (raises UnknownItemsError)."""
        ...

    def image_path(self, item_id: str) -> Path | None:
        """The item's photo inside the catalogue image root, or None (never a user-supplied path)."""
        ...

    def sample_users(self, n: int) -> list[UserSummary]:
        """A few customers with rich history, for the web page's picker."""
        ...

    def user(self, user_id: str) -> UserSummary | None:
        """A customer's purchase summary, or None if unknown."""
        ...
