"""`recsys` tells a user's mistake (one line, exit 2) from an internal bug (exit 1, traceback kept
in ``<work_dir>/logs/``), run in-process with the commands' work replaced by a stub."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from recsys.bundle import BundleError
from recsys.data import DataValidationError, ValidationIssue
from training import cli


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "shop.yaml"
    config.write_text(
        f"""
name: shop
work_dir: {tmp_path / "work"}
data:
  data_dir: {tmp_path / "no-data"}
  interactions: {{path: interactions.parquet, columns: {{user_id: user, item_id: item, timestamp: date}}}}
  items: {{path: items.parquet, columns: {{item_id: item_id}}}}
"""
    )
    return config


def stub_validate(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def run(args: argparse.Namespace) -> int:
        raise exc

    monkeypatch.setattr(cli._validate_args, "run", run)


def logs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "work" / "logs").glob("recsys-*.log"))


def test_missing_config_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["validate", "--config", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == f"recsys validate: error: config file not found: {tmp_path / 'nope.yaml'}"
    assert "Traceback" not in err and "internal error" not in err


@pytest.mark.parametrize(
    "exc",
    [
        DataValidationError([ValidationIssue("interactions.parquet", "item_id='item'", "missing column", 0)]),
        BundleError("no bundle found"),
        FileNotFoundError("no lists file at x.parquet"),
    ],
)
def test_user_errors_exit_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    stub_validate(monkeypatch, exc)
    code = cli.main(["validate", "--config", str(write_config(tmp_path))])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("recsys validate: error: ") and str(exc) in err
    assert "Traceback" not in err and not logs(tmp_path)


def test_unknown_model_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["evaluate", "--config", str(write_config(tmp_path)), "--models", "popularity,nonsense"])
    err = capsys.readouterr().err
    assert code == 2 and "recsys evaluate: error:" in err and "unknown model 'nonsense'" in err


@pytest.mark.parametrize(
    "exc, shown",
    [
        (RuntimeError("boom"), "RuntimeError: boom"),
        (KeyError("user_idx"), "KeyError: 'user_idx'"),
        (ValueError("could not broadcast input array"), "ValueError: could not broadcast input array"),
    ],
)
def test_internal_error_exits_1_and_logs_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, exc: Exception, shown: str
) -> None:
    stub_validate(monkeypatch, exc)
    code = cli.main(["validate", "--config", str(write_config(tmp_path))])
    err = capsys.readouterr().err
    assert code == 1
    assert f"recsys validate: internal error (this is a bug): {shown}" in err
    assert "Traceback" not in err  # kept in the log, not on the terminal
    [log] = logs(tmp_path)
    assert str(log) in err
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and shown in text and "in run" in text
    assert not list(log.parent.glob(".*tmp*"))  # written atomically: no temp file left


def test_verbose_also_prints_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    stub_validate(monkeypatch, RuntimeError("boom"))
    code = cli.main(["-v", "validate", "--config", str(write_config(tmp_path))])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback (most recent call last)" in err and "internal error (this is a bug): RuntimeError: boom" in err
    assert len(logs(tmp_path)) == 1


def test_internal_error_without_work_dir_prints_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The config cannot be read, so there is no work dir to log to: the traceback goes to stderr.
    stub_validate(monkeypatch, RuntimeError("boom"))
    code = cli.main(["validate", "--config", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback (most recent call last)" in err and "internal error (this is a bug): RuntimeError: boom" in err
    assert not (tmp_path / "work").exists()
