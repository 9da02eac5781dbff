"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI spec and its examples).

Limits live here, next to the fields they bound, so the spec documents them and every
out-of-range value is answered with a 422 that names the field.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.json_schema import JsonDict
from pydantic_core import PydanticCustomError

ID_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
MAX_K = 200
MAX_RECOMMEND_K = 100
MAX_CANDIDATES = 500
MAX_RECENT_ITEMS = 50
MAX_TEXT = 500
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_FILTER_VALUES = 50

FILTER_KEY_PATTERN = r"^[A-Za-z0-9_]{1,64}$"


def _whole_number(value: object) -> object:
    """JSON Schema counts ``12.0`` as an integer; pydantic's strict mode does not: let whole floats through as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Request fields take JSON types exactly as the OpenAPI spec states them (the request models are
# strict): a boolean is only true/false (not 0, 1 or "yes"), an integer is not a string, a bool or
# 2.5, a number is not a string or a bool. Pydantic's default (lax) mode converted those, so the
# server accepted requests that its own spec calls invalid.
JsonInt = Annotated[int, BeforeValidator(_whole_number)]


# Query and form values arrive as text, so they cannot be strict; pydantic's lax parsing read more
# spellings than the spec's types allow (0/1/yes/on as a boolean, "+0.0" or "1_0" as an integer).
# A text value is accepted when it is the JSON spelling of a value of the declared type.
_JSON_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _text_bool(value: object) -> object:
    if isinstance(value, str):
        if value in ("true", "false"):
            return value == "true"
        raise PydanticCustomError("bool_parsing", "Input should be true or false")
    return value


def _text_int(value: object) -> object:
    if isinstance(value, str):
        if _JSON_INTEGER.fullmatch(value):
            return int(value)
        if _JSON_NUMBER.fullmatch(value):
            number = float(value)
            if number.is_integer():  # 12.0 is an integer in JSON Schema
                return int(number)
            if math.isfinite(number):
                raise PydanticCustomError("int_from_float", "Input should be a valid integer, got a number with a fractional part")
        raise PydanticCustomError("int_parsing", "Input should be a valid integer, unable to parse string as an integer")
    return value


def _text_number(value: object) -> object:
    if isinstance(value, str):
        if _JSON_NUMBER.fullmatch(value):
            return float(value)
        raise PydanticCustomError("float_parsing", "Input should be a valid number, unable to parse string as a number")
    return value


# Validators to put *after* the parameter's ``Query(...)`` / ``Form(...)`` in ``Annotated``: placed
# before it, they hide its bounds from the spec (written as ``ge``/``le`` instead of ``minimum``/``maximum``).
TEXT_BOOL = BeforeValidator(_text_bool)
TEXT_INT = BeforeValidator(_text_int)
TEXT_NUMBER = BeforeValidator(_text_number)

ItemId = Annotated[str, Field(pattern=ID_PATTERN, description="catalogue item id", examples=["0706016001"])]
Weight = Annotated[float, Field(ge=0.0, le=1.0)]
FilterKey = Annotated[str, Field(pattern=FILTER_KEY_PATTERN)]


def _filters_json_schema(schema: JsonDict) -> None:
    """Spell the filters object as ``propertyNames`` + ``additionalProperties``.

    Pydantic writes a key pattern as ``patternProperties``, which leaves keys that do not match it
    unconstrained (any value), while the server refuses them: the spec allowed what the server
    rejected. Now every key must match the pattern and every value is a list of strings, exactly
    what the model validates. Whether a well-formed key names a catalogue column depends on the
    loaded bundle: an unknown column is a 422 naming ``filters.<column>`` (documented).
    """
    patterns = schema.pop("patternProperties", None)
    if isinstance(patterns, dict) and FILTER_KEY_PATTERN in patterns:
        schema["propertyNames"] = {"pattern": FILTER_KEY_PATTERN}
        schema["additionalProperties"] = patterns[FILTER_KEY_PATTERN]


_EXAMPLE_USER = "6e38d8f80e5c6d0db8d348a50c3c6ac29b17dfd3ac83d1b6bc33f090f8c03ab1"


class Strict(BaseModel):
    """Unknown fields are an error (a typo such as ``exclude_sen`` must not be silently ignored), and
    values are not coerced between JSON types (``"details": 0`` is not a boolean, ``"k": "3"`` not an integer)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CandidatesRequest(Strict):
    """Who to generate candidates for: a known customer, or an anonymous visitor's context.

    With nothing but an unknown (or no) ``user_id``, the answer falls back to recent popularity.
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"user_id": _EXAMPLE_USER, "k": 100, "exclude_seen": False},
                {"recent_item_ids": ["0706016001", "0372860002"], "text": "black leather ankle boots", "k": 20},
                {"text": "summer dress with flowers", "filters": {"product_group_name": ["Garment Full body"]}, "k": 12},
            ]
        },
    )

    user_id: str | None = Field(None, pattern=ID_PATTERN, description="customer id; unknown ids are treated as visitors")
    recent_item_ids: list[ItemId] = Field(
        default_factory=list, max_length=MAX_RECENT_ITEMS, description="items the visitor just looked at or bought, most recent last"
    )
    text: str | None = Field(None, max_length=MAX_TEXT, description="a free-text preference")
    image_base64: str | None = Field(
        None,
        max_length=(MAX_IMAGE_BYTES * 4) // 3 + 4,
        description="a preferred-look photo, base64 (JPEG, PNG or WebP; at most 5 MiB and 16.7 Mpixel); "
        "a data: URL prefix is accepted",
    )
    text_weight: Weight = Field(0.5, description="weight of the text preference when both text and image are given")
    image_weight: Weight = Field(0.5, description="weight of the image preference")
    k: JsonInt = Field(12, ge=1, le=MAX_K, description=f"number of items, 1..{MAX_K}")
    exclude_seen: bool | None = Field(
        None, description="drop items the customer already had; null/absent: the model's repeat policy (the config's `repeats`)"
    )
    filters: dict[FilterKey, list[Annotated[str, Field(max_length=200)]]] = Field(
        default_factory=dict,
        max_length=10,
        description="catalogue column -> allowed values, e.g. {\"product_group_name\": [\"Shoes\"]}; "
        "a column the loaded catalogue does not have is a 422 naming `filters.<column>`",
        json_schema_extra=_filters_json_schema,
    )
    details: bool = Field(False, description="include each item's catalogue facts (name, type, colour, price, image URL)")


class RecommendationsRequest(CandidatesRequest):
    """Candidates reranked by the learned ranker; every item comes with its reasons."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"user_id": _EXAMPLE_USER, "k": 12, "n_candidates": 200},
                {"text": "black leather ankle boots", "k": 12},
            ]
        },
    )

    k: JsonInt = Field(12, ge=1, le=MAX_RECOMMEND_K, description=f"number of recommendations, 1..{MAX_RECOMMEND_K}")
    n_candidates: JsonInt = Field(200, ge=1, le=MAX_CANDIDATES, description=f"candidates to rerank, 1..{MAX_CANDIDATES}")
    details: bool = Field(True, description="include each item's catalogue facts")


