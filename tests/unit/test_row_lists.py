"""RowLists: the packed per-user item rows every candidate source hands the fusion."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.candidates.row_lists import RowLists


def lists_of(packed: RowLists) -> list[list[int]]:
    return [packed.of(i).tolist() for i in range(len(packed))]


def test_packing_keeps_each_users_list_in_order() -> None:
    packed = RowLists.from_arrays([np.array([3, 1]), np.array([], dtype=np.int64), np.array([2])])
    assert len(packed) == 3 and lists_of(packed) == [[3, 1], [], [2]]
    assert packed.lengths.tolist() == [2, 0, 1]
    assert packed.owners().tolist() == [0, 0, 2] and packed.positions().tolist() == [0, 1, 0]
    assert lists_of(RowLists.from_arrays([])) == []


def test_a_search_result_drops_padding_and_users_not_kept() -> None:
    found = np.array([[4, 2, -1], [1, 0, 3], [5, -1, -1]])
    assert lists_of(RowLists.from_matrix(found)) == [[4, 2], [1, 0, 3], [5]]
    assert lists_of(RowLists.from_matrix(found, keep=np.array([True, False, True]))) == [[4, 2], [], [5]]


def test_head_mapping_and_repeats() -> None:
    packed = RowLists.from_arrays([np.array([0, 1, 2]), np.array([2])])
    assert lists_of(packed.head(2)) == [[0, 1], [2]]
    assert lists_of(packed.mapped(np.array([10, 11, 12]))) == [[10, 11, 12], [12]]
    assert lists_of(RowLists.repeated(np.array([7, 8]), 3)) == [[7, 8]] * 3


def test_without_leaves_out_each_users_own_seen_rows_then_cuts() -> None:
    packed = RowLists.from_arrays([np.array([5, 1, 2, 3]), np.array([1, 2]), np.array([], dtype=np.int64)])
    seen = RowLists.from_arrays([np.array([1]), np.array([5]), np.array([1])])
    assert lists_of(packed.without(seen, n_items=6, k=2)) == [[5, 2], [1, 2], []], "one user's seen item is not left out of another's list"
    nothing_seen = RowLists.from_arrays([np.array([], dtype=np.int64)] * 3)
    assert lists_of(packed.without(nothing_seen, n_items=6, k=10)) == lists_of(packed)
    with pytest.raises(ValueError, match="2 seen lists for 3 users"):
        packed.without(RowLists.from_arrays([np.array([1])] * 2), n_items=6, k=2)


def test_id_lists_name_the_rows() -> None:
    packed = RowLists.from_arrays([np.array([2, 0]), np.array([], dtype=np.int64)])
    assert packed.to_id_lists(["u1", "u2"], np.array(["a", "b", "c"])) == {"u1": ["c", "a"], "u2": []}
    with pytest.raises(ValueError, match="1 users for 2 lists"):
        packed.to_id_lists(["u1"], np.array(["a", "b", "c"]))


def test_offsets_that_do_not_cover_the_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="offsets must run from 0"):
        RowLists(np.array([1, 2, 3]), np.array([0, 2]))
