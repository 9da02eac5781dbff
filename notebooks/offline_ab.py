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
# # Offline A/B: variant A vs variant B on the H&M last-day protocol
#
# Both variants are scored by the project's own evaluation code on exactly the same test users
# (warm users of the test day), so every difference below is a *paired* difference with a
# bootstrap 95% interval. Change the parameters cell (or pass `-p` to papermill) to compare other
# variants: `model:<registered name>` (fitted here), `bundle:<list>[@<bundle version or path>]` (a list
# the training run evaluated, stored in its bundle: popularity, history, als, content, two_tower,
# candidates, reranked), `mlflow:<run id>/<list>` (the same, from the run's MLflow artifacts) or
# `lists:<parquet of saved lists>`. The default compares the latest training run's full pipeline
# (two-tower + merged candidates + LightGBM reranker) with ALS, so its verdict can be checked
# against that run's table.

# %% tags=["parameters"]
config_path = "configs/hm.yaml"
variant_a = "bundle:als"
variant_b = "bundle:reranked"
name_a = ""
name_b = ""
primary_metric = ""  # default: MAP at the config's evaluation.k
n_examples = 3
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

from recsys.config import load_config
from recsys.data import load_dataset
from recsys.evaluation.analysis import (
    activity_buckets,
    compare_table,
    item_segment_recall,
    recall_curve,
    recommended_popularity,
    user_segment_table,
    verdict,
)
from recsys.evaluation.protocol import prepare_evaluation
from training.variants import resolve_variant
from recsys.viz import image_grid

pl.Config.set_tbl_rows(30)
config = load_config(config_path)
dataset = load_dataset(config.data)
setup = prepare_evaluation(dataset, config)
k = config.evaluation.k
print(setup.split.describe())
print(f"test users: {len(setup.users):,}")

# %%
a = resolve_variant(variant_a, config, setup, name=name_a or None)
b = resolve_variant(variant_b, config, setup, name=name_b or None)
if a.name == b.name:
    b.name = b.evaluation.name = b.name + "_B"
print(f"A = {a.name} ({a.spec}, {a.seconds:.1f}s)   B = {b.name} ({b.spec}, {b.seconds:.1f}s)")

# %% [markdown]
# ## Metrics with paired bootstrap 95% intervals (B − A)

# %%
metrics = [f"map@{k}", f"ndcg@{k}", f"recall@{k}", f"recall@{max(config.evaluation.recall_ks)}", f"hitrate@{k}"]
table = compare_table(a.evaluation, b.evaluation, metrics, config.evaluation)
aggregate = pl.DataFrame(
    [
        {"metric": m, a.name: a.evaluation.summary[m], b.name: b.evaluation.summary[m]}
        for m in (f"coverage@{k}", f"novelty@{k}")
    ]
)
display(table)  # noqa: F821 - provided by IPython
display(aggregate)  # noqa: F821

# %%
fig, ax = plt.subplots(figsize=(7, 3))
ys = np.arange(table.height)
ax.errorbar(table["diff"], ys, xerr=[table["diff"] - table["ci_low"], table["ci_high"] - table["diff"]], fmt="o", capsize=4)
ax.axvline(0, color="grey", lw=1)
ax.set_yticks(ys, table["metric"].to_list())
ax.set_xlabel(f"{b.name} − {a.name} (95% CI)")
ax.set_title("Paired differences")
plt.show()

# %% [markdown]
# ## Recall@k curves

# %%
ks = [1, 2, 4, 8, 12, 25, 50, 100]
curve_a, curve_b = recall_curve(a.recommendations, setup, ks), recall_curve(b.recommendations, setup, ks)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(ks, list(curve_a.values()), marker="o", label=a.name)
ax.plot(ks, list(curve_b.values()), marker="o", label=b.name)
ax.set_xscale("log")
ax.set_xlabel("k")
ax.set_ylabel("Recall@k")
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## Segments: user activity, items with / without photo, cold items, product groups

