"""Typed, validated project configuration loaded from ``configs/*.yaml``.

Every stage reads its settings from one :class:`ProjectConfig`. Paths in the YAML may use
``${VAR}`` / ``${VAR:-default}`` environment expansion; relative data paths are resolved against
``RECSYS_DATA_DIR`` (default ``../shared/data/hm`` relative to the project root).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from recsys.config_base import StrictModel
from recsys.content_config import ContentConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data" / "hm"
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([hdw])\s*$")
_UNIT_HOURS = {"h": 1.0, "d": 24.0, "w": 168.0}


def parse_duration(value: Any) -> Any:
    """``'7d'``, ``'12h'``, ``'2w'`` or a number of days -> timedelta; anything else is left to pydantic (ISO 8601).

    Args:
        value: the configured value.

    Returns:
        A timedelta, or ``value`` unchanged.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return dt.timedelta(days=value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return dt.timedelta(hours=float(m.group(1)) * _UNIT_HOURS[m.group(2)])
    return value


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]


class ConfigError(ValueError):
    """A configuration file is missing, malformed or fails validation."""


class InteractionColumns(StrictModel):
    """Maps the columns of an interaction log onto the canonical names."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str = "timestamp"
    weight: str | None = None
    rating: str | None = None
    price: str | None = None
    channel: str | None = None
    event: str | None = Field(default=None, description="event type (view, cart, purchase, ...); needs event_weights")


class FileFormat(StrictModel):
    """How a table file is read; shared by the interaction log, the catalogue and the customer table.

    Only ``format`` applies to parquet; the rest are CSV options (``encoding`` also applies to JSON lines).
    """

    format: Literal["auto", "parquet", "csv", "jsonl"] = Field(
        default="auto", description="auto: .csv/.tsv/.txt -> csv, .jsonl/.ndjson -> jsonl, anything else -> parquet"
    )
    separator: str | None = Field(
        default=None, description="CSV field separator, one character ('\\t' is read as tab); None: tab for .tsv, else ','"
    )
    quote_char: str | None = Field(default='"', description="CSV quote character; null turns quoting off")
    encoding: Literal["utf8", "utf8-lossy"] = Field(
        default="utf8", description="utf8-lossy replaces invalid bytes instead of failing; a byte-order mark is always stripped"
    )
    has_header: bool = Field(default=True, description="false: the first line is data and column_names names the columns")
    column_names: list[str] | None = Field(
        default=None, description="names of the file's columns, in order (required without a header; renames a header)"
    )
    comment_prefix: str | None = Field(default=None, description="CSV lines starting with this (1-5 characters) are skipped")

    @field_validator("separator", "quote_char")
    @classmethod
    def _one_character(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        value = {"\\t": "\t"}.get(value, value)
        if len(value.encode()) != 1:
            raise ValueError(f"{info.field_name} must be one single-byte character (e.g. ',', ';', '\\t', '|'), got {value!r}")
        return value

    @field_validator("comment_prefix")
    @classmethod
    def _short_prefix(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= len(value) <= 5:
            raise ValueError(f"comment_prefix must be 1 to 5 characters, got {value!r}")
        return value

    @model_validator(mode="after")
    def _names_for_headerless(self) -> FileFormat:
        if self.column_names is not None and (not self.column_names or len(set(self.column_names)) != len(self.column_names)):
            raise ValueError(f"column_names must be distinct and non-empty, got {self.column_names}")
        if not self.has_header and self.column_names is None:
            raise ValueError("has_header is false: list the file's columns in column_names")
        return self


class InteractionSource(FileFormat):
    """An interaction log (purchases, clicks, explicit ratings, or several kinds of event)."""

    path: str
    columns: InteractionColumns = InteractionColumns()
    timestamp_format: str | None = Field(
        default=None, description="strftime format for string timestamps; None parses ISO dates/times"
    )
    timestamp_unit: Literal["s", "ms"] | None = Field(
        default=None, description="set when the timestamp column holds integer epoch times"
    )
    rating_threshold: float | None = Field(
        default=None, description="explicit ratings >= threshold become positives; the rest are dropped and reported"
    )
    event_weights: dict[str, float] = Field(
        default_factory=dict,
        description="weight of each event type (e.g. view: 1, cart: 3, purchase: 10), multiplied into the weight column; "
        "a type missing here is an error (dropped and reported under validation.on_error: drop)",
    )
    target_events: list[str] | None = Field(
        default=None, description="event types the ranker learns and the evaluation scores; None: all"
    )

    @model_validator(mode="after")
    def _events_consistent(self) -> InteractionSource:
        bad = {k: w for k, w in self.event_weights.items() if not (w > 0 and w != float("inf"))}
        if bad:
            raise ValueError(f"event_weights must be positive and finite, got {bad}")
        if self.columns.event is None:
            if self.event_weights or self.target_events is not None:
                raise ValueError("event_weights / target_events need the event column: set columns.event")
            return self
        if not self.event_weights:
            raise ValueError(f"columns.event is {self.columns.event!r}: give every event type a weight in event_weights")
        if self.target_events is not None:
            unknown = [e for e in self.target_events if e not in self.event_weights]
            if unknown or not self.target_events:
                raise ValueError(
                    f"target_events must name event types of event_weights {sorted(self.event_weights)}; "
                    f"{'unknown: ' + str(unknown) if unknown else 'it is empty'}"
                )
        return self


class ItemColumns(StrictModel):
    """Maps catalogue columns onto canonical names; ``categorical`` lists metadata used as features."""

    item_id: str = "item_id"
    name: str | None = None
    categorical: list[str] = []
    text: list[str] = []
    display: dict[Literal["product_type", "product_group", "colour"], str] = Field(
        default_factory=dict, description="catalogue columns behind the API's and page's product type / group / colour labels"
    )


class ItemSource(FileFormat):
    """The item catalogue, optionally with product images."""

    path: str
    columns: ItemColumns = ItemColumns()
    image_dir: str | None = None
    image_template: str = Field(
        default="{item_id}.jpg",
        description="path of an item's image below image_dir; supports {item_id} and slices like {item_id[:3]}",
    )


class UserSource(FileFormat):
    """Optional customer attributes."""

    path: str
    user_id: str = "user_id"
    categorical: list[str] = []
    numeric: list[str] = []


class ValidationPolicy(StrictModel):
    """What to do with bad rows: fail loudly, or drop them and report exactly what was dropped."""

    on_error: Literal["fail", "drop"] = "fail"
    unknown_items: Literal["fail", "drop", "keep"] = Field(
        default="fail", description="interactions whose item is not in the catalogue"
    )
    check_images: Literal["none", "exists", "decode"] = "exists"
    max_examples: int = Field(default=5, ge=1, le=100)


class DataConfig(StrictModel):
    """Where the data lives and how to read it."""

    data_dir: str = Field(default="${RECSYS_DATA_DIR:-" + str(DEFAULT_DATA_DIR) + "}")
    interactions: InteractionSource
    items: ItemSource
    users: UserSource | None = None
    validation: ValidationPolicy = ValidationPolicy()
    user_sample: float | None = Field(
        default=None, gt=0, le=1, description="keep this share of users (stable hash of the id): small CI/dev runs"
    )
    catalogue: Literal["all", "interacted"] = Field(
        default="all", description="'interacted' keeps only items that appear in the (sampled) log: small CI/dev runs"
    )

    def resolve(self, path: str | None) -> Path | None:
        """Resolve a data path: absolute stays, relative is taken below ``data_dir`` (itself relative to the project root)."""
        if path is None:
            return None
        p = Path(expand_env(path))
        if p.is_absolute():
            return p
        root = Path(expand_env(self.data_dir))
        return (root if root.is_absolute() else PROJECT_ROOT / root) / p


class SplitConfig(StrictModel):
    """Time-based split. ``global``: one cutoff for everybody; ``per_user``: each user's last days."""

    mode: Literal["global", "per_user"] = "global"
    test_start: dt.date | None = Field(default=None, description="first test day; None = the last `test` window of the log")
    test: Duration = Field(default=dt.timedelta(days=1), description="test window: '1d', '7d', '30d', '12h' (hours for click logs)")
    validation: Duration = Field(
        default=dt.timedelta(days=1), description="validation window before the test window (the reranker's first label window)"
    )

    @field_validator("test", "validation")
    @classmethod
    def _window_not_negative(cls, value: dt.timedelta, info: ValidationInfo) -> dt.timedelta:
        if value < dt.timedelta(0) or (info.field_name == "test" and value <= dt.timedelta(0)):
            raise ValueError(f"split.{info.field_name} must be positive{' (or 0 for validation)' if info.field_name == 'validation' else ''}")
        return value
    warm_users_only: bool = True


