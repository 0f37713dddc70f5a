"""Command line: ``heartsim serve`` (the streaming server) and ``heartsim simulate`` (datasets)."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

import pandas as pd

from heartsim.datasets import FORMATS, SimulationResult, simulate
from heartsim.options import add_serve_arguments

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$")
_UNIT_S = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"30m"``, ``"1.5h"``, ``"2d"`` -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"duration must look like 90, 90s, 30m, 1.5h or 2d, got {text!r}"
        )
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def summary_table(result: SimulationResult) -> pd.DataFrame:
    """Per label: beats, hours, mean heart rate, median per-person RMSSD, mean systolic."""
    from heartsim.hrv import hrv_time  # SciPy: imported when a summary is printed

    beats = result.beats
    rows = []
    for label, group in beats.groupby("label", observed=True):
        rmssd = [
            hrv_time(g["rr_ms"].to_numpy())["rmssd_ms"]
            for _, g in group.groupby("person_id", observed=True)
            if len(g) >= 3
        ]
        rows.append(
            {
                "label": label,
                "beats": len(group),
                "hours": group["rr_ms"].sum() / 3.6e6,
                "mean_hr_bpm": group["hr_bpm"].mean(),
                "median_rmssd_ms": pd.Series(rmssd).median(),
                "mean_systolic_mmhg": group["systolic_mmhg"].mean(),
                "mean_stress_level": group["stress_level"].mean(),
            }
        )
    return pd.DataFrame(rows).set_index("label").round(2)


def _simulate_command(args: argparse.Namespace) -> int:
    result = simulate(
        n_persons=args.persons,
        duration_s=args.duration,
        seed=args.seed,
        protocol=args.protocol,
        tick_hz=args.tick_hz,
        progress=sys.stderr.isatty() and args.duration * args.persons >= 10 * 3600,
    )
    written = result.save(args.out, format=args.format)
    print(
        f"Simulated {result.persons.shape[0]} persons for {args.duration:g} s "
        f"({len(result.beats):,} beats, protocol {args.protocol!r}, seed {args.seed})"
    )
    print(summary_table(result).to_string())
    print("Wrote " + ", ".join(str(p) for p in written))
    return 0


def _serve_command(args: argparse.Namespace) -> int:
    from heartsim.server import run_serve  # the server stack, imported only to serve

    return run_serve(args)


def build_parser() -> argparse.ArgumentParser:
    """The ``heartsim`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="heartsim", description="Virtual hearts that respond to stress, live or in batch."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser(
        "simulate", help="simulate persons and write a labelled dataset (beats, samples)"
    )
    sim.add_argument("--persons", type=int, default=10, help="number of persons (default 10)")
    sim.add_argument(
        "--duration", type=parse_duration, default=1800.0, help="e.g. 90s, 30m, 2h (default 30m)"
    )
    sim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sim.add_argument("--protocol", choices=["lab", "rest"], default="lab", help="default lab")
    sim.add_argument("--tick-hz", type=float, default=2.0, help="samples per second (default 2)")
    sim.add_argument("--out", default="heartsim-data", help="output folder (default heartsim-data)")
    sim.add_argument("--format", choices=FORMATS, default="parquet", help="default parquet")
    sim.set_defaults(handler=_simulate_command)

    serve = commands.add_parser(
        "serve", help="run the streaming API server and the browser dashboard"
    )
    add_serve_arguments(serve)
    serve.set_defaults(handler=_serve_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``heartsim`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except ValueError as err:
        parser.exit(2, f"heartsim: error: {err}\n")


if __name__ == "__main__":
    sys.exit(main())
