"""Content-embedding benchmark: alignment quality, throughput, content recommender, search grids.

Usage (from the repository root)::

    nice -n 10 .venv/bin/python bench/content_bench.py --config configs/hm.yaml

Runs the content stage (``recsys content``: backbone features from the cache, alignment,
held-out evaluation, item vectors) unless ``--reuse`` finds its outputs, then measures encoder
throughput without the cache, evaluates the content-only recommender on the last-day protocol
beside popularity and history baselines, renders search grids, and writes
``bench/results/content.json`` + ``bench/results/content.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.content.aligned import Backbones  # noqa: E402
from features.content.catalogue import catalogue_inputs  # noqa: E402
from features.content.backends import build_encoder  # noqa: E402
from features.content.encoders import resolve  # noqa: E402
from training.content import run_content  # noqa: E402
from features.content.search import ContentSearch  # noqa: E402
from recsys.vectors import ItemVectors  # noqa: E402
from recsys.config import ProjectConfig, load_config  # noqa: E402
from recsys.data import Dataset, load_dataset  # noqa: E402

log = logging.getLogger("content_bench")
RESULTS = ROOT / "bench" / "results"
IMAGENET_BRIDGE_BASELINE = 0.356  # ../shared/docs/MODELS.md: ImageNet-label bridge, 18-way product type
QUERIES = ["red dress", "black jeans", "striped t-shirt", "white sneakers"]


def throughput(config: ProjectConfig, dataset: Dataset, n_images: int = 96, n_texts: int = 1024) -> dict[str, float]:
    """Images/s (decode + resize + forward, batch 32) and texts/s (tokenise + forward, batch 128), no cache."""
    cc = config.content
    inputs = catalogue_inputs(dataset, cc, cc.group_column, cc.type_column)
    rng = np.random.default_rng(1)
    photo_rows = rng.choice(np.flatnonzero(inputs.has_image), n_images + 32, replace=False)
    text_rows = rng.choice(inputs.n, n_texts + 128, replace=False)
    encoder = build_encoder(cc, config.work_path)
    backbones = Backbones(cc, cache_root=None)  # no cache: every input is really computed
    heads = getattr(encoder, "heads", None)
    torch.set_num_threads(cc.threads)
    paths = [inputs.image_paths[i] for i in photo_rows]
    texts = [inputs.texts[i] for i in text_rows]
    backbones.image_tower.encode(paths[:32])  # warm-up: model load, first-call allocations
    backbones.text_tower.encode(texts[:128])
    t = time.perf_counter()
    for s in range(32, len(paths), 32):
        feats = backbones.image_tower.encode(paths[s : s + 32])
        if heads is not None:
            encoder.project_images(feats)  # type: ignore[attr-defined]
    images_s = n_images / (time.perf_counter() - t)
    load_images = os.getloadavg()[0]
    t = time.perf_counter()
    for s in range(128, len(texts), 128):
        feats = backbones.text_tower.encode(texts[s : s + 128])
        if heads is not None:
            encoder.project_texts(feats)  # type: ignore[attr-defined]
    texts_s = n_texts / (time.perf_counter() - t)
    return {"images_per_s": images_s, "texts_per_s": texts_s, "image_batch": 32, "text_batch": 128, "images": n_images, "texts": n_texts,
            "threads": cc.threads, "image_input": f"{cc.backbone.image_width}x{cc.backbone.image_height}",
            # Other jobs share the two cores; the 1-minute load average says how much they did.
            "load_average_1m": round(max(load_images, os.getloadavg()[0]), 2)}


def recommender_table(config: ProjectConfig, dataset: Dataset) -> list[dict[str, float | str]]:
    """popularity, history and content on the last-day protocol (the shared harness and metrics)."""
    from recsys.evaluation.protocol import compare, evaluate_model, format_table, prepare_evaluation, results_table
    from recsys.registry import build_model

    from recsys.models.content import ContentRecommender

    setup = prepare_evaluation(dataset, config)
    results = [evaluate_model(build_model(name, config), setup, config.evaluation) for name in ("popularity", "history", "content")]
    # Variant: items sold in the last 2 training days first (most of the catalogue was not on sale that week).
    recent = ContentRecommender.from_config(config)
    recent.settings = recent.settings.model_copy(update={"recent_days": 2})
    results.append(evaluate_model(recent, setup, config.evaluation))
    results[-1].name = "content (recently sold first, 2 days)"
    table = results_table(results, config.evaluation)
    print(format_table(table))
    rows = table.to_dicts()
    diff = compare(results[0], results[2], f"map@{config.evaluation.k}", config.evaluation)
    rows[2]["map_vs_popularity_diff"] = float(diff.diff)
    rows[2]["map_vs_popularity_ci95"] = [float(diff.low), float(diff.high)]
    return rows


def grid(dataset: Dataset, title: str, item_ids: list[str], path: Path) -> Path:
    """A small captioned contact sheet of result photos (PNG, kept well under 500 KB)."""
    items = dataset.items.select("item_id", "product_type_name", "colour_group_name").filter(
        dataset.items["item_id"].is_in(item_ids)
    )
    meta = {r["item_id"]: f"{r['colour_group_name']} {r['product_type_name']}" for r in items.to_dicts()}
    w, h, cap, cols = 96, 144, 24, 6
    rows = int(np.ceil(len(item_ids) / cols))
    sheet = Image.new("RGB", (cols * w, rows * (h + cap) + 20), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), title, fill="black")
    for n, item_id in enumerate(item_ids):
        x, y = (n % cols) * w, 20 + (n // cols) * (h + cap)
        p = dataset.images.path_for(item_id)
        if p is not None and p.is_file():
            with Image.open(p) as im:
                sheet.paste(im.convert("RGB").resize((w, h)), (x, y))
        else:
            draw.rectangle((x + 2, y + 2, x + w - 2, y + h - 2), outline="grey")
            draw.text((x + 8, y + h // 2), "no photo", fill="grey")
        draw.text((x + 2, y + h + 2), meta.get(item_id, item_id)[:17], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path


def search_examples(config: ProjectConfig, dataset: Dataset, vectors: ItemVectors) -> dict[str, list[str]]:
    """Text queries, an image+text query and similar items; grids written next to the results."""
    encoder = build_encoder(config.content, config.work_path)
    search = ContentSearch(vectors, encoder, config.content.search)
    out: dict[str, list[str]] = {}
    for q in QUERIES:
        res = search.search(text=q, k=12, require_image=True)
        out[q] = res.item_ids
        grid(dataset, f'text: "{q}"', res.item_ids, RESULTS / f"content_search_{q.replace(' ', '_')}.png")
    # Image + text: a photo of a dress from the results, asking for it "in blue".
    anchor = out["red dress"][0]
    photo = dataset.images.path_for(anchor)
    res = search.search(text="blue dress", image=photo, k=12, require_image=True, exclude=[anchor])
    out[f"image {anchor} + 'blue dress'"] = res.item_ids
    grid(dataset, f'photo of {anchor} + "blue dress"', [anchor, *res.item_ids[:11]], RESULTS / "content_search_image_plus_text.png")
    sim = search.similar_items(anchor, k=11, require_image=True)
    out[f"similar to {anchor}"] = sim.item_ids
    grid(dataset, f"similar items to {anchor} (first)", [anchor, *sim.item_ids], RESULTS / "content_similar_items.png")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/hm.yaml")
    parser.add_argument("--reuse", action="store_true", help="reuse the latest content-stage outputs if present")
    parser.add_argument("--skip-recommender", action="store_true")
    parser.add_argument("--throughput-only", action="store_true", help="re-measure throughput into an existing content.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    config = load_config(args.config)
    cc = config.content
    dataset = load_dataset(config.data)
    if args.throughput_only:
        payload = json.loads((RESULTS / "content.json").read_text())
        payload["throughput"] = throughput(config, dataset)
        payload["throughput_command"] = "nice -n 10 .venv/bin/python bench/content_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
        (RESULTS / "content.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
        (RESULTS / "content.md").write_text(markdown(payload))
        print(json.dumps(payload["throughput"], indent=2))
        return 0
    vectors_path = resolve(config.work_path, cc.vectors_path)
    metrics_path = vectors_path.with_name("metrics.json")
    t = time.perf_counter()
    if args.reuse and vectors_path.is_file() and metrics_path.is_file():
        stage = json.loads(metrics_path.read_text())
    else:
        result = run_content(config, dataset)
        stage = json.loads(metrics_path.read_text())
        assert stage["encoder"] == result.encoder
    stage_seconds = time.perf_counter() - t
    vectors = ItemVectors.load(vectors_path)
    speed = throughput(config, dataset)
    log.info("throughput: %s", speed)
    examples = search_examples(config, dataset, vectors)
    recs = [] if args.skip_recommender else recommender_table(config, dataset)
    m = stage["metrics"]
    payload = {
        "command": "nice -n 10 .venv/bin/python bench/content_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "content_stage": "recsys content --config " + args.config + (" (earlier run, reused)" if args.reuse else " (run by this bench)"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__, "note": "shared 2-core machine; timings are noisy"},
        "encoder": stage["encoder"],
        "heads_dir": stage.get("heads_dir"),
        "mlflow_run_id": stage.get("mlflow_run_id"),
        "alignment": {k: v for k, v in m.items() if not k.startswith("zero_shot_accuracy/")},
        "zero_shot_per_type": {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("zero_shot_accuracy/")},
        "zero_shot_baseline_imagenet_bridge": IMAGENET_BRIDGE_BASELINE,
        "targets": {"zero_shot_accuracy": 0.70, "t2i_recall@10": 0.25, "images_per_s": 25},
        "throughput": speed,
        "stage_seconds": stage.get("seconds"),
        "bench_stage_wall_s": stage_seconds,
        "catalogue": {"items": int(len(vectors.item_ids)), "with_image": int(vectors.has_image.sum()), "dim": vectors.dim},
        "recommender": recs,
        "search_examples": examples,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "content.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    (RESULTS / "content.md").write_text(markdown(payload))
    print((RESULTS / "content.md").read_text())
    return 0


def markdown(p: dict) -> str:
    """The README table of the run."""
    a, s = p["alignment"], p["throughput"]
    lines = [
        "| measure | value | target / reference |",
        "|---|---|---|",
        f"| text->image Recall@1 / @10 ({int(a['retrieval_items'])} held-out items) | {a['t2i_recall@1']:.3f} / {a['t2i_recall@10']:.3f} | R@10 >= 0.25 (chance 0.01) |",
        f"| image->text Recall@1 / @10 | {a['i2t_recall@1']:.3f} / {a['i2t_recall@10']:.3f} | |",
        f"| zero-shot product type, {len(p['zero_shot_per_type'])} types ({int(a['zero_shot_items'])} held-out photos), prompt ensemble | {a['zero_shot_accuracy']:.3f} | >= 0.70; ImageNet bridge 0.356 |",
        f"| same, single prompt \"a photo of a {{type}}\" | {a['zero_shot_accuracy_single']:.3f} | |",
        f"| images/s (decode + resize {s['image_input']} + forward, batch 32, {s['threads']} threads; load avg {s.get('load_average_1m', float('nan')):.1f}) | {s['images_per_s']:.1f} | >= 25 |",
        f"| texts/s (tokenise + forward, batch 128) | {s['texts_per_s']:.1f} | |",
    ]
    if p["recommender"]:
        lines += ["", "| recommender (last-day protocol, 2,036 warm users) | MAP@12 | Recall@12 | Recall@100 |", "|---|---|---|---|"]
        for r in p["recommender"]:
            lines.append(f"| {r['model']} | {r['map@12']:.4f} | {r['recall@12']:.4f} | {r['recall@100']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
