"""Multimodal search (text / image / both, two stages), similar items, and fusion without photos."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from features.content.encoders import ContentEncoder
from features.content.images import ImageInput
from features.content.search import ContentSearch
from recsys.content_config import SearchSettings
from recsys.vectors import ItemVectors, fuse, l2_normalise


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


class LookupEncoder(ContentEncoder):
    """A fixed table of query vectors (the encoders themselves are tested elsewhere)."""

    identity = "lookup-v1"
    dim = 3

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def encode_texts(self, texts: Sequence[str], batch_size: int = 128, progress: bool = True) -> np.ndarray:
        return np.stack([self.table[t] for t in texts])

    def encode_images(self, images: Sequence[ImageInput], batch_size: int = 32, progress: bool = True) -> np.ndarray:
        return np.stack([self.table[str(p)] for p in images])


# Axes: x = "red", y = "dress", z = "boots". Item d has no photo.
ITEMS = {
    "a": unit(1, 1, 0),    # red dress
    "b": unit(0, 1, 0),    # plain dress
    "c": unit(1, 0, 0.2),  # red, almost nothing else
    "d": unit(0, 0, 1),    # boots (text only)
    "e": unit(0.3, 0, 1),  # reddish boots
}


@pytest.fixture
def vectors() -> ItemVectors:
    ids = np.array(list(ITEMS))
    text = np.stack(list(ITEMS.values()))
    has = np.array([True, True, True, False, True])
    image = text * has[:, None]
    return ItemVectors(ids, image, text, fuse(image, text, has, 0.5, 0.5), has, "lookup-v1")


@pytest.fixture
def search(vectors: ItemVectors) -> ContentSearch:
    table = {"red dress": unit(1, 1, 0), "boots": unit(0, 0, 1), "red.jpg": unit(1, 0, 0)}
    return ContentSearch(vectors, LookupEncoder(table), SearchSettings(candidates=3, first_pass_text_weight=0.5, rerank_text_weight=0.9))


def test_fusion_uses_text_alone_for_items_without_a_photo() -> None:
    text = l2_normalise(np.array([[1, 0], [0, 1]], dtype=np.float32))
    image = np.array([[0, 1], [0, 0]], dtype=np.float32)
    fused = fuse(image, text, np.array([True, False]), 0.5, 0.5)
    np.testing.assert_allclose(fused[0], unit(1, 1)[:2] if False else l2_normalise(np.array([[0.5, 0.5]], np.float32))[0])
    np.testing.assert_allclose(fused[1], [0, 1])
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1, atol=1e-6)


def test_text_query_ranks_by_similarity(search: ContentSearch) -> None:
    res = search.search(text="red dress", k=3)
    assert res.item_ids == ["a", "b", "c"] and res.scores == sorted(res.scores, reverse=True)
    assert search.search(text="boots", k=2).item_ids == ["d", "e"]
    assert search.search(text="boots", k=2, require_image=True).item_ids == ["e", "c"]
    assert "a" not in search.search(text="red dress", k=3, exclude=["a"]).item_ids


def test_image_query_alone(search: ContentSearch) -> None:
    assert search.search(image="red.jpg", k=1).item_ids == ["c"]


def test_two_stage_candidates_then_text_heavy_rerank(vectors: ItemVectors) -> None:
    # Query: text "boots" + a red photo. The equal-weight first pass fetches 2 candidates (reddish
    # boots, red thing); the text-heavy rerank orders only those, so the plain boots "d", which
    # would win on text alone, is not among them.
    table = {"boots": unit(0, 0, 1), "red.jpg": unit(1, 0, 0)}
    s = ContentSearch(vectors, LookupEncoder(table), SearchSettings(candidates=2, first_pass_text_weight=0.5, rerank_text_weight=0.9))
    q_text, q_img = table["boots"], table["red.jpg"]
    first = vectors.fused @ l2_normalise((0.5 * q_text + 0.5 * q_img)[None])[0]
    assert list(vectors.item_ids[np.argsort(-first)[:2]]) == ["e", "c"]
    both = s.search(text="boots", image="red.jpg", k=2)
    assert set(both.item_ids) == {"e", "c"}, "only first-stage candidates are reranked"
    expected = {i: 0.9 * vectors.fused[r] @ q_text + 0.1 * vectors.fused[r] @ q_img for r, i in enumerate(vectors.item_ids)}
    assert expected["d"] > max(expected["e"], expected["c"]), "d would win a one-stage text-heavy ranking"
    assert both.item_ids == sorted(["e", "c"], key=lambda i: -expected[i])
    np.testing.assert_allclose(both.scores, [expected[i] for i in both.item_ids], rtol=1e-5)
    # Image-heavy rerank flips it back to the red item.
    assert s.search(text="boots", image="red.jpg", k=2, rerank_text_weight=0.0).item_ids[0] == "c"


def test_similar_items_excludes_the_item_and_checks_inputs(search: ContentSearch) -> None:
    res = search.similar_items("a", k=2)
    assert "a" not in res.item_ids and res.item_ids[0] in {"b", "c"}
    assert search.similar_items("d", k=1).item_ids == ["e"]
    with pytest.raises(ValueError, match="no photo"):
        search.similar_items("d", kind="image")
    with pytest.raises(KeyError):
        search.similar_items("zzz")


def test_bad_queries_and_mismatched_encoder_fail_clearly(search: ContentSearch, vectors: ItemVectors) -> None:
    with pytest.raises(ValueError, match="text, an image"):
        search.search()
    other = LookupEncoder({})
    other.identity = "something-else"
    with pytest.raises(ValueError, match="did not produce"):
        ContentSearch(vectors, other)
