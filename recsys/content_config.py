"""Typed settings of the content-embedding stage (the ``content:`` section of a project config).

:mod:`recsys.config` embeds :class:`ContentConfig` as the ``content`` section.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from recsys.config_base import StrictModel


class ClipSettings(StrictModel):
    """The ``clip`` backend: a transformers CLIP checkpoint from a local folder or a hub id."""

    model: str = Field(default="openai/clip-vit-base-patch32", description="local directory or hub id")
    max_length: int = Field(default=77, ge=8)


class BackboneSettings(StrictModel):
    """The frozen towers of the ``aligned`` backend (both ship inside registry wheels)."""

    # Portrait input keeps the H&M 2:3 photo aspect without padding and costs ~25% fewer pixels
    # than 224x224, which is what lifts the image tower over 25 images/s on two cores.
    image_height: int = Field(default=240, ge=32)
    image_width: int = Field(default=160, ge=32)
    text_max_length: int = Field(default=128, ge=8)


class AlignmentSettings(StrictModel):
    """Contrastive (LiT-style) training of the projection heads over frozen backbone features."""

    dim: int = Field(default=256, ge=8, description="shared embedding size")
    hidden: int = Field(default=1024, ge=0, description="hidden width of each head; 0 = a linear head")
    dropout: float = Field(default=0.1, ge=0, lt=1)
    epochs: int = Field(default=40, ge=1)
    batch_size: int = Field(default=512, ge=8)
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    temperature: float = Field(default=0.07, gt=0, description="initial temperature (learned)")
    full_text_share: float = Field(
        default=0.5, ge=0, le=1, description="share of steps an item is paired with its full text, not a short view"
    )
    holdout_share: float = Field(default=0.15, gt=0, lt=1, description="product groups held out for the test")
    validation_share: float = Field(default=0.08, ge=0, lt=1, description="product groups held out for early stopping")
    patience: int = Field(default=8, ge=1)
    seed: int = 0


class EvaluationSettings(StrictModel):
    """How alignment is measured on held-out items."""

    retrieval_items: int = Field(default=1000, ge=10)
    zero_shot_types: int = Field(default=18, ge=2)
    zero_shot_prompts: list[str] = ["a photo of a {type}", "a {type}", "{type}", "a product photo of a {type}"]


class FusionSettings(StrictModel):
    """Weights of image and text in the fused item vector (renormalised afterwards)."""

    image_weight: float = Field(default=0.5, ge=0)
    text_weight: float = Field(default=0.5, ge=0)


class SearchSettings(StrictModel):
    """Two-stage multimodal search: equal-weight candidate pass, then a text-heavy rerank."""

    candidates: int = Field(default=200, ge=1)
    first_pass_text_weight: float = Field(default=0.5, ge=0, le=1)
    rerank_text_weight: float = Field(default=0.9, ge=0, le=1)


class RecommenderSettings(StrictModel):
    """The content-only recommender: similarity of each item to the user's recent history."""

    history_items: int = Field(default=20, ge=1, description="most recent distinct items used")
    half_life_days: float = Field(default=3.0, gt=0)
    centroid_weight: float = Field(default=0.5, ge=0, le=1, description="blend of centroid vs max-over-items score")
    vector: Literal["fused", "text", "image"] = "fused"
    recent_days: int = Field(
        default=0, ge=0, description="rank items sold in the last N training days above the rest; 0 = whole catalogue alike"
    )


class ContentConfig(StrictModel):
    """Everything the content stage reads.

    Attributes:
        backend: ``aligned`` (offline default: frozen backbones + trained heads), ``clip`` (a local
            CLIP checkpoint) or ``standin`` (TF-IDF + SVD text and photo descriptors, fitted in seconds).
        text_parts: item text templates (``{column}`` placeholders, empty when null); an item's
            text is the parts joined, its text feature the normalised sum of the parts' features.
        short_views: extra short texts per item used as alignment targets (also templates).
        cache_dir / vectors_path / heads_dir: below the project work dir unless absolute.
    """

    backend: Literal["aligned", "clip", "standin"] = "aligned"
    standin_dim: int = Field(default=128, ge=2, description="text vector size of the ``standin`` backend (TF-IDF + SVD)")
    # The item text is encoded in parts whose frozen features are summed: colour variants share
    # their name + description, so the expensive part is encoded once per product, and the
    # attribute part has only ~33k distinct values. This halves the tokens for the catalogue's
    # 105k items compared with one long text per item (../bench/results/content.md).
    text_parts: list[str] = Field(
        default_factory=list, description="item text templates ({column} placeholders); empty: the configured text columns, joined"
    )
    short_views: list[str] = Field(default_factory=list, description="extra short texts per item used as alignment targets")
    group_column: str | None = Field(default=None, description="items sharing it are held out together; None: each item alone")
    type_column: str | None = Field(default=None, description="labels of the zero-shot test; None: no zero-shot test")
    image_batch_size: int = Field(default=32, ge=1)
    text_batch_size: int = Field(default=128, ge=1)
    threads: int = Field(default=2, ge=1)
    cache_dir: str = "content/cache"
    heads_dir: str = "content/heads"
    vectors_path: str = "content/item_vectors.npz"
    clip: ClipSettings = ClipSettings()
    backbone: BackboneSettings = BackboneSettings()
    alignment: AlignmentSettings = AlignmentSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    fusion: FusionSettings = FusionSettings()
    search: SearchSettings = SearchSettings()
    recommender: RecommenderSettings = RecommenderSettings()

    @property
    def text_template(self) -> str:
        """The parts as one template (display, and backends that encode one text per item)."""
        return ". ".join(self.text_parts)

    @model_validator(mode="after")
    def _weights_not_both_zero(self) -> "ContentConfig":
        if self.fusion.image_weight + self.fusion.text_weight <= 0:
            raise ValueError("content.fusion: image_weight + text_weight must be positive")
        return self
