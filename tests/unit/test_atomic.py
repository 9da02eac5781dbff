"""Protects the one atomic-write mechanism every artifact goes through."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from recsys.atomic import (
    atomic_path,
    copy_tree_linked,
    link_or_copy,
    save_npz,
    write_dir,
    write_json,
    write_text,
)


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


def test_linked_copies_share_the_file_and_fall_back_to_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle links the stage files it ships (no second copy on disk); where links fail it copies."""
    source = tmp_path / "stage"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "big.npy").write_bytes(b"x" * 1000)
    linked = copy_tree_linked(source, tmp_path / "bundle")
    assert (linked / "sub" / "big.npy").read_bytes() == b"x" * 1000
    assert os.path.samefile(linked / "sub" / "big.npy", source / "sub" / "big.npy")

    def no_links(src: object, dst: object) -> None:
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    copied = link_or_copy(source / "sub" / "big.npy", tmp_path / "copy.npy")
    assert copied.read_bytes() == b"x" * 1000 and not os.path.samefile(copied, source / "sub" / "big.npy")


def test_large_npz_members_are_memory_mapped_copy_on_write(tmp_path: Path) -> None:
    """Model files load their large arrays as maps of the file (server workers share them through
    the page cache); small arrays are read; the values are the same, and a write never reaches the file."""
    from recsys.models.serialization import load_npz

    big = np.random.default_rng(0).random((300, 100)).astype(np.float32)
    ids = np.asarray([f"user-{i:05d}" for i in range(1000)])
    fortran = np.asfortranarray(np.arange(600, dtype=np.float64).reshape(20, 30))
    save_npz(tmp_path / "m.npz", big=big, ids=ids, small=np.arange(3), fortran=fortran)
    loaded = load_npz(tmp_path / "m.npz", mmap_min_bytes=1000)
    assert set(loaded) == {"big", "ids", "small", "fortran"}
    for name, want in (("big", big), ("ids", ids), ("fortran", fortran)):
        np.testing.assert_array_equal(loaded[name], want)
        assert isinstance(loaded[name].base, np.memmap) and loaded[name].base.mode == "c", name
    assert not isinstance(loaded["small"].base, np.memmap), "small arrays are read into memory"
    loaded["big"][0, 0] = -1.0  # this process's copy of the page
    np.testing.assert_array_equal(load_npz(tmp_path / "m.npz")["big"], big)  # the file is unchanged (and the default threshold reads it)
