"""LiT-style alignment: the loss, the group split, training on synthetic paired features, heads artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from features.content.alignment import (
    AlignmentData,
    contrastive_loss,
    evaluate_embeddings,
    evaluate_heads,
    one_per_group,
    retrieval_recalls,
    split_by_group,
    train_heads,
    zero_shot_classes,
)
from features.content.heads import AlignmentHeads, latest_heads, load_heads, save_heads
from recsys.content_config import AlignmentSettings, EvaluationSettings

TYPES = ["dress", "shirt", "boots", "hat"]


def synthetic(n: int = 400, seed: int = 0) -> tuple[AlignmentData, np.ndarray, np.ndarray]:
    """Image and text features are different random linear maps of one latent (type + noise)."""
    rng = np.random.default_rng(seed)
    type_idx = rng.integers(len(TYPES), size=n)
    latent = np.eye(len(TYPES))[type_idx] * 3 + rng.normal(size=(n, len(TYPES))) * 0.3
    latent = np.hstack([latent, rng.normal(size=(n, 12))])
    a, b = rng.normal(size=(latent.shape[1], 48)), rng.normal(size=(latent.shape[1], 24))
    image = (latent @ a).astype(np.float32)
    text = (latent @ b).astype(np.float32)
    views = (np.eye(len(TYPES))[type_idx] * 3 @ b[: len(TYPES)]).astype(np.float32)[None]
    ids = np.vstack([np.arange(n), n + type_idx])
    groups = np.array([f"g{i // 2}" for i in range(n)])
    data = AlignmentData(image, text, views, ids, groups, np.array(TYPES)[type_idx], np.array([f"i{i}" for i in range(n)]))
    return data, a, b


def test_contrastive_loss_is_low_for_matched_pairs_and_treats_equal_texts_as_positives() -> None:
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    scale = torch.tensor(20.0)
    matched = contrastive_loss(x, x, torch.arange(8), scale)
    shuffled = contrastive_loss(x, x[torch.randperm(8)], torch.arange(8), scale)
    assert matched < 0.1 < shuffled
    # Rows 0 and 1 carry the same text: as shared positives, embedding them identically is
    # rewarded; as distinct texts, it is penalised.
    y = x.clone()
    y[1] = x[0]
    shared = torch.tensor([0, 0, 2, 3, 4, 5, 6, 7])
    assert contrastive_loss(y, y, shared, scale) < contrastive_loss(x, x, shared, scale)
    assert contrastive_loss(y, y, torch.arange(8), scale) > contrastive_loss(x, x, torch.arange(8), scale)


def test_split_by_group_keeps_groups_whole_and_is_deterministic() -> None:
    groups = np.array([f"p{i // 3}" for i in range(300)])
    split = split_by_group(groups, 0.2, 0.1, seed=1)
    parts = [set(groups[r].tolist()) for r in (split.train, split.validation, split.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(split.train) + len(split.validation) + len(split.test) == 300
    assert len(parts[2]) == 20 and len(parts[1]) == 10
    again = split_by_group(groups, 0.2, 0.1, seed=1)
    assert np.array_equal(again.test, split.test)
    picked = one_per_group(split.test, groups, 1000)
    assert len(picked) == len(set(groups[picked].tolist())) == 20


def test_retrieval_recalls_and_zero_shot_on_known_embeddings() -> None:
    eye = np.eye(5, dtype=np.float32)
    assert retrieval_recalls(eye, eye) == {1: 1.0, 10: 1.0}
    assert retrieval_recalls(eye, eye[::-1].copy(), ks=(1,)) == {1: 0.2}  # only the middle row matches itself
    types = np.array(["a", "b", "a", "b", "c"])
    assert zero_shot_classes(types, np.arange(5), 2) == ["a", "b"]
    prompt_vectors = {"a": eye[0], "b": eye[1]}
    image = np.stack([eye[0], eye[1], eye[0], eye[0], eye[2]])  # row 3 (a "b") looks like an "a"

    def encode(texts: list[str]) -> np.ndarray:
        return np.stack([prompt_vectors[t.split()[-1]] for t in texts])

    out = evaluate_embeddings(image, image, np.array(list("vwxyz")), types, np.arange(5), EvaluationSettings(zero_shot_types=2), encode)
    assert out["zero_shot_items"] == 4 and out["zero_shot_accuracy"] == pytest.approx(0.75)
    assert out["zero_shot_accuracy/a"] == 1.0 and out["zero_shot_accuracy/b"] == 0.5


def test_training_aligns_held_out_pairs_far_above_chance() -> None:
    data, _, b = synthetic()
    split = split_by_group(data.groups, 0.25, 0.1, seed=0)
    settings = AlignmentSettings(dim=16, hidden=64, epochs=20, batch_size=64, learning_rate=3e-3, patience=20, seed=0)
    evaluation = EvaluationSettings(retrieval_items=100, zero_shot_types=4, zero_shot_prompts=["{type}"])
    type_text = {t: (np.eye(len(TYPES))[i] * 3 @ b[: len(TYPES)]).astype(np.float32) for i, t in enumerate(TYPES)}

    def features(texts: list[str]) -> np.ndarray:
        return np.stack([type_text[t] for t in texts])

    untrained = AlignmentHeads(48, 24, 16, 64)
    untrained.image.set_standardisation(torch.from_numpy(data.image))
    untrained.text.set_standardisation(torch.from_numpy(data.text))
    before = evaluate_heads(untrained, data, split.test, evaluation, features)
    epochs_seen: list[int] = []
    heads, history = train_heads(data, split, settings, evaluation, features, on_epoch=lambda e, m: epochs_seen.append(e))
    after = evaluate_heads(heads, data, split.test, evaluation, features)
    assert epochs_seen == list(range(20)) and history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    n = after["retrieval_items"]
    assert after["t2i_recall@10"] > max(0.5, before["t2i_recall@10"] + 0.2), (before, after)
    assert after["t2i_recall@10"] > 2.5 * 10 / n
    assert after["zero_shot_accuracy"] > 0.9


def test_training_is_deterministic_given_the_seed() -> None:
    data, _, _ = synthetic(n=120)
    split = split_by_group(data.groups, 0.25, 0.1, seed=0)
    settings = AlignmentSettings(dim=8, hidden=16, epochs=3, batch_size=32, seed=3)
    evaluation = EvaluationSettings(retrieval_items=20)
    a, _ = train_heads(data, split, settings, evaluation)
    b, _ = train_heads(data, split, settings, evaluation)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, msg=name)


def test_heads_save_load_round_trip_is_versioned(tmp_path: Path) -> None:
    heads = AlignmentHeads(12, 8, dim=4, hidden=0)
    heads.image.set_standardisation(torch.randn(30, 12))
    first = save_heads(heads, tmp_path, {"backbones": {"image": "x", "text": "y"}})
    with torch.no_grad():
        heads.log_scale += 1
    second = save_heads(heads, tmp_path, {"backbones": {"image": "x", "text": "y"}})
    assert first != second and latest_heads(tmp_path) == second
    loaded, manifest = load_heads(second)
    assert manifest["backbones"] == {"image": "x", "text": "y"} and manifest["architecture"]["hidden"] == 0
    x = torch.randn(3, 12)
    torch.testing.assert_close(loaded.image(x), heads.eval().image(x))
    assert float(loaded.log_scale.detach()) == pytest.approx(float(heads.log_scale.detach()))
    assert json.loads((first / "manifest.json").read_text())["version"] == first.name
    assert not list(tmp_path.glob(".*tmp*")) and not list(tmp_path.glob(".2*"))
    with pytest.raises(FileNotFoundError, match="recsys content"):
        latest_heads(tmp_path / "empty")
