"""The Physics-IQ score from per-view metrics (spec §7), with the benchmark's rounding and order.

`results` maps scenario -> view -> VIEW_METRICS, scenarios in the benchmark's row order (by take-1
ID). A scenario may lack views (a subset was scored): it then contributes the views it has, which
equals the benchmark's aggregation whenever all three are present.

Rounding follows the benchmark's code exactly, because a tie broken the other way moves a physical
variance by 1e-4: per-frame values use Python's round() (correct decimal rounding), the physical
variances and the final score NumPy's (x·10^d, round half to even, /10^d). The per-frame physical
variances are summed left to right, as pandas 2 (the 2025 leaderboard's) does for the exploded
lists; pandas 3 sums pairwise, which differs in the last bit and so only on an exact rounding tie.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vgpt_jax.evaluation.physics_iq.layout import VIEWS

Results = Mapping[str, Mapping[str, Mapping[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Scores:
    """Model metrics (generated vs take 1), physical variances (take 1 vs take 2) and the score."""

    physics_iq: float  # raw clipped to [0, 100] and rounded to 2 decimals
    physics_iq_raw: float  # unclipped, unrounded
    spatiotemporal_iou: float
    spatial_iou: float
    weighted_spatial_iou: float
    mse: float  # BGR in [0, 1], squared
    physical_variance_spatiotemporal_iou: float
    physical_variance_spatial_iou: float
    physical_variance_weighted_spatial_iou: float
    physical_variance_mse: float


def _mean(values: Sequence[float]) -> float:
    """NumPy's mean (pairwise summation), as the benchmark's np.mean and pandas' float means."""
    return float(np.mean(np.asarray(values, dtype=np.float64)))


def _numpy_round(value: float, decimals: int) -> float:
    """round() of a NumPy float: rint(value·10^decimals)/10^decimals, not Python's decimal rounding."""
    return float(np.round(np.float64(value), decimals))


def _rounded(values: Sequence[float]) -> list[float]:
    """Per-frame values as the benchmark parses them from its CSV: Python round() to 4 decimals."""
    return [round(float(v), 4) for v in values]


def _per_scenario_mean(results: Results, name: str) -> float:
    """Mean over scenarios of the mean of the rounded per-frame values of all of its views."""
    rows = [[_rounded(row[view][name]) for view in VIEWS if view in row] for row in results.values()]
    return _mean([_mean(np.concatenate(row)) for row in rows])


def _per_view_mean(results: Results, name: str) -> float:
    """Mean over views of the mean over scenarios of a per-view scalar."""
    return _mean([_mean(column) for column in _columns(results, name)])


def _physical_variance_of_lists(results: Results, name: str) -> float:
    """Mean over views of the mean of the rounded per-frame values of all scenarios, summed in order."""
    means = []
    for column in _columns(results, name):
        values = [v for per_frame in column for v in _rounded(per_frame)]
        means.append(functools.reduce(operator.add, values) / len(values))
    return _mean(means)


def _columns(results: Results, name: str) -> list[list[Any]]:
    """For each view that some scenario has, in VIEWS order: that view's `name` over scenarios."""
    columns = [[row[view][name] for row in results.values() if view in row] for view in VIEWS]
    return [column for column in columns if column]


def physics_iq(results: Results) -> Scores:
    """The Physics-IQ score of `results`; ValueError if a physical variance rounds to 0 (undefined)."""
    if not results:
        raise ValueError("no scored test cases")
    st = _per_scenario_mean(results, "spatiotemporal_iou_v1")
    mse = _per_scenario_mean(results, "v1_mse")
    sp = _per_view_mean(results, "spatial_iou_v1")
    ws = _per_view_mean(results, "weighted_spatial_iou_v1")
    pv_mse = _numpy_round(_physical_variance_of_lists(results, "variance_mse"), 4)
    pv_st = _numpy_round(_physical_variance_of_lists(results, "variance_spatiotemporal_iou"), 4)
    pv_sp = _numpy_round(_per_view_mean(results, "variance_spatial"), 5)
    pv_ws = _numpy_round(_per_view_mean(results, "variance_weighted_spatial"), 4)
    for name, pv in (("spatiotemporal IoU", pv_st), ("spatial IoU", pv_sp), ("weighted spatial IoU", pv_ws)):
        if pv == 0:
            raise ValueError(
                f"the physical variance of the {name} is 0 over the {len(results)} scored scenarios "
                f"(take 1 and take 2 never move alike), so the score is undefined: score more test cases"
            )
    raw = ((st / pv_st + sp / pv_sp + ws / pv_ws) / 3 - (mse - pv_mse)) * 100
    return Scores(
        physics_iq=_numpy_round(min(max(raw, 0.0), 100.0), 2),
        physics_iq_raw=raw,
        spatiotemporal_iou=st,
        spatial_iou=sp,
        weighted_spatial_iou=ws,
        mse=mse,
        physical_variance_spatiotemporal_iou=pv_st,
        physical_variance_spatial_iou=pv_sp,
        physical_variance_weighted_spatial_iou=pv_ws,
        physical_variance_mse=pv_mse,
    )
