"""Physics-IQ outputs: scores.json, the benchmark's results CSV, and a bar plot (PNG)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from vgpt_jax.evaluation.physics_iq.aggregate import Results
from vgpt_jax.evaluation.physics_iq.layout import VIEWS
from vgpt_jax.evaluation.physics_iq.metrics import VIEW_METRICS

CSV_COLUMNS = ("scenario", *(f"{name}_{view}" for view in VIEWS for name in VIEW_METRICS))
_IOU_METRICS = (
    ("spatiotemporal_iou", "spatiotemporal IoU"),
    ("spatial_iou", "spatial IoU"),
    ("weighted_spatial_iou", "weighted spatial IoU"),
)


def _cell(value: Any) -> str:
    """A CSV cell as the benchmark writes it: Python list repr of floats, or the float's repr."""
    if isinstance(value, list):
        return str([float(v) for v in value])
    return repr(float(value))


def write_results_csv(results: Results, path: Path) -> None:
    """One row per scenario with the benchmark's columns; cells of views not scored stay empty."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for scenario, views in results.items():
            cells = {f"{name}_{view}": _cell(value) for view, m in views.items() for name, value in m.items()}
            writer.writerow([scenario, *(cells.get(column, "") for column in CSV_COLUMNS[1:])])


def write_json(summary: dict[str, Any], path: Path) -> None:
    """`summary` as indented JSON."""
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def plot(summary: dict[str, Any], path: Path) -> None:
    """Bars: the score overall and per category; the three IoUs and the MSE against physical variance."""
    from matplotlib.figure import Figure  # Figure renders with Agg and leaves pyplot's state alone

    fig = Figure(figsize=(14, 4.5), layout="constrained")
    score_ax, iou_ax, mse_ax = fig.subplots(1, 3, width_ratios=(2, 2, 1))

    scored = {
        name: c["physics_iq"] for name, c in summary["categories"].items() if c["physics_iq"] is not None
    }
    labels = ["overall", *scored]
    bars = score_ax.bar(
        labels, [summary["physics_iq"], *scored.values()], color=["#333333"] + ["#7a9cc6"] * len(scored)
    )
    score_ax.bar_label(bars, fmt="%.1f", label_type="center", color="white")
    score_ax.axhline(100, color="darkgrey", linestyle="--")
    score_ax.text(len(labels) - 0.5, 101, "physical variance", ha="right", va="bottom", color="dimgrey")
    score_ax.set(ylim=(0, 110), ylabel="Physics-IQ score (%)", title="Physics-IQ score")
    score_ax.tick_params(axis="x", labelrotation=30)

    width = 0.38
    positions = range(len(_IOU_METRICS))
    model = [summary[key] for key, _ in _IOU_METRICS]
    variance = [summary[f"physical_variance_{key}"] for key, _ in _IOU_METRICS]
    iou_ax.bar_label(
        iou_ax.bar([p - width / 2 for p in positions], model, width, label="generated"), fmt="%.3f"
    )
    iou_ax.bar_label(
        iou_ax.bar([p + width / 2 for p in positions], variance, width, color="darkgrey", label="take 2"),
        fmt="%.3f",
    )
    iou_ax.set_xticks(list(positions), [label for _, label in _IOU_METRICS])
    iou_ax.set(ylim=(0, 1.1), title="IoU with take 1\n(higher is better)")
    iou_ax.legend(fontsize="small", loc="upper right")

    mse_bars = mse_ax.bar(
        ["generated", "take 2"], [summary["mse"], summary["physical_variance_mse"]], color=["C0", "darkgrey"]
    )
    mse_ax.bar_label(mse_bars, fmt="%.4f")
    mse_ax.set(title="MSE with take 1\n(lower is better)")

    scope = "all" if summary["complete"] else "PARTIAL:"
    count = f"{summary['num_videos']} of {summary['num_test_cases']}"
    fig.suptitle(f"Physics-IQ at {summary['fps']} fps, {scope} {count} test cases")
    fig.savefig(path, dpi=120)
