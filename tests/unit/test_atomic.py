"""Protects the one atomic-write mechanism every artifact goes through."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.atomic import atomic_path, save_npz, write_dir, write_json, write_text


def test_files_replace_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    write_json(target, {"x": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "x": 1\n}'
    write_text(target, "new")
    assert target.read_text() == "new"
    save_npz(tmp_path / "v.npz", a=np.arange(3))
    with np.load(tmp_path / "v.npz", allow_pickle=False) as z:
        assert z["a"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "sub", "v.npz"]


def test_directories_swap_atomically(tmp_path: Path) -> None:
    d = tmp_path / "model"
    write_dir(d, lambda t: (t / "f.txt").write_text("one"))
    with pytest.raises(RuntimeError):
        write_dir(d, lambda t: ((t / "f.txt").write_text("half"), (_ for _ in ()).throw(RuntimeError("boom"))))
    assert (d / "f.txt").read_text() == "one"
    write_dir(d, lambda t: (t / "f.txt").write_text("two"))
    assert (d / "f.txt").read_text() == "two"
    with pytest.raises(FileExistsError):
        write_dir(d, lambda t: None, replace=False)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
