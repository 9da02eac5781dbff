"""The two towers: one torchrec EmbeddingBagCollection for every sparse feature, two MLPs.

Like TorchRec's ``examples/retrieval`` TwoTower, a single (weighted) EBC holds the query-side
and candidate-side tables, so DistributedModelParallel shards them together. The item-id
table and every metadata table are *shared* between the candidate's own features and the
user's history bag (``hist_*`` features), so "bought before" and "looks like what was bought"
live in one space.

Each tower outputs a concatenation of unit-normalised blocks: the learned MLP output plus three
skip blocks (pooled item ids, ALS factors, content vector). The candidate side scales each skip
block by a learned non-negative weight, so a score is a learned mix of an MLP similarity,
an id match (re-purchase, co-purchase), the ALS score and content similarity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor, KeyedTensor
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from recsys.two_tower.spec import HIST_ITEM, ITEM_ID, USER_ID, TowerSpec


def embedding_tables(spec: TowerSpec) -> list[EmbeddingBagConfig]:
    """Table configs: users, items (shared by item_id and hist_item_id), one per category (shared).

    Args:
        spec: table sizes and embedding widths.

    Returns:
        One EmbeddingBagConfig per table, initialised uniformly in [-0.05, 0.05].
    """
    init = dict(weight_init_min=-0.05, weight_init_max=0.05)
    tables = [
        EmbeddingBagConfig(num_embeddings=max(spec.n_users, 1), embedding_dim=spec.id_dim, name="t_user", feature_names=[USER_ID], **init),
        EmbeddingBagConfig(num_embeddings=spec.n_items, embedding_dim=spec.id_dim, name="t_item", feature_names=[ITEM_ID, HIST_ITEM], **init),
    ]
    for c, size in zip(spec.categories, spec.category_sizes):
        tables.append(
            EmbeddingBagConfig(num_embeddings=size, embedding_dim=spec.category_dim, name=f"t_{c}", feature_names=[f"cat_{c}", f"hist_cat_{c}"], **init)
        )
    return tables


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear + ReLU layers, the last layer linear (its output is normalised, not clipped).

    Args:
        sizes: input width, then each layer's output width.

    Returns:
        The stack of ``len(sizes) - 1`` linear layers.
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TwoTower(nn.Module):
    """User and item towers over one weighted EmbeddingBagCollection.

    Args:
        spec: sizes of tables and features.
        device: where to allocate the tables ("meta" lets DistributedModelParallel materialise shards).

    Example:
        >>> model = TwoTower(spec)
        >>> users, items = model(kjt, user_dense, item_dense)   # (B, D), (B, D)
    """

    def __init__(self, spec: TowerSpec, device: torch.device | None = None):
        super().__init__()
        self.spec = spec
        self.ebc = EmbeddingBagCollection(tables=embedding_tables(spec), is_weighted=True, device=device)
        n_cat = len(spec.categories)
        user_in = spec.id_dim * 2 + spec.category_dim * n_cat + spec.user_dense_dim
        item_in = spec.id_dim + spec.category_dim * n_cat + spec.item_dense_dim
        self.user_mlp = mlp([user_in, *spec.hidden, spec.output_dim])
        self.item_mlp = mlp([item_in, *spec.hidden, spec.output_dim])
        # log-scales of the candidate-side skip blocks (id match, ALS, content); exp(0) = 1 at start.
        self.skip_log_scale = nn.Parameter(torch.zeros(3))

    @property
    def output_dim(self) -> int:
        """Width of either tower's output: MLP output plus the three skip blocks."""
        s = self.spec
        return s.output_dim + s.id_dim + s.als_dim + s.content_dim

    def forward(self, features: KeyedJaggedTensor, user_dense: torch.Tensor, item_dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed both sides of a batch.

        Args:
            features: every key of ``spec.keys``; a side that is not needed has zero lengths.
            user_dense: (B, user_dense_dim).
            item_dense: (B, item_dense_dim).

        Returns:
            (user vectors, item vectors), each (B, output_dim).
        """
        pooled = self.ebc(features)
        return self.user_tower(pooled, user_dense), self.item_tower(pooled, item_dense)

    def user_tower(self, pooled: KeyedTensor, dense: torch.Tensor) -> torch.Tensor:
        """The query side: learned MLP block, pooled history ids, ALS factors, content centroid.

        Args:
            pooled: the EBC output (one pooled embedding per feature key).
            dense: (B, user_dense_dim): ALS factors | content centroid | attributes | stats.

        Returns:
            (B, output_dim) concatenation of unit-normalised blocks.
        """
        s = self.spec
        sparse = [pooled[k] for k in s.user_keys]
        learned = F.normalize(self.user_mlp(torch.cat([*sparse, dense], dim=1)), dim=1)
        hist = F.normalize(pooled[HIST_ITEM], dim=1)
        als = F.normalize(dense[:, : s.als_dim], dim=1)
        centroid = F.normalize(dense[:, s.als_dim : s.als_dim + s.content_dim], dim=1)
        return torch.cat([learned, hist, als, centroid], dim=1)

    def item_tower(self, pooled: KeyedTensor, dense: torch.Tensor) -> torch.Tensor:
        """The candidate side: learned MLP block, then id, ALS and content skip blocks (learned scales).

        Args:
            pooled: the EBC output (one pooled embedding per feature key).
            dense: (B, item_dense_dim): content vector | ALS factors | price.

        Returns:
            (B, output_dim) concatenation of blocks, the skip blocks scaled.
        """
        s = self.spec
        sparse = [pooled[k] for k in s.item_keys]
        learned = F.normalize(self.item_mlp(torch.cat([*sparse, dense], dim=1)), dim=1)
        scale = self.skip_log_scale.exp()
        ids = F.normalize(pooled[ITEM_ID], dim=1) * scale[0]
        content = F.normalize(dense[:, : s.content_dim], dim=1) * scale[2]
        als = F.normalize(dense[:, s.content_dim : s.content_dim + s.als_dim], dim=1) * scale[1]
        return torch.cat([learned, ids, als, content], dim=1)
