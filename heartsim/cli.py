"""Command line: ``heartsim serve`` (the streaming server) and ``heartsim simulate`` (datasets).

A bad argument ends the command with exit status 2 and one line on stderr that names the flag
as typed, what it accepts and the value given, e.g. ``heartsim simulate: error: --persons:
must be an integer between 1 and 1000000, got '-1'``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from heartsim._version import __version__
from heartsim.datasets import DEFAULT_START_TIME, FORMATS, SimulationResult, simulate
from heartsim.options import add_serve_arguments
from heartsim.times import format_duration

#: ``simulate()`` parameter -> the ``heartsim simulate`` flag that sets it.
_SIMULATE_FLAGS = {
    "n_persons": "--persons",
    "duration_s": "--duration",
    "seed": "--seed",
    "tick_hz": "--tick-hz",
    "start_time": "--start-time",
}
# "--flag -5m": argparse would take "-5m" for an option; "--flag=-5m" keeps it a value.
_NEGATIVE_VALUE = re.compile(r"-[\d.]")


class _Parser(argparse.ArgumentParser):
    """Errors in one line (no usage block): ``PROG: error: --flag: what is wrong``."""

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _cli_error(parser: argparse.ArgumentParser, flag: str, requirement: str, raw: str) -> NoReturn:
    parser.exit(2, f"{parser.prog}: error: {flag}: {requirement}, got {raw!r}\n")


def _number(text: str, kind: type) -> Any:
    """``text`` as a number when it is one, else unchanged (``simulate`` then says what it
    wanted): the error message has one source, ``simulate``'s validation."""
    try:
        return kind(text)
    except ValueError:
        return text


def _check_out_dir(parser: argparse.ArgumentParser, raw: str) -> Path:
    """The ``--out`` folder: existing and writable, or creatable; checked before simulating."""
    path = Path(raw).expanduser()
    requirement = "must be a folder that exists or can be created, and is writable"
    if path.exists() and not path.is_dir():
        _cli_error(parser, "--out", f"{requirement} (this is a file)", raw)
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        _cli_error(parser, "--out", f"{requirement} ({existing} is a file)", raw)
    try:  # a real probe: permission bits do not tell about read-only or special file systems
        with tempfile.TemporaryDirectory(dir=existing, prefix=".heartsim-"):
            pass
    except OSError as err:
        _cli_error(parser, "--out", f"{requirement} ({existing}: {err.strerror})", raw)
    return path


def summary_table(result: SimulationResult) -> pd.DataFrame:
    """Per phase: persons, beats, hours and the median over persons of
    :meth:`SimulationResult.summary`'s heart rate, HRV and systolic pressure, rounded."""
    # LF/HF costs ~2 ms per stretch of a phase: skipped for big runs.
    per_person = result.summary(frequency=len(result.persons) * result.duration_s <= 200 * 3600)
    phases = per_person.groupby(level="phase", observed=True, sort=True)
    table = pd.DataFrame(
        {
            "persons": phases.size(),
            "beats": phases["beats"].sum(),
            "hours": phases["duration_s"].sum() / 3600.0,
        }
    )
    columns = ["mean_hr_bpm", "rmssd_ms", "sdnn_ms", "lf_hf", "systolic_mmhg", "stress_level"]
    columns = [c for c in columns if c in per_person]
    table = table.join(phases[columns].median().astype("float64"))
    digits = {c: 2 if c in ("hours", "lf_hf", "stress_level") else 1 for c in table.columns}
    return table.round(digits)


