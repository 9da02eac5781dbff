"""Recommenders, all on the :class:`~recsys.models.base.Recommender` interface."""

from __future__ import annotations

from collections.abc import Callable

from recsys.config import ProjectConfig
from recsys.models.base import Recommendations, Recommender, ScoringRecommender
from recsys.models.history import HistoryRecommender
from recsys.models.implicit_models import ALSRecommender, BPRRecommender, ItemKNNRecommender
from recsys.models.popularity import PopularityRecommender

MODEL_FACTORIES: dict[str, Callable[[ProjectConfig], Recommender]] = {
    "popularity": lambda c: PopularityRecommender(c.models.popularity.window_days),
    "history": lambda c: HistoryRecommender(c.models.popularity.window_days),
    "als": lambda c: ALSRecommender(c.models.als),
    "bpr": lambda c: BPRRecommender(c.models.bpr),
    "itemknn": lambda c: ItemKNNRecommender(c.models.itemknn),
}

MODEL_CLASSES: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (PopularityRecommender, HistoryRecommender, ALSRecommender, BPRRecommender, ItemKNNRecommender)
}


def build_model(name: str, config: ProjectConfig) -> Recommender:
    """A new, unfitted model by registry name.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    if name not in MODEL_FACTORIES:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODEL_FACTORIES))}")
    return MODEL_FACTORIES[name](config)


def register_model(name: str, factory: Callable[[ProjectConfig], Recommender], cls: type[Recommender]) -> None:
    """Make a model available to the CLI, training run and notebooks by name."""
    MODEL_FACTORIES[name] = factory
    MODEL_CLASSES[cls.name] = cls


# The content-only recommender reads the content stage's item vectors (features/content, issue 3).
from recsys.models.content import ContentRecommender  # noqa: E402

register_model("content", ContentRecommender.from_config, ContentRecommender)

# Retrieval stage (issue 4): the TorchRec two-tower and the merged candidate generator. They
# import this package themselves, so they are imported on first use; importing them registers
# their classes (MODEL_CLASSES) for loading.
def _lazy_factory(module: str, attr: str) -> Callable[[ProjectConfig], Recommender]:
    def factory(config: ProjectConfig) -> Recommender:
        import importlib

        return getattr(importlib.import_module(module), attr).from_config(config)

    return factory


MODEL_FACTORIES.setdefault("two_tower", _lazy_factory("recsys.two_tower.recommender", "TwoTowerRecommender"))
MODEL_FACTORIES.setdefault("candidates", _lazy_factory("recsys.candidates.generator", "CandidateGenerator"))

__all__ = [
    "MODEL_CLASSES",
    "MODEL_FACTORIES",
    "Recommendations",
    "Recommender",
    "ScoringRecommender",
    "build_model",
    "register_model",
]
