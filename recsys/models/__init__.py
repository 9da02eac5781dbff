"""Recommenders, all on the :class:`~recsys.models.base.Recommender` interface.

The registry of names (``build_model``) lives in :mod:`recsys.registry`, above every model.
"""

from __future__ import annotations

from recsys.models.base import Recommendations, Recommender, ScoringRecommender

__all__ = ["Recommendations", "Recommender", "ScoringRecommender"]
