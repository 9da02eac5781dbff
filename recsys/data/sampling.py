"""Fixed-seed subsets that keep a big log's per-user work bounded (evaluation, label and validation users).

Every stage that does work per user times the catalogue (scoring every item, searching an index)
caps the users it serves with :func:`sample_users`, so its cost stops growing with the customer
base once the sample is large enough to measure with. The sample is a deterministic function of
the ids and the seed, so a rerun, a resumed stage and a test see the same users.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

log = logging.getLogger(__name__)

T = TypeVar("T")


def sample_users(users: Sequence[T], limit: int | None, seed: int, what: str) -> list[T]:
    """At most ``limit`` of ``users``, drawn without replacement, in their original order.

    Args:
        users: the candidates (ids or row numbers).
        limit: the most to keep; None keeps all.
        seed: the draw's seed.
        what: who is sampled, for the log line (e.g. "test users").

    Returns:
        ``users`` itself as a list when it fits; otherwise the sample, order kept.
    """
    if limit is None or len(users) <= limit:
        return list(users)
    keep = np.sort(np.random.default_rng(seed).choice(len(users), size=limit, replace=False))
    log.info("%s: a fixed-seed sample of %d of %d (limit set in the config)", what, limit, len(users))
    return [users[int(i)] for i in keep]
