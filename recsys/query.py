"""What a recommendation request is and what it returns: the library's query and result types.

The HTTP layer translates requests into a :class:`Query`; the recommendation engine
(:mod:`features.engine`) answers with :class:`ScoredItem` / :class:`RankedItem` lists, and raises
:class:`UnknownItemsError` / :class:`InvalidQueryError` for requests it cannot answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
        exclude_seen: drop items the user already had; None follows the model's repeat policy
            (the project's ``repeats``).
        filters: catalogue column -> allowed values (e.g. {"product_group_name": ["Shoes"]}).
    """

    user_id: str | None = None
    recent_item_ids: tuple[str, ...] = ()
    text: str | None = None
    image: Image.Image | None = None
    text_weight: float = 0.5
    image_weight: float = 0.5
    k: int = 12
    exclude_seen: bool | None = None
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
