"""Batch and live simulation speed, side by side with NeuroKit2's ``ecg_simulate``.

Run: ``python benchmarks/bench_simulate.py [--persons 1000] [--hours 1] [--repeat 3]``

Prints simulated beats per second and peak memory per beat for ``simulate`` (targets: >= 5
million beats/s, <= 200 bytes/beat), on all cores and, side by side, with one worker thread;
the CPU share of ``Engine.advance`` driving 1,000 live
persons at 2 Hz (target: < 10 % of one core), and, as the reference point, how long NeuroKit2
takes to simulate one person-hour (``ecg_simulate``, its defaults: 256 Hz ECG). Absolute times
on shared machines are noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import tracemalloc

from heartsim import Engine, simulate


def simulate_rate(persons: int, hours: float, seed: int, workers: int | None = None) -> float:
    """Beats per second of one ``simulate`` run."""
    gc.collect()
    start = time.perf_counter()
    beats = simulate(n_persons=persons, duration_s=hours * 3600, seed=seed, workers=workers).beats
    return len(beats) / (time.perf_counter() - start)


def bench_memory(persons: int, hours: float) -> tuple[float, int]:
    """Peak traced bytes per beat of one run, and its beats."""
    gc.collect()
    tracemalloc.start()
    result = simulate(n_persons=persons, duration_s=hours * 3600, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / len(result.beats), len(result.beats)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def bench_live(persons: int, tick_hz: float, seconds: float) -> float:
    """CPU seconds spent per wall second of simulated time (1.0 = one full core)."""
    engine = Engine(persons=persons, seed=1, tick_hz=tick_hz, spontaneous_stress_per_h=4)
    engine.start()
    ticks = round(seconds * tick_hz)
    start = time.process_time()
    for _ in range(ticks):
        engine.advance(1.0 / tick_hz)
    return (time.process_time() - start) / seconds


def bench_neurokit_hour() -> float | None:
    """Seconds NeuroKit2 takes for one person-hour of ECG at its defaults (None if absent)."""
    try:
        import neurokit2 as nk
    except ImportError:
        return None
    start = time.perf_counter()
    nk.ecg_simulate(duration=3600, random_state=1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--live-seconds", type=float, default=120.0)
    parser.add_argument("--skip-neurokit", action="store_true")
    args = parser.parse_args()

    simulate(n_persons=2, duration_s=10, seed=0)  # compiles the beat loop (cached on disk)
    cold = simulate_rate(args.persons, args.hours, seed=0)  # the process's first big run
    # All cores and one worker alternate, so both see the same machine and memory state.
    rates, single = [], []
    for seed in range(1, args.repeat + 1):
        rates.append(simulate_rate(args.persons, args.hours, seed))
        single.append(simulate_rate(args.persons, args.hours, seed, workers=1))
    bytes_per_beat, beats = bench_memory(args.persons, args.hours)
    rate, one = statistics.median(rates), statistics.median(single)
    person_hours = args.persons * args.hours
    print(f"simulate: {args.persons} persons x {args.hours:g} h (lab protocol), {beats:,} beats")
    print(f"  speed, all cores ({_cores()}): median {rate / 1e6:.2f} M beats/s (target >= 5)")
    print(f"  speed, one worker:   median {one / 1e6:.2f} M beats/s -> all cores x{rate / one:.2f}")
    print(
        f"  first run of the process: {cold / 1e6:.2f} M beats/s "
        "(pays the page faults of fresh memory)"
    )
    print(f"  peak memory: {bytes_per_beat:.1f} B/beat (target <= 200)")
    live = bench_live(1000, 2.0, args.live_seconds)
    print(
        f"live Engine.advance, 1000 persons at 2 Hz: {100 * live:.2f} % of one core (target < 10)"
    )
    if not args.skip_neurokit:
        nk_hour = bench_neurokit_hour()
        if nk_hour is None:
            print("neurokit2 not installed: reference skipped")
        else:
            ours = (beats / rate) / person_hours
            print(
                f"one person-hour: NeuroKit2 ecg_simulate {nk_hour:.2f} s, "
                f"heartsim {ours * 1e3:.2f} ms -> heartsim x{nk_hour / ours:,.0f} faster "
                "(NeuroKit2 also draws the ECG waveform)"
            )


if __name__ == "__main__":
    main()