# %%
buckets = activity_buckets(setup)
display(user_segment_table([a.evaluation, b.evaluation], buckets, f"map@{k}"))  # noqa: F821

train_items = set(setup.train.interactions["item_id"].unique().to_list())
items = dataset.items
photo = items["has_image"].to_list() if "has_image" in items.columns else [False] * items.height
has_image = dict(zip(items["item_id"].to_list(), photo))
segmentations = {
    "photo": {i: ("with photo" if h else "no photo") for i, h in has_image.items()},
    "cold": {i: ("seen in training" if i in train_items else "cold (never bought before)") for i in has_image},
}
# The catalogue's first configured category column (product group, department, genre ...), if any.
categorical = [c for c in config.data.items.columns.categorical if c in items.columns]
if categorical:
    segmentations[categorical[0]] = dict(zip(items["item_id"].to_list(), items[categorical[0]].cast(pl.String).to_list()))
for label, seg in segmentations.items():
    ra = item_segment_recall(a.recommendations, setup, seg, 100).rename({"recall@100": a.name})
    rb = item_segment_recall(b.recommendations, setup, seg, 100).select("segment", pl.col("recall@100").alias(b.name))
    print(f"Recall@100 by {label}")
    display(ra.join(rb, on="segment").sort("truth_items", descending=True).head(12))  # noqa: F821

# %% [markdown]
# ## Popularity of what each variant recommends

# %%
pa = recommended_popularity(a.recommendations, setup.item_popularity, k)
pb = recommended_popularity(b.recommendations, setup.item_popularity, k)
fig, ax = plt.subplots(figsize=(6, 3.5))
bins = np.logspace(0, np.log10(max(pa.max(initial=1), pb.max(initial=1)) + 1), 30)
ax.hist(pa + 1, bins=bins, alpha=0.6, label=f"{a.name} (median {np.median(pa):.0f})")
ax.hist(pb + 1, bins=bins, alpha=0.6, label=f"{b.name} (median {np.median(pb):.0f})")
ax.set_xscale("log")
ax.set_xlabel("training-window purchases of a recommended item (+1)")
ax.legend()
plt.show()

# %% [markdown]
# ## Example users: history, then both variants' top recommendations (green frame = bought on the test day)

# %%
rng = np.random.default_rng(0)
rich = [u for u in setup.users if len(setup.truth[u]) >= 2]
examples = list(rng.choice(rich, size=min(n_examples, len(rich)), replace=False)) if rich else []
hist = setup.train.interactions.sort("timestamp", descending=True)
for user in examples:
    past = hist.filter(pl.col("user_id") == user)["item_id"].unique(maintain_order=True).head(8).to_list()
    truth = set(setup.truth[user])
    fig = image_grid(
        [("history", past), (a.name, a.recommendations.get(user, [])[:8]), (b.name, b.recommendations.get(user, [])[:8])],
        dataset.images,
        items,
        label_column=config.data.items.columns.name,
        hits=[set(), truth, truth],
    )
    fig.suptitle(f"user {user[:12]}…  bought {len(truth)} item(s) on the test day", fontsize=10)
    plt.show()

# %% [markdown]
# ## Verdict (computed from the numbers above)

# %%
decision = verdict(table, a.name, b.name, primary_metric or f"map@{k}")
print(decision)

# %%
if log_to_mlflow:
    import mlflow

    from training.tracking import log_metrics, start_run

    with start_run(config, f"offline_ab:{a.name}_vs_{b.name}", params={"variant_a": a.spec, "variant_b": b.spec}, tags={"kind": "evaluation"}) as run:
        for row in table.iter_rows(named=True):
            log_metrics({f"{row['metric']}.a": row[a.name], f"{row['metric']}.b": row[b.name], f"{row['metric']}.diff": row["diff"], f"{row['metric']}.ci_low": row["ci_low"], f"{row['metric']}.ci_high": row["ci_high"]})
        mlflow.log_text(decision, "verdict.txt")
        mlflow.log_text(table.write_csv(), "comparison.csv")
        print("logged to MLflow run", run.info.run_id)
