"""`recsys train` and the server on logs that are not the H&M week: every catalogue kind, both repeat
policies, duration windows. Each case runs the whole pipeline on the synthetic shop (bundle included)
and serves the bundle with BundleService."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recsys.config import ConfigError
from recsys.data import load_dataset
from recsys.query import InvalidQueryError, Query
from serving.bundle_service import BundleService
from tests.conftest import shop_pipeline_config
from training.content import run_content
from training.pipeline import Pipeline, PipelineOutcome

pytestmark = pytest.mark.slow


def _train_and_serve(config_root: Path, **kwargs: object) -> tuple[PipelineOutcome, BundleService]:
    outcome = Pipeline(shop_pipeline_config(config_root, **kwargs)).run()  # type: ignore[arg-type]
    return outcome, BundleService(outcome.bundle)


def _served_user(service: BundleService) -> str:
    return str(service.data.user_index.ids[0])


def test_text_only_catalogue(tmp_path: Path) -> None:
    """No photos: text vectors, search by words works, a photo-less page."""
    _, service = _train_and_serve(tmp_path, images=False)
    vectors = service.engine.vectors
    assert vectors is not None and not vectors.has_image.any() and vectors.text.any()
    hits = service.search("red dress", None, 1.0, 0.0, 5)
    assert hits and "dress" in service.item(hits[0].item_id).name
    assert len(service.recommendations(Query(user_id=_served_user(service), k=5))) == 5


def test_photos_only_catalogue(tmp_path: Path) -> None:
    """No text columns: photo descriptors alone carry the content."""
    _, service = _train_and_serve(tmp_path, data={"items": {"columns": {"name": None, "text": []}}})
    vectors = service.engine.vectors
    assert vectors is not None and vectors.has_image.any() and not vectors.text.any()
    assert len(service.similar(str(vectors.item_ids[vectors.has_image][0]), 3)) == 3
    assert len(service.recommendations(Query(user_id=_served_user(service), k=5))) == 5


def test_catalogue_without_text_or_photos(tmp_path: Path) -> None:
    """Neither: no content vectors; the content source is empty, search says it is unavailable, the rest works."""
    outcome, service = _train_and_serve(tmp_path, images=False, data={"items": {"columns": {"name": None, "text": []}}})
    assert service.engine.vectors is None and "item_vectors.npz" not in outcome.bundle.manifest["files"]
    assert "content" not in set(outcome.table["model"])
    recs = service.recommendations(Query(user_id=_served_user(service), k=5))
    assert len(recs) == 5 and all("content" not in r.reasons.sources for r in recs)
    with pytest.raises(InvalidQueryError):
        service.search("red dress", None, 1.0, 0.0, 5)
    assert service.candidates(Query(recent_item_ids=("i001",), k=5))


def test_repeats_excluded_everywhere(tmp_path: Path) -> None:
    """`repeats: exclude`: no list, candidate or served item is something the user already had."""
    outcome, service = _train_and_serve(tmp_path, repeats="exclude")
    user = _served_user(service)
    had = set(service.data.interactions.filter(pl.col("user_id") == user)["item_id"].to_list())
    assert had
    assert not had & {c.item_id for c in service.candidates(Query(user_id=user, k=20))}
    assert not had & {r.item_id for r in service.recommendations(Query(user_id=user, k=10))}
    # The evaluation followed the same policy: no evaluated list holds an item its user had.
    bundle = outcome.bundle.path
    history = pl.read_parquet(bundle / "data" / "history.parquet").group_by("user_id").agg(pl.col("item_id"))
    seen = {u: set(items) for u, items in zip(history["user_id"].to_list(), history["item_id"].to_list())}
    for name in ("als", "two_tower", "candidates", "reranked"):
        lists = pl.read_parquet(bundle / "evaluation_lists" / f"{name}.parquet")
        for u, items in zip(lists["user_id"].to_list(), lists["item_ids"].to_list()):
            assert not seen.get(u, set()) & set(items), (name, u)
    # A request may still ask for repeats explicitly; by default the bundle's policy applies.
    assert service.engine.candidate_stage.default_exclude_seen


def test_duration_windows_and_label_folds(tmp_path: Path) -> None:
    """Windows as durations: a 2-day validation window labels the ranker, two label folds of 2 days."""
    outcome, service = _train_and_serve(tmp_path, split={"test": "1d", "validation": "48h"}, reranker={"label_folds": 2})
    assert {"label_fold", "label_fold_2"} <= set(outcome.stages)
    assert outcome.stages["reranker"].metrics["label_folds"] == 2
    assert len(service.recommendations(Query(user_id=_served_user(service), k=5))) == 5


def test_too_few_label_users_stop_with_a_clear_message(tmp_path: Path) -> None:
    config = shop_pipeline_config(tmp_path, reranker={"min_label_users": 10_000})
    with pytest.raises(ConfigError, match="min_label_users"):
        Pipeline(config).run()



def test_aligned_backend_without_photos_falls_back_to_standin(tmp_path: Path) -> None:
    """A catalogue without photos crashed the aligned backend (`cannot reshape tensor of 0 elements`):
    with nothing to align, the content stage uses the stand-in encoder and says so."""
    config = shop_pipeline_config(tmp_path, images=False, content={"backend": "aligned"})
    result = run_content(config, load_dataset(config.data), train=True, progress=False)
    assert result.vectors_path is not None and result.encoder.startswith("standin")
    assert result.heads_dir is not None and (result.heads_dir / "standin.npz").is_file()


def test_click_and_purchase_events_with_weights_and_a_target(tmp_path: Path) -> None:
    """A log of views and purchases: views weigh 1 and purchases 10 in every model; only purchases
    label the ranker and count in the evaluation."""
    config = shop_pipeline_config(
        tmp_path,
        data={"interactions": {"columns": {"event": "event"}, "event_weights": {"view": 1, "purchase": 10}, "target_events": ["purchase"]}},
    )
    log_path = config.data.resolve(config.data.interactions.path)
    assert log_path is not None
    frame = pl.read_parquet(log_path)
    views = frame.with_columns(pl.lit("view").alias("event"))
    purchases = frame.sample(fraction=0.6, seed=0).with_columns(pl.lit("purchase").alias("event"))
    pl.concat([views, purchases]).sort("date").write_parquet(log_path)
    outcome = Pipeline(config).run()
    service = BundleService(outcome.bundle)
    history = service.data.interactions
    assert set(history["event"].unique()) == {"view", "purchase"}
    assert set(history.filter(pl.col("event") == "purchase")["weight"].unique()) == {10.0}
    assert len(service.recommendations(Query(user_id=_served_user(service), k=5))) == 5
