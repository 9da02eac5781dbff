"""The ``clip`` backend on a tiny randomly initialised CLIP, saved and loaded back offline.

No real CLIP weights exist on these machines (../shared/docs/MODELS.md); the test builds one
from a small ``CLIPConfig`` with an in-memory character vocabulary, which runs the real code
path: ``CLIPModel`` / ``CLIPTokenizer`` / ``CLIPImageProcessorPil`` ``from_pretrained(dir)``.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from features.content.backends import build_encoder
from features.content.clip import ClipEncoder
from recsys.content_config import ContentConfig


def save_tiny_clip(directory: Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".,'-/":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "intermediate_size": 37, "max_position_embeddings": 64, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "intermediate_size": 37},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(directory)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def photos(root: Path) -> list[Path]:
    root.mkdir(exist_ok=True)
    out = []
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200), (20, 200, 20)]):
        p = root / f"p{i}.jpg"
        Image.new("RGB", (40, 60), colour).save(p)
        out.append(p)
    return out


def test_clip_encodes_paths_pil_and_texts_to_unit_vectors(clip_dir: Path, tmp_path: Path) -> None:
    enc = ClipEncoder(clip_dir, cache_root=tmp_path / "cache")
    paths = photos(tmp_path / "img")
    img = enc.encode_images(paths, batch_size=2, progress=False)
    txt = enc.encode_texts(["a red dress", "blue jeans", "a red dress"], progress=False)
    assert img.shape == (3, 16) and txt.shape == (3, 16) and enc.dim == 16
    assert img.dtype == np.float32 and txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(txt[0], txt[2])
    assert not np.allclose(txt[0], txt[1]) and not np.allclose(img[0], img[1])
    with Image.open(paths[0]) as im:
        pil = enc.encode_images([im.convert("RGB")], progress=False)
    np.testing.assert_allclose(pil[0], img[0], atol=1e-5)
    assert enc.encode_texts([], progress=False).shape == (0, 16)


def test_clip_cache_is_reused_and_keyed_by_weights(clip_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = ClipEncoder(clip_dir, cache_root=cache)
    a = first.encode_texts(["a red dress"], progress=False)
    shards = sorted(cache.rglob("shard-*.npz"))
    again = ClipEncoder(clip_dir, cache_root=cache)
    assert again.identity == first.identity
    np.testing.assert_array_equal(again.encode_texts(["a red dress"], progress=False), a)
    assert sorted(cache.rglob("shard-*.npz")) == shards, "a cache hit writes nothing"
    other = ClipEncoder(save_tiny_clip(tmp_path / "other", seed=1), cache_root=cache)
    assert other.identity != first.identity
    assert not np.allclose(other.encode_texts(["a red dress"], progress=False), a)


def test_build_encoder_selects_clip_and_reports_a_missing_model(clip_dir: Path, tmp_path: Path) -> None:
    config = ContentConfig(backend="clip", clip={"model": str(clip_dir)})
    enc = build_encoder(config, tmp_path)
    assert isinstance(enc, ClipEncoder) and (tmp_path / "content" / "cache").as_posix() in str(enc._texts.cache.dir)  # type: ignore[union-attr]
    with pytest.raises(FileNotFoundError, match="content.clip.model"):
        build_encoder(ContentConfig(backend="clip", clip={"model": str(tmp_path / "nope")}), tmp_path)
