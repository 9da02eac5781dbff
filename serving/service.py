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


class UnknownItemsError(LookupError):
    """Some requested item ids are not in the catalogue (the HTTP layer answers 404/422 with the list)."""

    def __init__(self, item_ids: list[str]):
        self.item_ids = item_ids
        super().__init__(f"unknown item ids: {', '.join(item_ids[:20])}" + (" ..." if len(item_ids) > 20 else ""))


class InvalidQueryError(ValueError):
    """A query field has a value the service cannot use (e.g. an unknown filter column).

    The HTTP layer answers 422 naming ``field``. Added after the first contract: services that never
    raise it stay valid implementations.
    """

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True)
class Query:
    """Who to recommend for: a known user, and/or context for an unknown visitor.

    Attributes:
        user_id: a known customer id, or None for an anonymous visitor.
        recent_item_ids: items the visitor looked at or bought just now (most recent last).
        text: a free-text preference ("black leather ankle boots").
        image: a preferred-look photo.
        text_weight, image_weight: how much text and image count when both are given.
        k: how many items to return.
        exclude_seen: drop items the user already bought.
        filters: catalogue column -> allowed values (e.g. {"product_group_name": ["Shoes"]}).
    """

    user_id: str | None = None
    recent_item_ids: tuple[str, ...] = ()
    text: str | None = None
    image: Image.Image | None = None
    text_weight: float = 0.5
    image_weight: float = 0.5
    k: int = 12
    exclude_seen: bool = False
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredItem:
    """An item with its score and the candidate sources that found it (source -> 0-based rank)."""

    item_id: str
    score: float
    sources: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Reasons:
    """Why an item was recommended, in terms a person can read.

    Attributes:
        sources: candidate sources that found it, with their ranks.
        image_similarity: cosine of the item's photo to the user's history photos (None: no photo / no history).
        text_similarity: cosine of the item's text to the user's history texts.
        contributions: the largest LightGBM feature contributions (feature, value), signed, largest |value| first.
    """

    sources: dict[str, int]
    image_similarity: float | None
    text_similarity: float | None
    contributions: list[tuple[str, float]]


@dataclass(frozen=True)
class RankedItem:
    """A reranked recommendation with its final score and reasons."""

    item_id: str
    score: float
    reasons: Reasons


@dataclass(frozen=True)
class ItemInfo:
    """Catalogue facts shown to people (name, type, colour, price ...)."""

    item_id: str
    name: str
    attributes: dict[str, str | float | None]
    has_image: bool


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