class EvaluationConfig(StrictModel):
    """Metric settings shared by every evaluation (CLI, training run, notebooks)."""

    k: int = Field(default=12, ge=1)
    recall_ks: list[int] = [12, 100]
    bootstrap_samples: int = Field(default=1000, ge=10)
    max_users: int | None = Field(
        default=10_000, ge=100,
        description="test users scored, a fixed-seed sample when there are more (every model scores every item for each, "
        "so the cost is users x items; 10,000 users keep bootstrap intervals of MAP@12 near +-0.003); None: all of them",
    )
    seed: int = 0
    workers: int = Field(
        default=2, ge=1,
        description="processes scoring the test users' lists (forked, sharing the fitted models; the users go in blocks of a "
        "fixed size, so the lists are the same for any number). One per core: each scores on one thread",
    )


class PopularityConfig(StrictModel):
    """The popularity baseline; its window also drives the history model's popularity fill."""

    window_days: int = Field(default=2, ge=1)


class ALSConfig(StrictModel):
    """implicit's ALS, with the confidence weighting (and its BM25 parameters) of the training matrix."""

    factors: int = Field(default=128, ge=1)
    iterations: int = Field(default=15, ge=1)
    regularization: float = Field(default=0.05, ge=0)
    alpha: float = Field(default=1.0, gt=0)
    weighting: Literal["none", "bm25", "tfidf"] = "bm25"
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    seed: int = 0


