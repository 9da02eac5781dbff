"""Every recommender by name: the CLI, the training run, the notebooks and the contract test build models here.

The table is written out in full (no registration by import side effect): adding a model means
adding a line here.
"""

from __future__ import annotations

from collections.abc import Callable

from recsys.candidates.generator import CandidateGenerator
from recsys.config import ConfigError, ProjectConfig
from recsys.models.base import Recommender
from recsys.models.content import ContentRecommender
from recsys.models.ease import EASERecommender
from recsys.models.history import HistoryRecommender
from recsys.models.implicit_models import ALSRecommender, BPRRecommender, ItemKNNRecommender
from recsys.models.popularity import PopularityRecommender
from recsys.two_tower.recommender import TwoTowerRecommender

MODEL_FACTORIES: dict[str, Callable[[ProjectConfig], Recommender]] = {
    "popularity": lambda c: PopularityRecommender(c.models.popularity.window_days),
    "history": lambda c: HistoryRecommender(c.models.popularity.window_days),
    "als": lambda c: ALSRecommender(c.models.als),
    "bpr": lambda c: BPRRecommender(c.models.bpr),
    "itemknn": lambda c: ItemKNNRecommender(c.models.itemknn),
    "ease": lambda c: EASERecommender(c.models.ease),
    "content": ContentRecommender.from_config,
    "two_tower": TwoTowerRecommender.from_config,
    "candidates": CandidateGenerator.from_config,
}

MODEL_CLASSES: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        PopularityRecommender, HistoryRecommender, ALSRecommender, BPRRecommender, ItemKNNRecommender, EASERecommender,
        ContentRecommender, TwoTowerRecommender, CandidateGenerator,
    )
}


def build_model(name: str, config: ProjectConfig) -> Recommender:
    """A new, unfitted model by registry name.

    Args:
        name: a key of :data:`MODEL_FACTORIES`.
        config: the project config (model settings).

    Returns:
        The unfitted model.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    if name not in MODEL_FACTORIES:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(MODEL_FACTORIES))}")
    return MODEL_FACTORIES[name](config)