def _simulate_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    raw = {
        "n_persons": args.persons,
        "duration_s": args.duration,
        "seed": args.seed,
        "tick_hz": args.tick_hz,
        "start_time": args.start_time,
    }
    out = _check_out_dir(parser, args.out)
    try:
        result = simulate(
            n_persons=_number(args.persons, int),
            duration_s=args.duration,
            seed=_number(args.seed, int),
            protocol=args.protocol,
            tick_hz=_number(args.tick_hz, float),
            start_time=_number(args.start_time, float),
            progress=sys.stderr.isatty(),
        )
    except ValueError as err:
        text = str(err)
        for name, flag in _SIMULATE_FLAGS.items():
            if text.startswith(f"{name} "):
                requirement = text[len(name) + 1 :].rsplit(", got ", 1)[0]
                _cli_error(parser, flag, requirement, raw[name])
        raise
    try:
        written = result.save(out, format=args.format)
    except OSError as err:
        parser.exit(1, f"{parser.prog}: error: --out: writing {str(out)!r} failed: {err}\n")
    print(
        f"Simulated {len(result.persons):,} persons for {format_duration(result.duration_s)} "
        f"({result.duration_s:g} s): {len(result.beats):,} beats, protocol {args.protocol!r}, "
        f"seed {result.seed}"
    )
    print("Per phase (median over persons):")
    print(summary_table(result).to_string())
    print("Wrote " + ", ".join(str(p) for p in written))
    return 0


def _serve_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from heartsim.server import run_serve  # the server stack, imported only to serve

    return run_serve(args)


def build_parser() -> argparse.ArgumentParser:
    """The ``heartsim`` argument parser."""
    parser = _Parser(
        prog="heartsim", description="Virtual hearts that respond to stress, live or in batch."
    )
    parser.add_argument("--version", action="version", version=f"heartsim {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser(
        "simulate",
        help="simulate persons and write a labelled dataset (beats, samples)",
        description="Simulate persons and write a labelled dataset: beats, samples, persons, "
        "episodes and meta.json (heartsim.simulate's arguments, to reproduce it).",
    )
    sim.add_argument(
        "--persons", metavar="N", default="10", help="number of persons, 1 to 1000000 (default 10)"
    )
    sim.add_argument(
        "--duration",
        metavar="TIME",
        default="30m",
        help="simulated time, up to 30d: 90 (s), 90s, 30m, 1.5h, 1h30m, 2d12h (default 30m)",
    )
    sim.add_argument(
        "--seed", metavar="N", default="0", help="random seed, an integer >= 0 (default 0)"
    )
    sim.add_argument("--protocol", choices=["lab", "rest"], default="lab", help="default lab")
    sim.add_argument(
        "--tick-hz",
        metavar="HZ",
        default="2",
        help="samples per second and person, 0.1 to 50 (default 2)",
    )
    sim.add_argument(
        "--start-time",
        metavar="TIME",
        default=DEFAULT_START_TIME,
        help="wall-clock time of simulation time 0, ISO 8601 with offset or epoch seconds "
        f"(default {DEFAULT_START_TIME})",
    )
    sim.add_argument(
        "--out",
        metavar="DIR",
        default="heartsim-data",
        help="output folder (default heartsim-data)",
    )
    sim.add_argument("--format", choices=FORMATS, default="parquet", help="default parquet")
    sim.set_defaults(handler=_simulate_command, parser=sim)

    serve = commands.add_parser(
        "serve", help="run the streaming API server and the browser dashboard"
    )
    add_serve_arguments(serve)
    serve.set_defaults(handler=_serve_command, parser=serve)
    return parser


def _values_kept(argv: Sequence[str]) -> list[str]:
    """``--flag -5m`` -> ``--flag=-5m``, so that a negative value reaches our range check
    instead of argparse's "expected one argument" (numbers like ``-1`` pass anyway)."""
    out: list[str] = []
    for arg in argv:
        previous = out[-1] if out else ""
        if (
            _NEGATIVE_VALUE.match(arg)
            and previous.startswith("--")
            and "=" not in previous
            and previous not in ("--verbose", "--version", "--help")
        ):
            out[-1] = f"{previous}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``heartsim`` command."""
    parser = build_parser()
    args = parser.parse_args(_values_kept(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args, args.parser)
    except ValueError as err:
        args.parser.exit(2, f"{args.parser.prog}: error: {err}\n")
    except KeyboardInterrupt:
        args.parser.exit(130, f"{args.parser.prog}: interrupted\n")
    return 1  # not reached: parser.exit raises SystemExit


if __name__ == "__main__":
    sys.exit(main())
