"""Execute the notebooks headless and write executed copies and HTML reports.

The sources are jupytext percent files (``notebooks/*.py``: plain diffs, no outputs in git).
Each is converted to ``.ipynb``, executed with papermill (parameters injected), and exported
to HTML with nbconvert. A failing cell fails the run (and the test that calls it).

Usage::

    python -m training.notebooks --config configs/hm.yaml --out notebooks/out [--only offline_ab] [-p key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from recsys.config import PROJECT_ROOT, ProjectConfig, load_config

log = logging.getLogger(__name__)
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"


def run_notebook(source: Path, out_dir: Path, parameters: dict[str, Any], timeout: int = 1800) -> tuple[Path, Path]:
    """Convert, execute and export one notebook.

    Args:
        source: the jupytext ``.py`` file.
        out_dir: where ``<name>.ipynb`` (executed) and ``<name>.html`` go.
        parameters: papermill parameters (override the notebook's ``parameters`` cell).
        timeout: per-cell timeout in seconds.

    Returns:
        (executed notebook, HTML report).

    Raises:
        papermill.PapermillExecutionError: a cell failed (the message names it).
    """
    import jupytext
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = source.stem
    raw = out_dir / f".{name}.input.ipynb"
    nbformat.write(jupytext.read(source), raw)
    executed = out_dir / f"{name}.ipynb"
    log.info("executing %s with %s", source.name, parameters)
    try:
        papermill.execute_notebook(
            str(raw), str(executed), parameters=parameters, cwd=str(PROJECT_ROOT), kernel_name="python3",
            progress_bar=False, execution_timeout=timeout, log_output=False,
        )
    finally:
        raw.unlink(missing_ok=True)
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    html = out_dir / f"{name}.html"
    tmp = html.with_name(f".{html.name}.tmp")
    tmp.write_text(body)
    tmp.replace(html)
    log.info("wrote %s and %s", executed, html)
    return executed, html


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/hm.yaml")
    parser.add_argument("--out", type=Path, default=NOTEBOOK_DIR / "out")
    parser.add_argument("--only", action="append", help="notebook name(s) to run (default: all)")
    parser.add_argument("-p", "--param", action="append", default=[], help="key=value passed to every notebook")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params: dict[str, Any] = {"config_path": args.config}
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = _parse_value(value)
    sources = sorted(NOTEBOOK_DIR.glob("*.py"))
    if args.only:
        sources = [s for s in sources if s.stem in args.only]
    config = load_config(args.config)
    for source in sources:
        reason = not_applicable(source.stem, config)
        if reason:
            print(f"skipped {source.stem}: {reason}")
            continue
        run_notebook(source, args.out, params)
    return 0


def not_applicable(notebook: str, config: ProjectConfig) -> str | None:
    """Why a notebook does not apply to a config's data, or None when it does.

    Args:
        notebook: the notebook's name (file stem).
        config: the project config.

    Returns:
        A reason to print, or None.
    """
    if notebook == "content_quality":
        if config.data.items.image_dir is None:
            return "it measures photo-text alignment and this catalogue has no photos"
        if config.content.backend == "standin":
            return "it measures photo-text alignment and the standin encoder keeps photos and text in separate blocks"
    return None


if __name__ == "__main__":
    sys.exit(main())