class BPRConfig(StrictModel):
    """implicit's Bayesian personalised ranking."""

    factors: int = Field(default=128, ge=1)
    iterations: int = Field(default=100, ge=1)
    learning_rate: float = 0.01
    regularization: float = 0.01
    seed: int = 0


class ItemKNNConfig(StrictModel):
    """implicit's item-item nearest neighbours (also the co-purchase candidate source)."""

    neighbours: int = Field(default=100, ge=1)
    similarity: Literal["cosine", "bm25", "tfidf"] = "cosine"


class EASEConfig(StrictModel):
    """EASE (Steck 2019): a closed-form item-item model; dense, so only for catalogues up to ``max_items``."""

    l2: float = Field(default=300.0, gt=0, description="ridge penalty lambda of the item-item regression")
    max_items: int = Field(default=30_000, ge=1, description="items above which EASE is refused (it needs an n_items^2 matrix)")


class ModelsConfig(StrictModel):
    """Settings of each classic model, by registry name."""

    popularity: PopularityConfig = PopularityConfig()
    als: ALSConfig = ALSConfig()
    bpr: BPRConfig = BPRConfig()
    itemknn: ItemKNNConfig = ItemKNNConfig()
    ease: EASEConfig = EASEConfig()


class TwoTowerConfig(StrictModel):
    """The TorchRec two-tower retriever (recsys/two_tower)."""

    id_dim: int = Field(default=64, ge=4, description="item-id / user-id embedding size (also the history bag)")
    category_dim: int = Field(default=16, ge=2, description="embedding size of each item metadata table")
    hidden: list[int] = [256]
    output_dim: int = Field(default=64, ge=4, description="size of each tower's learned output (skip paths are added)")
    temperature: float = Field(default=0.07, gt=0)
    logq_correction: bool = True
    extra_negatives: int = Field(default=0, ge=0, description="uniformly sampled catalogue negatives per batch")
    id_dropout: float = Field(default=0.25, ge=0, le=1, description="chance of hiding an example's item id (cold items)")
    cold_simulation: float = Field(
        default=0.0, ge=0, le=1,
        description="share of id-dropped items that also lose ALS factors and price (a fully cold item); 0.25 cost "
        "validation Recall@100 0.368 -> 0.325 after 2 epochs on H&M",
    )
    user_id_dropout: float = Field(default=0.5, ge=0, le=1)
    recency_half_life_days: float = Field(default=2.0, gt=0)
    max_history: int = Field(default=50, ge=1)
    example_days: int | None = Field(
        default=None, ge=1,
        description="train on purchases of the window's last N days only (their histories still reach back); None: every day",
    )
    max_examples: int | None = Field(
        default=4_000_000, ge=1,
        description="the most recent purchases that become training examples when the window has more (each costs an "
        "ALS fold-in when the examples are built); None: every purchase",
    )
    epoch_examples: int | None = Field(
        default=2_000_000, ge=1,
        description="examples drawn (without replacement, a new draw each epoch) per epoch when the window has more; "
        "None: every example every epoch. Keeps an epoch's cost flat as the log grows",
    )
    batch_size: int = Field(default=1024, ge=2)
    learning_rate: float = Field(default=0.003, gt=0)
    embedding_learning_rate: float = Field(default=0.05, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_epochs: int = Field(default=8, ge=1)
    patience: int = Field(default=1, ge=1)
    validation_k: int = Field(default=100, ge=1)
    validation_users: int | None = Field(
        default=10_000, ge=1,
        description="held-out users whose Recall@k decides early stopping, a fixed-seed sample when there are more "
        "(each costs a search of the whole catalogue per epoch); None: all of them",
    )
    validation_days: int = Field(
        default=1, ge=0, description="days held out of fit() data for early stopping (0: no early stopping, run max_epochs)"
    )
    threads: int = Field(default=2, ge=1)
    seed: int = 0


class IndexConfig(StrictModel):
    """FAISS index over item-tower vectors: exact inner product up to ``exact_max_items``, approximate above.

    ``ann`` picks the approximate index: an HNSW graph (``hnsw_m``, ``ef_construction``, ``ef_search``)
    or an inverted file of exact vectors (``ivf_lists`` k-means cells, ``nprobe`` of them scanned).
    """

    exact_max_items: int = Field(default=50_000, ge=1)
    ann: Literal["hnsw", "ivf"] = "hnsw"
    hnsw_m: int = Field(default=32, ge=4)
    ef_construction: int = Field(default=200, ge=8)
    ef_search: int = Field(default=1024, ge=8)
    ivf_lists: int = Field(default=0, ge=0, description="IVF cells; 0 = about 4 * sqrt(items), a power of two")
    nprobe: int = Field(default=128, ge=1, description="IVF cells scanned per query")
    screen_rank: int = Field(
        default=128, ge=0,
        description="batch searches (training folds, precomputed candidates) score the items bought in the window in full "
        "and screen the never-bought ones through a bound from their top screen_rank principal directions (exact); 0 = off",
    )

    def breadth(self, kind: str) -> int:
        """The search breadth configured for an index kind: ``nprobe`` (IVF) or ``ef_search`` (HNSW)."""
        return int(getattr(self, _BREADTH_FIELD.get(kind, "ef_search")))

    def with_breadth(self, kind: str, value: int) -> "IndexConfig":
        """A copy whose search breadth for ``kind`` is ``value``.

        Args:
            kind: ``"ivf"`` sets ``nprobe``; any other kind sets ``ef_search``.
            value: the new breadth.

        Returns:
            A new config; this one is unchanged.
        """
        return self.model_copy(update={_BREADTH_FIELD.get(kind, "ef_search"): value})


_BREADTH_FIELD = {"ivf": "nprobe", "hnsw": "ef_search"}


class CandidatesConfig(StrictModel):
    """Candidate sources and their merge (recsys/candidates)."""

    size: int = Field(default=150, ge=1)
    per_source: int = Field(default=150, ge=1, description="items each source proposes before the merge")
    sources: list[Literal["history", "two_tower", "als", "copurchase", "content", "same_product", "ease", "popularity"]] = [
        "history", "two_tower", "als", "copurchase", "content", "same_product", "popularity"
    ]
    product_column: str | None = Field(
        default=None, description="catalogue column grouping variants of one product (the same_product source); None: the source is off"
    )
    weights: dict[str, float] = Field(default_factory=dict, description="per-source fusion weights; unset = 1")
    rrf_k: float = Field(default=10.0, gt=0, description="reciprocal-rank-fusion constant: score += w / (rrf_k + rank)")
    recent_items: int = Field(default=5, ge=1, description="latest history items whose neighbours are proposed")
    popularity_days: int = Field(default=2, ge=1)


class RetrievalConfig(StrictModel):
    """Collaborative factors, two-tower, FAISS index and candidates (issue 4)."""

    content_kind: Literal["fused", "text", "image"] = Field(
        default="fused", description="which of the content stage's vectors (content.vectors_path) the two-tower and content source read"
    )
    two_tower: TwoTowerConfig = TwoTowerConfig()
    index: IndexConfig = IndexConfig()
    candidates: CandidatesConfig = CandidatesConfig()


class LambdaRankParams(StrictModel):
    """LightGBM LambdaRank settings (``recsys/ranking/lambdarank.py``); defaults suit ~1e5-1e6 candidate pairs on 2 cores."""

    num_leaves: int = Field(default=63, ge=2)
    learning_rate: float = Field(default=0.05, gt=0)
    n_estimators: int = Field(default=400, ge=1)
    min_child_samples: int = Field(default=50, ge=1)
    feature_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_freq: int = Field(default=1, ge=0)
    lambdarank_truncation_level: int = Field(default=20, ge=1)
    eval_at: tuple[int, ...] = (12,)
    early_stopping_rounds: int = Field(default=40, ge=1)
    seed: int = 0
    num_threads: int = Field(default=2, ge=1)


class RerankerConfig(LambdaRankParams):
    """The reranker section: the LambdaRank settings plus where the training labels come from."""

    label_folds: int = Field(
        default=1, ge=1, le=14,
        description="label windows (each as long as split.validation, the first is the validation window, the others "
        "before it) whose target events label training candidates; each is one retrieval fold fitted on the time "
        "before it (more folds = more ranking groups, one retrieval fit each)",
    )
    min_label_users: int = Field(
        default=50, ge=1, description="fewest label users with a bought item among their candidates to train a ranker on"
    )
    valid_share: float = Field(default=0.15, ge=0, lt=1, description="label users held out for early stopping")
    max_label_users: int | None = Field(
        default=10_000, ge=1,
        description="label users per fold, a fixed-seed sample when a window has more (each adds a group of "
        "candidates.size training rows); None: all of them",
    )


class ServingConfig(StrictModel):
    """What `recsys train` prepares for the server beyond the models."""

    precompute_candidates: int = Field(
        default=200, ge=0,
        description="merged candidates stored per known customer in the bundle, computed in batches at training time "
        "(known customers are then served by a lookup up to this many); 0: every list is computed per request",
    )
    precompute_workers: int = Field(
        default=2, ge=1,
        description="processes computing the precomputed candidates (forked, sharing the fitted generator); much of a "
        "batch is single-threaded Python, so one per core. The table is the same for any number",
    )


class ProjectConfig(StrictModel):
    """The whole configuration of one project (one data set, one set of model settings)."""

    name: str
    work_dir: str = Field(default="artifacts", description="where runs, caches and bundles are written")
    data: DataConfig
    split: SplitConfig = SplitConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    models: ModelsConfig = ModelsConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    content: ContentConfig = ContentConfig()
    reranker: RerankerConfig = RerankerConfig()
    serving: ServingConfig = ServingConfig()
    repeats: Literal["allow", "exclude"] = Field(
        default="allow",
        description="may items a user already consumed be recommended? 'allow' where people re-buy (fashion, grocery), "
        "'exclude' where they never repeat (films); every model, source, the ranker's pool, the evaluation and the "
        "server's default follow it (`recsys validate` measures the log's repeat rate and recommends one)",
    )
    # Sections owned by later stages (content, two_tower, ranker, serving) are parsed by their
    # own modules from here, so this file does not grow with every stage.
    extras: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, raw: Any) -> Any:
        """Read configs written before keys were renamed (bundles trained by an earlier version keep theirs).

        ``split.test_days`` / ``validation_days`` became the durations ``split.test`` / ``validation``,
        ``reranker.label_days`` became ``label_folds``, and ``retrieval.content_vectors`` /
        ``standin_dim`` gave way to ``content.vectors_path`` (the stand-in is now a content backend).
        """
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        split = raw.get("split")
        if isinstance(split, dict) and ("test_days" in split or "validation_days" in split):
            split = dict(split)
            for old, new in (("test_days", "test"), ("validation_days", "validation")):
                if old in split:
                    split.setdefault(new, dt.timedelta(days=split.pop(old)))
            raw["split"] = split
        reranker = raw.get("reranker")
        if isinstance(reranker, dict) and "label_days" in reranker:
            reranker = dict(reranker)
            reranker.setdefault("label_folds", reranker.pop("label_days"))
            raw["reranker"] = reranker
        retrieval = raw.get("retrieval")
        if isinstance(retrieval, dict) and ("content_vectors" in retrieval or "standin_dim" in retrieval):
            retrieval = {k: v for k, v in retrieval.items() if k not in ("content_vectors", "standin_dim")}
            raw["retrieval"] = retrieval
        return raw

    @model_validator(mode="before")
    @classmethod
    def _item_text_from_columns(cls, raw: Any) -> Any:
        """The content stage's item text defaults to the catalogue's configured text columns."""
        if not isinstance(raw, dict):
            return raw
        content = raw.get("content")
        content = dict(content) if isinstance(content, dict) else content
        if content is not None and not isinstance(content, dict):
            return raw  # an already-built ContentConfig keeps its own templates
        content = content or {}
        if not content.get("text_parts"):
            items = (raw.get("data") or {}).get("items") if isinstance(raw.get("data"), dict) else None
            columns = (items or {}).get("columns") if isinstance(items, dict) else None
            text = (columns or {}).get("text") if isinstance(columns, dict) else None
            if text:
                content["text_parts"] = [". ".join("{" + c + "}" for c in text)]
                return {**raw, "content": content}
        return raw

    @field_validator("name")
    @classmethod
    def _name_is_slug(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError("name must contain only letters, digits, '.', '_' and '-'")
        return value

    @model_validator(mode="after")
    def _recall_ks_positive(self) -> "ProjectConfig":
        if any(k <= 0 for k in self.evaluation.recall_ks):
            raise ValueError("evaluation.recall_ks must be positive")
        return self

    @property
    def work_path(self) -> Path:
        """``work_dir`` with environment variables expanded, relative to the project root."""
        p = Path(expand_env(self.work_dir))
        return p if p.is_absolute() else PROJECT_ROOT / p


def expand_env(text: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (an empty variable counts as unset).

    Args:
        text: the string to expand.

    Returns:
        ``text`` with every reference replaced.

    Raises:
        ConfigError: a variable is unset and has no default.
    """

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set and has no default (in {text!r})")

    return _ENV_PATTERN.sub(replace, text)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ProjectConfig:
    """Load and validate a YAML config.

    Args:
        path: the YAML file.
        overrides: nested keys merged over the file's content (used by tests and notebooks).

    Returns:
        The validated config.

    Raises:
        ConfigError: the file is missing, is not YAML, or a field is invalid (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    if "extends" in raw:
        # A variant config names its base and overrides only what differs.
        base = path.parent / str(raw.pop("extends"))
        raw = deep_merge(_read_raw(base), raw)
    if overrides:
        raw = deep_merge(raw, overrides)
    try:
        return ProjectConfig.model_validate(raw)
    except Exception as exc:  # pydantic.ValidationError: re-raise with the file name
        raise ConfigError(f"{path}: invalid config:\n{exc}") from exc


def _read_raw(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"base config not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if "extends" in raw:
        raw = deep_merge(_read_raw(path.parent / str(raw.pop("extends"))), raw)
    return raw


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``update`` merged in recursively (``update`` wins).

    Args:
        base: the mapping merged into (not modified).
        update: values that override ``base``; nested dicts are merged key by key.

    Returns:
        A new merged dict.
    """
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
