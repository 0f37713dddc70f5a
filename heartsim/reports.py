"""Per-person phase summaries and figures of a :class:`heartsim.SimulationResult`.

Behind :meth:`SimulationResult.summary <heartsim.SimulationResult.summary>` and
:meth:`SimulationResult.plot <heartsim.SimulationResult.plot>`; imported on first use (SciPy,
matplotlib).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, cast

import numpy as np
import pandas as pd

from heartsim.datasets import SimulationResult, _samples_table
from heartsim.hrv import MIN_FREQ_DURATION_S, hrv_frequency
from heartsim.physiology.stress import LABELS
from heartsim.times import format_duration, iso_utc

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Label shading of plot(), as heartsim.widgets.live_plot's.
_PHASE_COLORS: Final[dict[str, tuple[str, float]]] = {
    "stress": ("#d62728", 0.18),
    "recovery": ("#ff7f0e", 0.08),
}


def phase_summary(result: SimulationResult, *, frequency: bool = True) -> pd.DataFrame:
    """See :meth:`heartsim.SimulationResult.summary`."""

    beats = result.beats
    rr = beats["rr_ms"].to_numpy(np.float64)
    person = beats["person_id"].cat.codes.to_numpy()
    label = beats["label"].cat.codes.to_numpy()
    new_stretch = np.ones(len(rr), bool)
    new_stretch[1:] = (person[1:] != person[:-1]) | (label[1:] != label[:-1])
    diff2 = np.full(len(rr), np.nan)
    diff2[1:] = np.diff(rr) ** 2
    diff2[new_stretch] = np.nan
    frame = pd.DataFrame(
        {
            "person_id": beats["person_id"],
            "phase": beats["label"],
            "rr": rr,
            "diff2": diff2,
            "systolic_mmhg": beats["systolic_mmhg"].to_numpy(np.float64),
            "diastolic_mmhg": beats["diastolic_mmhg"].to_numpy(np.float64),
            "breathing_rate_bpm": beats["breathing_rate_bpm"].to_numpy(np.float64),
            "stress_level": beats["stress_level"].to_numpy(np.float64),
        }
    )
    groups = frame.groupby(["person_id", "phase"], observed=True, sort=True)
    rr_groups = groups["rr"]
    table = pd.DataFrame(
        {
            "beats": rr_groups.size(),
            "duration_s": rr_groups.sum() / 1000.0,
            "mean_hr_bpm": 60000.0 / rr_groups.mean(),
            "sdnn_ms": rr_groups.std(ddof=1),
            "rmssd_ms": np.sqrt(groups["diff2"].mean()),
        }
    )
    if frequency:
        starts = np.flatnonzero(new_stretch)
        ends = np.append(starts[1:], len(rr))
        lengths_s = np.add.reduceat(rr, starts) / 1000.0 if len(rr) else np.empty(0)
        power: dict[tuple[int, int], np.ndarray] = {}
        for a, b, length in zip(starts, ends, lengths_s, strict=True):
            if length >= MIN_FREQ_DURATION_S:
                bands = hrv_frequency(rr[a:b])
                key = (person[a], label[a])
                row = np.array([bands["lf_ms2"] * length, bands["hf_ms2"] * length, length])
                power[key] = power.get(key, 0.0) + row
        persons = beats["person_id"].cat.categories
        lf = pd.Series(np.nan, index=table.index)
        hf = pd.Series(np.nan, index=table.index)
        for (p, lab), (lf_sum, hf_sum, total) in power.items():
            lf.loc[(persons[p], LABELS[lab])] = lf_sum / total
            hf.loc[(persons[p], LABELS[lab])] = hf_sum / total
        table["lf_ms2"], table["hf_ms2"], table["lf_hf"] = lf, hf, lf / hf
    means = groups[["systolic_mmhg", "diastolic_mmhg", "breathing_rate_bpm", "stress_level"]]
    return table.join(means.mean())


def plot_result(
    result: SimulationResult, person: str | None = None, axes: Sequence[Axes] | None = None
) -> Figure:
    """See :meth:`heartsim.SimulationResult.plot`."""
    from matplotlib.patches import Patch

    ids = list(result.beats["person_id"].cat.categories)
    person = ids[0] if person is None else person
    if person not in ids:
        raise ValueError(f"person must be one of the run's persons {ids[:5]}..., got {person!r}")
    if "samples" in result.__dict__ or result._samples is not None:
        rows = result.samples[result.samples["person_id"] == person]
    else:  # no need to build every person's samples (and rr lists) for one plot
        rows = _samples_table(result, [person], rr_lists=False)
    if axes is None:
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(4, 1, sharex=True, figsize=(9.0, 8.0), layout="constrained")
        # Closed for pyplot: a notebook shows the figure once, as the value returned, not a
        # second time when pyplot flushes its open figures at the end of the cell.
        plt.close(figure)
    else:
        if len(axes) != 4:
            raise ValueError(f"axes must be 4 matplotlib axes, got {len(axes)}")
        figure = cast("Figure", axes[0].figure)
    scale, unit = (1.0, "s") if result.duration_s <= 1200 else (60.0, "min")
    if result.duration_s > 48 * 3600:
        scale, unit = 3600.0, "h"
    step = max(1, math.ceil(len(rows) / 4000))  # no more points than pixels
    t = rows["t_s"].to_numpy()[::step] / scale
    ax_hr, ax_rmssd, ax_bp, ax_breath = axes
    ax_hr.plot(t, rows["hr_bpm"].to_numpy()[::step], color="#1f77b4", label="heart rate")
    ax_rmssd.plot(t, rows["rmssd_ms"].to_numpy()[::step], color="#2ca02c", label="RMSSD")
    ax_bp.plot(t, rows["systolic_mmhg"].to_numpy()[::step], color="#9467bd", label="systolic")
    ax_bp.plot(t, rows["diastolic_mmhg"].to_numpy()[::step], color="#8c564b", label="diastolic")
    ax_breath.plot(t, rows["breathing_rate_bpm"].to_numpy()[::step], color="#17becf")
    ax_hr.set_ylabel("heart rate (bpm)")
    ax_rmssd.set_ylabel("RMSSD (ms)")
    ax_bp.set_ylabel("blood pressure (mmHg)")
    ax_breath.set_ylabel("breathing (breaths/min)")
    ax_breath.set_xlabel(f"simulation time ({unit})")
    all_t = rows["t_s"].to_numpy() / scale
    label = rows["label"].astype(str).to_numpy()
    for phase, (color, alpha) in _PHASE_COLORS.items():
        for start, end in _runs(all_t, label == phase, 1.0 / result.tick_hz / scale):
            for ax in axes:
                ax.axvspan(start, end, color=color, alpha=alpha, linewidth=0)
    ax_bp.legend(loc="upper left", fontsize="small")
    ax_hr.legend(
        handles=[
            Patch(color=color, alpha=alpha * 2, label=phase)
            for phase, (color, alpha) in _PHASE_COLORS.items()
        ],
        loc="upper left",
        fontsize="small",
    )
    ax_hr.set_title(
        f"{person}: {format_duration(result.duration_s)} from {iso_utc(result.start_time_s)}",
        fontsize="medium",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    ax_breath.set_xlim(0.0, result.duration_s / scale)
    return figure


def _runs(t: np.ndarray, mask: np.ndarray, tick_s: float) -> list[tuple[float, float]]:
    """``(start, end)`` of each run of ``mask`` (a tick's value holds since the tick before)."""
    edges = np.diff(np.concatenate([[False], mask, [False]]).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [(float(t[a] - tick_s), float(t[b])) for a, b in zip(starts, ends, strict=True)]
