"""What every benchmark report writes: its README section between markers, and its plots atomically."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def replace_readme_section(readme: Path, start: str, end: str, text: str) -> bool:
    """Replace the README text between ``start`` and ``end`` (the markers stay; nothing else is touched).

    Args:
        readme: the README.
        start: the opening marker.
        end: the closing marker.
        text: the new section.

    Returns:
        False (with a line on stderr) when the README or its markers are missing.
    """
    content = readme.read_text() if readme.is_file() else ""
    if start not in content or end not in content:
        print(f"{readme}: no {start} ... {end} markers; README left alone", file=sys.stderr)
        return False
    head, rest = content.split(start, 1)
    readme.write_text(f"{head}{start}\n{text}{end}{rest.split(end, 1)[1]}")
    return True


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Save a matplotlib figure to a temp file, rename it into place, and close it."""
    import matplotlib.pyplot as plt

    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)


def http_share(endpoint: str, in_process: dict[str, float], runs: list[dict[str, Any]]) -> str | None:
    """One sentence: an endpoint's CPU per request in process beside the server's, and the HTTP layer's share.

    Args:
        endpoint: the endpoint.
        in_process: its ``in_process`` entry of a load-bench result (``mean_ms``, ``service_mean_ms``).
        runs: the result's runs (their ``server_cpu_ms``; the median run of this endpoint is used).

    Returns:
        The sentence, or None when no run of the endpoint measured server CPU.
    """
    served = sorted(r["server_cpu_ms"] for r in runs if r["endpoint"] == endpoint and r.get("server_cpu_ms") == r.get("server_cpu_ms"))
    if not served:
        return None
    server = served[(len(served) - 1) // 2]
    return (
        f"`{endpoint}`: {in_process['mean_ms']:.2f} ms CPU per request in process (same requests, no HTTP; "
        f"{in_process['service_mean_ms']:.2f} ms the service call) against {server:.2f} ms server CPU per request "
        f"(median run): the HTTP layer is {1 - in_process['mean_ms'] / server:.0%} of the server's CPU."
    )
