"""MLflow tracking with safe defaults: a sqlite store and an artifact folder inside the work dir.

``MLFLOW_TRACKING_URI`` wins when set (a team's shared server). Otherwise runs go to
``<work_dir>/mlflow/mlflow.db`` with artifacts in ``<work_dir>/mlflow/artifacts`` — never to a
stray ``./mlruns`` in whatever directory the command happened to start in.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow.entities import Run  # noqa: E402

from recsys.config import ProjectConfig  # noqa: E402

log = logging.getLogger(__name__)
# Read once, before this module ever calls mlflow.set_tracking_uri (which exports the variable).
_USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")
PID_TAG = "recsys.pid"
HOST_TAG = "recsys.host"


def tracking_paths(work_dir: Path) -> tuple[str, str]:
    """(tracking URI, artifact root URI) for the embedded default store below ``work_dir``."""
    root = (work_dir / "mlflow").resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / "artifacts").mkdir(exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def configure(config: ProjectConfig) -> str:
    """Point MLflow at the configured store and make sure the project's experiment exists.

    Returns:
        The experiment id.
    """
    uri = _USER_TRACKING_URI
    artifact_root: str | None = None
    if not uri:
        uri, artifact_root = tracking_paths(config.work_path)
    mlflow.set_tracking_uri(uri)
    if not _USER_TRACKING_URI:
        # mlflow.set_tracking_uri() also exports MLFLOW_TRACKING_URI; left there, it would pin every
        # later config (and every child process) to this project's store as if a user had set it.
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    name = f"recsys-{config.name}"
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        # An explicit artifact location keeps sqlite-backed runs from writing ./mlruns.
        return mlflow.create_experiment(name, artifact_location=artifact_root)
    return experiment.experiment_id


@contextmanager
def start_run(
    config: ProjectConfig,
    run_name: str,
    parent: Run | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[Run]:
    """Open an MLflow run (a child run when ``parent`` is given) and close it on exit.

    Args:
        config: project config (selects store and experiment).
        run_name: e.g. "alignment", "two_tower", "train".
        parent: the parent run for stage runs of one pipeline run.
        params: logged at start (flattened, values stringified by MLflow).
        tags: extra tags.

    Yields:
        The active run; a failure inside marks it FAILED and re-raises.
    """
    experiment_id = configure(config)
    # A stage that opens its own run inside a pipeline run becomes that run's child.
    parent = parent or mlflow.active_run()
    run_tags = {"project": config.name, PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), **(tags or {})}
    if parent is not None:
        run_tags["mlflow.parentRunId"] = parent.info.run_id
    else:
        close_orphaned_runs(experiment_id)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags, nested=parent is not None) as run:
        if params:
            mlflow.log_params(flatten(params))
        log.info("mlflow run %s (%s) at %s", run_name, run.info.run_id, mlflow.get_tracking_uri())
        yield run


def close_orphaned_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the runs left RUNNING by a process of this host that no longer exists.

    A SIGKILLed ``recsys train`` (or a power cut) cannot close its runs; without this they would
    show as running forever in the UI. Only runs tagged with this host and a dead pid are touched,
    so runs of other machines sharing a tracking server, or still alive here, are left alone.

    Args:
        experiment_id: the experiment to clean.

    Returns:
        The ids of the runs marked KILLED.
    """
    host = socket.gethostname()
    client = mlflow.MlflowClient()
    closed: list[str] = []
    runs = client.search_runs([experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'", max_results=1000)
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        client.set_tag(run.info.run_id, "recsys.orphaned", f"process {pid} on {host} ended without closing the run")
        client.set_terminated(run.info.run_id, status="KILLED")
        closed.append(run.info.run_id)
    if closed:
        log.warning("marked %d run(s) of dead processes KILLED: %s", len(closed), ", ".join(closed))
    return closed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def log_metrics(metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
    """Log numeric metrics; MLflow metric names may not contain '@', so it becomes '_at_'."""
    clean = {f"{prefix}{k}".replace("@", "_at_"): float(v) for k, v in metrics.items() if v == v}
    mlflow.log_metrics(clean, step=step)


def register_bundle(config: ProjectConfig, bundle_path: Path, bundle_version: str, run_id: str, metrics: dict[str, float]) -> str | None:
    """Register a finished bundle as a version of the ``<project>-recommender`` MLflow model.

    The version's source is the bundle folder itself (it is already versioned, checksummed and
    self-contained; copying a ~1 GB folder into the artifact store per run would double the disk).
    A team on a shared tracking server registers bundles from a shared path the same way.

    Args:
        config: project config (store, model name).
        bundle_path: the bundle directory.
        bundle_version: the bundle's version string (a tag on the model version).
        run_id: the training run that produced it.
        metrics: headline metrics, copied into tags for the registry view.

    Returns:
        The registered version number, or None when the registry refused (logged, not fatal:
        the bundle and the run are complete without it).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    configure(config)
    client = MlflowClient()
    name = f"{config.name}-recommender"
    try:
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name, description="Hybrid recommender bundles written by `recsys train`.")
        tags = {"bundle_version": bundle_version, **{k.replace("@", "_at_"): f"{v:.6g}" for k, v in metrics.items() if isinstance(v, int | float)}}
        version = client.create_model_version(name, source=bundle_path.resolve().as_uri(), run_id=run_id, tags=tags,
                                              description=f"bundle {bundle_version}")
        client.set_registered_model_alias(name, "latest-trained", version.version)
    except MlflowException as err:
        log.warning("could not register bundle %s in the MLflow model registry: %s", bundle_version, err)
        return None
    log.info("registered %s version %s (bundle %s)", name, version.version, bundle_version)
    return str(version.version)
