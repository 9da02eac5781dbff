"""Protects config loading: validation names the bad field; env expansion; unknown keys rejected."""

from pathlib import Path

import pytest

from recsys.config import PROJECT_ROOT, ConfigError, expand_env, load_config


def test_project_config_loads() -> None:
    config = load_config(PROJECT_ROOT / "configs" / "hm.yaml")
    assert config.data.interactions.columns.item_id == "article_id"
    assert config.split.test_start is not None and str(config.split.test_start) == "2020-09-22"


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    text = (PROJECT_ROOT / "configs" / "hm.yaml").read_text().replace("warm_users_only: true", "warm_users_only: true\n  wram: 1")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="wram"):
        load_config(bad)


def test_bad_value_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((PROJECT_ROOT / "configs" / "hm.yaml").read_text().replace("k: 12", "k: -3"))
    with pytest.raises(ConfigError, match=r"evaluation\.k|k\b"):
        load_config(bad)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "x.yaml").write_text("a: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "x.yaml")


def test_env_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_TEST_DIR", "/data/x")
    assert expand_env("${RS_TEST_DIR}/a") == "/data/x/a"
    monkeypatch.delenv("RS_TEST_DIR")
    assert expand_env("${RS_TEST_DIR:-/fallback}/a") == "/fallback/a"
    with pytest.raises(ConfigError, match="RS_TEST_DIR"):
        expand_env("${RS_TEST_DIR}")


def test_variant_config_extends_base() -> None:
    small = load_config(PROJECT_ROOT / "configs" / "hm_small.yaml")
    base = load_config(PROJECT_ROOT / "configs" / "hm.yaml")
    assert small.name == "hm_small" and small.data.user_sample == 0.03
    assert small.data.interactions == base.data.interactions and small.split == base.split


def test_configs_written_before_the_renames_still_load() -> None:
    """A bundle trained by an earlier version stores its config with the old keys; it must still load."""
    import datetime as dt

    from recsys.config import ProjectConfig

    old = {
        "name": "old", "data": {"interactions": {"path": "i.parquet"}, "items": {"path": "a.parquet"}},
        "split": {"test_days": 2, "validation_days": 1}, "reranker": {"label_days": 3},
        "retrieval": {"content_vectors": "content/item_vectors.npz", "standin_dim": 128},
    }
    config = ProjectConfig.model_validate(old)
    assert config.split.test == dt.timedelta(days=2) and config.split.validation == dt.timedelta(days=1)
    assert config.reranker.label_folds == 3