class ReloadRequest(Strict):
    """Which bundle to swap in: a version folder name below the bundles root; default: the ``latest`` pointer."""

    version: str | None = Field(None, pattern=ID_PATTERN, examples=["v20261121-081500-ab12cd"])


class ItemOut(BaseModel):
    """Catalogue facts for display."""

    item_id: str
    name: str
    product_type: str | None = None
    product_group: str | None = None
    colour: str | None = None
    price: float | None = Field(None, description="mean price paid in the training window (H&M prices are scaled)")
    attributes: dict[str, str | float | None] = Field(default_factory=dict)
    has_image: bool
    image_url: str | None = Field(None, description="relative URL of the photo, null when the item has none")


class Contribution(BaseModel):
    """One ranking feature's signed contribution to the final score (LightGBM pred_contrib)."""

    feature: str
    value: float


class ReasonsOut(BaseModel):
    """Why an item was recommended."""

    sources: dict[str, int] = Field(description="candidate source -> 0-based rank in that source")
    image_similarity: float | None = Field(description="cosine of the item's photo to the customer's history photos (or to the visitor's photo)")
    text_similarity: float | None = Field(description="cosine of the item's text to the customer's history (or to the visitor's words)")
    contributions: list[Contribution] = Field(description="largest feature contributions, largest |value| first")


class ScoredItemOut(BaseModel):
    item_id: str
    score: float
    sources: dict[str, int] = Field(description="candidate source -> 0-based rank in that source")
    item: ItemOut | None = None


class RankedItemOut(BaseModel):
    item_id: str
    score: float = Field(description="final reranker score (higher is better; comparable within one response)")
    reasons: ReasonsOut
    item: ItemOut | None = None


class ScoredItemsResponse(BaseModel):
    model_version: str
    items: list[ScoredItemOut]


class RecommendationsResponse(BaseModel):
    model_version: str
    items: list[RankedItemOut]


class UserOut(BaseModel):
    user_id: str
    n_purchases: int
    recent_items: list[ItemOut] = Field(description="recent purchases, most recent first")


class SampleUsersResponse(BaseModel):
    model_version: str
    users: list[UserOut]


class ErrorField(BaseModel):
    field: str = Field(description="where the problem is, e.g. 'k' or 'recent_item_ids.2'")
    problem: str


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    error: str = Field(description="a short code: invalid_request, unknown_items, not_found, payload_too_large, ...")
    message: str = Field(description="one readable sentence naming the field and the problem")
    fields: list[ErrorField] = Field(default_factory=list)
    unknown_item_ids: list[str] | None = None


class HealthResponse(BaseModel):
    status: str
    pid: int = Field(description="the worker process that answered (a server runs one per core)")


class ReadyResponse(BaseModel):
    status: str
    model_version: str | None = None


class ReloadResponse(BaseModel):
    status: str = Field(description="'reloaded' or 'unchanged'")
    previous_version: str
    model_version: str
