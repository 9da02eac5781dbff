# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Content encoder quality: image–text alignment on held-out H&M products
#
# The content encoder puts product photos and product texts in one space. This notebook checks it
# on the products **held out from alignment training** (whole product groups, so a colour variant of
# a training product never counts as held out): cross-modal retrieval recall, zero-shot product-type
# classification with its confusion matrix, and nearest-neighbour grids a person can judge by eye.
# It reads the vectors and encoder of a trained model bundle (default: the latest `make train`).

# %% tags=["parameters"]
config_path = "configs/hm.yaml"
bundle = "latest"  # "latest", a version under <work_dir>/bundles, or a bundle path
queries = ["red dress", "black jeans", "striped t-shirt", "white sneakers", "denim jacket"]
n_similar_examples = 3
log_to_mlflow = True

# %%
import os
import sys
from pathlib import Path

root = Path.cwd() if (Path.cwd() / "recsys").is_dir() else Path.cwd().parent
sys.path.insert(0, str(root))
os.chdir(root)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from features.content.alignment import one_per_group, retrieval_recalls, zero_shot_classes, zero_shot_predictions
from features.content.catalogue import catalogue_inputs
from features.content.backends import build_encoder
from training.content import content_config, heldout_items
from features.content.search import ContentSearch
from recsys.vectors import ItemVectors
from recsys.config import load_config
from recsys.data import load_dataset
from recsys.viz import image_grid
from recsys.bundle import resolve_bundle

config = load_config(config_path)
bundles = config.work_path / "bundles"
bundle_dir = resolve_bundle(Path(bundle)) if Path(bundle).is_dir() else resolve_bundle(bundles, None if bundle == "latest" else bundle)
cc = content_config(config)
dataset = load_dataset(config.data)
vectors = ItemVectors.load(bundle_dir / "item_vectors.npz")
heads = bundle_dir / "content_heads"
encoder = build_encoder(cc, config.work_path, heads if heads.is_dir() else None)
inputs = catalogue_inputs(dataset, cc, cc.group_column, cc.type_column)
if not np.array_equal(vectors.item_ids, inputs.item_ids):
    raise ValueError(f"{bundle_dir}/item_vectors.npz was built for another catalogue than {config_path} loads ({len(vectors.item_ids):,} vs {inputs.n:,} items)")
held_out = heldout_items(inputs, cc)
print(f"bundle {bundle_dir.name}: {len(vectors.item_ids):,} items, {int(vectors.has_image.sum()):,} with a photo; encoder {vectors.encoder}")
print(f"held-out items (with photo, unseen by the alignment heads): {len(held_out):,}")

# %% [markdown]
# ## Cross-modal retrieval among held-out products
#
# One item per held-out product group (up to the configured 1,000); query by its text, find its photo
# (text→image), and the reverse. Chance is 1/N at k=1.

# %%
picked = one_per_group(held_out, inputs.groups, cc.evaluation.retrieval_items, cc.alignment.seed)
ks = (1, 2, 5, 10, 20, 50, 100)
t2i = retrieval_recalls(vectors.text[picked], vectors.image[picked], ks)
i2t = retrieval_recalls(vectors.image[picked], vectors.text[picked], ks)
curve = pl.DataFrame({"k": list(ks), "text→image": [t2i[k] for k in ks], "image→text": [i2t[k] for k in ks], "chance": [k / len(picked) for k in ks]})
display(curve)  # noqa: F821 - provided by IPython

fig, ax = plt.subplots(figsize=(6, 3.5))
for col in ("text→image", "image→text", "chance"):
    ax.plot(curve["k"], curve[col], marker="o" if col != "chance" else None, ls="--" if col == "chance" else "-", label=col)
