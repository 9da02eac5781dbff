"""Tables and a plot of `make benchmark`'s results (bench/results/public_details.json).

    .venv/bin/python bench/public_report.py        # rewrite public.md, the plot and the README section

Writes ``bench/results/public.md``, ``bench/results/public_quality_vs_fit.png`` and replaces the
README text between ``<!-- bench:public:start -->`` and ``<!-- bench:public:end -->``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from report_files import replace_readme_section, save_figure

START, END = "<!-- bench:public:start -->", "<!-- bench:public:end -->"
ROOT = Path(__file__).resolve().parents[1]
PLOT = "public_quality_vs_fit.png"


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _seconds(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def dataset_table(name: str, data: dict[str, Any]) -> list[str]:
    """The markdown table of one data set: every model, best headline first.

    Args:
        name: the data set's name.
        data: its entry of the details file.

    Returns:
        Markdown lines.
    """
    models: dict[str, dict[str, Any]] = data["models"]
    headline = data["headline"]
    metrics = [m for m in next(iter(models.values())) if "@" in m]
    ordered = [headline, *[m for m in metrics if m != headline]]
    windows = list(data["users"])
    users = sum(data["users"].values())
    lines = [
        f"**{name}**: {len(windows)} test window(s) ({', '.join(windows)}), {users:,} test users in all; headline **{headline}**.",
        "",
        "| model | " + " | ".join(ordered) + " | fit s | recommend s / 1k users | peak RSS MB |",
        "|---|" + "---|" * (len(ordered) + 3),
    ]
    for model, row in sorted(models.items(), key=lambda kv: -kv[1][headline]):
        label = f"**{model}**" if model == "pipeline" else model
        cells = [_num(row.get(m)) for m in ordered]
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {_seconds(row.get('fit_seconds'))} | {_num(row.get('recommend_seconds_per_1k_users'), 2)} | {_seconds(row.get('peak_rss_mb'))} |"
        )
    lines.append("")
    best = data.get("best_peer")
    if best:
        c = data["comparison"][best]
        p = c["pooled"]
        verdict = "above" if p["low"] > 0 else "below" if p["high"] < 0 else "level with (inside the noise)"
        lines.append(
            f"Pipeline vs the best peer ({best}) on {headline}: {p['pipeline']:.4f} vs {p['other']:.4f}, "
            f"difference {p['diff']:+.4f}, 95% paired bootstrap CI [{p['low']:+.4f}, {p['high']:+.4f}]: the pipeline is {verdict}."
        )
        if len(c["windows"]) > 1:
            per = "; ".join(f"{w}: {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" for w, d in c["windows"].items())
            lines.append(f"Per window: {per}.")
        lines.append("")
    tuning = data.get("tuning", {})
    if tuning.get("models"):
        chosen = "; ".join(f"{m}: {json.dumps(t['chosen'], sort_keys=True)}" for m, t in tuning["models"].items())
        lines.append(f"Peers tuned on {tuning['window']} ({tuning['users']:,} users); chosen settings: {chosen}.")
        lines.append("")
    for model, reason in data.get("failures", {}).items():
        lines += [f"Not in the table: {reason}.", ""]
    notes = [f"{m}: {'; '.join(n)}" for m, n in data.get("notes", {}).items() if n]
    if notes:
        lines.append("Notes: " + " | ".join(notes))
        lines.append("")
    return lines


def markdown(details: dict[str, Any]) -> str:
    """All data sets' tables with the machine and the run's time.

    Args:
        details: the details file's content.
    """
    machine = details.get("machine", {})
    total = sum(d.get("seconds", 0.0) for d in details["datasets"].values())
    lines = [
        (f"Measured {details.get('date', '?')} on {machine.get('cpus', '?')} cores ({machine.get('platform', '?')}); "
        f"benchmark time {total / 60:,.0f} min (pipeline stages already trained by an earlier run are reused; fit times are "
        f"those of the run that computed them; with several windows, the median window's), peer environments ready in "
        f"{details.get('env_setup_seconds', 0):.0f} s."),
        "",
    ]
    for name, data in details["datasets"].items():
        lines += dataset_table(name, data)
    lines.append(f"![quality against fit time](bench/results/{PLOT})")
    return "\n".join(lines) + "\n"


def plot(details: dict[str, Any], path: Path) -> None:
    """Headline metric against fit time (log scale), one panel per data set.

    Args:
        details: the details file's content.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = details["datasets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.2), squeeze=False)
    for ax, (name, data) in zip(axes[0], sets.items()):
        headline = data["headline"]
        for model, row in data["models"].items():
            if row.get("fit_seconds") is None:
                continue
            color = "tab:red" if model == "pipeline" else "tab:blue" if model.startswith("peer:") else "tab:gray"
            ax.scatter(max(row["fit_seconds"], 0.1), row[headline], color=color, s=40)
            ax.annotate(model.replace("peer:", ""), (max(row["fit_seconds"], 0.1), row[headline]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("fit seconds (log)")
        ax.set_ylabel(headline)
        ax.set_title(f"{name} (red: pipeline, blue: peers)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def write_report(details: dict[str, Any], results_dir: Path, readme: Path) -> str:
    """Write public.md and the plot, and replace the README's benchmark section.

    Args:
        details: the details file's content.
        results_dir: bench/results.
        readme: the README to update (left alone when it has no markers).

    Returns:
        The markdown.
    """
    text = markdown(details)
    (results_dir / "public.md").write_text(text)
    plot(details, results_dir / PLOT)
    if readme.is_file():
        replace_readme_section(readme, START, END, text)
    return text


def main() -> int:
    """Rebuild the report from the details file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--details", type=Path, default=ROOT / "bench" / "results" / "public_details.json")
    args = parser.parse_args()
    print(write_report(json.loads(args.details.read_text()), args.details.parent, ROOT / "README.md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