ax.set_xscale("log")
ax.set_xlabel(f"k (among {len(picked):,} held-out products)")
ax.set_ylabel("Recall@k")
ax.grid(alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# ## Zero-shot product type
#
# Each held-out photo is assigned the product type whose prompts ("a photo of a {type}", ...) embed
# nearest. The crude ImageNet-label bridge of `../shared/docs/MODELS.md` reaches 0.356 on the same 18 types.

# %%
classes = zero_shot_classes(inputs.types, np.flatnonzero(inputs.has_image), cc.evaluation.zero_shot_types)
encode = lambda texts: encoder.encode_texts(texts, progress=False)  # noqa: E731
keep, truth, pred = zero_shot_predictions(vectors.image, inputs.types, held_out, classes, cc.evaluation.zero_shot_prompts, encode)
accuracy = float(np.mean(pred == truth))
confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
np.add.at(confusion, (truth, pred), 1)
share = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
print(f"zero-shot accuracy over {len(classes)} types, {len(keep):,} held-out photos: {accuracy:.3f} (ImageNet bridge 0.356)")

fig, ax = plt.subplots(figsize=(8, 7))
im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
ax.set_xticks(range(len(classes)), classes, rotation=70, ha="right", fontsize=8)
ax.set_yticks(range(len(classes)), classes, fontsize=8)
for i in range(len(classes)):
    for j in range(len(classes)):
        if confusion[i, j]:
            ax.text(j, i, confusion[i, j], ha="center", va="center", fontsize=6, color="white" if share[i, j] > 0.5 else "black")
ax.set_xlabel("predicted type")
ax.set_ylabel("true type")
ax.set_title(f"Zero-shot confusion (row-normalised), accuracy {accuracy:.3f}")
fig.colorbar(im, ax=ax, fraction=0.04)
plt.show()

per_class = pl.DataFrame({"type": classes, "photos": confusion.sum(1), "accuracy": np.diag(share)})
most_confused = sorted(((int(confusion[i, j]), classes[i], classes[j]) for i in range(len(classes)) for j in range(len(classes)) if i != j), reverse=True)[:5]
display(per_class.sort("accuracy"))  # noqa: F821
print("most frequent confusions (true -> predicted):", ", ".join(f"{a} -> {b} ({n})" for n, a, b in most_confused))

# %% [markdown]
# ## Text queries: the nearest products (two-stage search, photos only)

# %%
search = ContentSearch(vectors, encoder, cc.search)
rows = [(q, search.search(text=q, k=8, require_image=True).item_ids) for q in queries]
fig = image_grid(rows, dataset.images, dataset.items, label_column=config.data.items.columns.name)
plt.show()

# %% [markdown]
# ## Similar items: held-out products and their nearest neighbours by fused vector

# %%
rng = np.random.default_rng(0)
seeds = [str(inputs.item_ids[r]) for r in rng.choice(held_out, size=min(n_similar_examples, len(held_out)), replace=False)]
rows = []
for item in seeds:
    rows.append(("query", [item]))
    rows.append(("similar", search.similar_items(item, k=8, require_image=True).item_ids))
fig = image_grid(rows, dataset.images, dataset.items, label_column=config.data.items.columns.name)
plt.show()

# %% [markdown]
# ## Summary

# %%
summary = {
    "t2i_recall@1": t2i[1],
    "t2i_recall@10": t2i[10],
    "i2t_recall@1": i2t[1],
    "i2t_recall@10": i2t[10],
    "zero_shot_accuracy": accuracy,
    "retrieval_items": float(len(picked)),
    "zero_shot_items": float(len(keep)),
}
display(pl.DataFrame([summary]))  # noqa: F821
verdict = (
    f"text→image Recall@10 {summary['t2i_recall@10']:.3f} (target ≥ 0.25, chance {10 / len(picked):.3f}); "
    f"zero-shot type accuracy {accuracy:.3f} (target ≥ 0.70, ImageNet bridge 0.356): "
    + ("both targets met." if summary["t2i_recall@10"] >= 0.25 and accuracy >= 0.70 else "not all targets met.")
)
print(verdict)

# %%
if log_to_mlflow:
    import mlflow

    from training.tracking import log_metrics, start_run

    with start_run(config, "content_quality", params={"bundle": bundle_dir.name, "encoder": vectors.encoder[:250]}, tags={"kind": "evaluation"}) as run:
        log_metrics(summary)
        log_metrics({f"zero_shot_accuracy/{c}": float(a) for c, a in zip(classes, np.diag(share))})
        mlflow.log_text(verdict, "verdict.txt")
        mlflow.log_text(curve.write_csv(), "retrieval_curve.csv")
        print("logged to MLflow run", run.info.run_id)
