"""Live inference cost: what an attached stress model adds to every tick, per person.

Run: ``python benchmarks/bench_inference.py [--persons 1 10 100] [--seconds 300] [--model FILE]``

For each population size N, two identical simulations (same seed) are ticked side by side, one
tick each in turn, through the server's own :class:`heartsim.runner.Runner`: one with the
default model attached (a :class:`heartsim.ml.LivePredictor` filling every message's
``prediction``, ``confidence`` and ``stress_score`` before the hub encodes it), one without. Both
first warm up for the model's whole context (60 s window + 600 s baseline history, untimed), then
``--seconds`` of stream are timed. Printed per person per tick (µs): the tick without a model,
the tick with it, their difference, and the predictor's own time as the runner measures it
(``model_inference_s``, what ``/metrics`` exports). Target: inference < 1 ms per person per
tick. Also printed: the slowest tick with the model (the 5 s grid points cost the most; the
runner spreads the windows due there over the ticks of one step, at least 32 per tick).

The default model is :class:`heartsim.ml.StressClassifier` with its defaults (histogram
gradient boosting on the three person-context features), trained here on a small simulated
population unless ``--model`` names a saved one. Absolute times on shared machines are noisy:
read the ratios.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from dataclasses import dataclass

from heartsim import Engine
from heartsim.hub import Hub
from heartsim.ml import LivePredictor, StressClassifier, make_dataset
from heartsim.runner import Runner

TARGET_US = 1000.0  # per person per tick


@dataclass
class Result:
    """Timings of one population size; costs in µs per person per tick, ``max_tick_ms`` in ms."""

    persons: int
    ticks: int
    base_us: float
    with_model_us: float
    inference_us: float
    measured_us: float
    max_tick_ms: float
    predicted_share: float

    @property
    def added_us(self) -> float:
        """Tick cost the model adds (with minus without), µs per person per tick."""
        return self.with_model_us - self.base_us


def default_model(seed: int = 0) -> StressClassifier:
    """The default StressClassifier trained on 12 simulated persons x 30 min (a few seconds)."""
    data = make_dataset(n_persons=12, seed=seed, duration_s=1800)
    return StressClassifier().fit(data, data["stressed"])


def _runner(persons: int, tick_hz: float) -> Runner:
    engine = Engine(persons=persons, seed=1, tick_hz=tick_hz, spontaneous_stress_per_h=4.0)
    engine.start()
    return Runner(engine, Hub(), clock="virtual")


def bench(
    model: StressClassifier, persons: int, tick_hz: float, warmup_s: float, seconds: float
) -> Result:
    """Tick a runner with the model and one without, alternately; time ``seconds`` of stream."""
    with_model, without = _runner(persons, tick_hz), _runner(persons, tick_hz)
    predictor = LivePredictor(model)
    with_model.attach_predictor(predictor, name="default")
    # As `heartsim serve` does before serving: what exists at startup is frozen, so full
    # garbage collections (which stall a tick) walk only what the stream creates.
    gc.collect()
    gc.freeze()
    for _ in range(round(warmup_s * tick_hz)):
        with_model.tick()
        without.tick()
    gc.collect()
    inference_before = with_model.model_inference_s
    ticks = round(seconds * tick_hz)
    timed_with: list[float] = []
    timed_without: list[float] = []
    predicted = 0
    clock = time.perf_counter
    for k in range(ticks):
        # Alternate which runs first, so neither always inherits the other's cache state.
        pair = ((with_model, timed_with), (without, timed_without))
        for runner, out in pair if k % 2 == 0 else pair[::-1]:
            start = clock()
            samples = runner.tick()
            out.append(clock() - start)
            if runner is with_model:
                predicted += sum(s["prediction"] is not None for s in samples)
    if with_model.model_errors:
        raise RuntimeError(f"the model failed: {with_model.model_last_error}")
    per = 1e6 / (ticks * persons)
    total_with, total_without = sum(timed_with), sum(timed_without)
    measured = with_model.model_inference_s - inference_before
    return Result(
        persons=persons,
        ticks=ticks,
        base_us=total_without * per,
        with_model_us=total_with * per,
        inference_us=(total_with - total_without) * per,
        measured_us=measured * per,
        max_tick_ms=max(timed_with) * 1e3,
        predicted_share=predicted / (ticks * persons),
    )


def main() -> None:
    """Parse the options, run every population size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--tick-hz", type=float, default=2.0, help="ticks per second (default 2)")
    parser.add_argument(
        "--warmup-s", type=float, default=665.0, help="untimed stream first, s (default 665)"
    )
    parser.add_argument("--seconds", type=float, default=300.0, help="timed stream, s")
    parser.add_argument("--model", default=None, help="a StressClassifier.save file")
    args = parser.parse_args()

    start = time.perf_counter()
    model = StressClassifier.load(args.model) if args.model else default_model()
    source = args.model or "default StressClassifier, trained on 12 persons x 30 min"
    print(f"model: {source} ({time.perf_counter() - start:.1f} s); features {model.feature_names}")
    print(
        f"{args.tick_hz:g} Hz ticks, {args.warmup_s:g} s warm-up, {args.seconds:g} s timed; "
        "costs in µs per person per tick (target: inference < 1000 µs)"
    )
    header = (
        f"{'persons':>7} {'no model':>9} {'with model':>10} {'inference':>9} "
        f"{'(runner)':>9} {'max tick':>9} {'predicted':>9}  target"
    )
    print(header)
    results = []
    for persons in args.persons:
        r = bench(model, persons, args.tick_hz, args.warmup_s, args.seconds)
        results.append(r)
        verdict = "ok" if r.inference_us < TARGET_US else "MISSED"
        print(
            f"{r.persons:>7} {r.base_us:>9.1f} {r.with_model_us:>10.1f} {r.inference_us:>9.1f} "
            f"{r.measured_us:>9.1f} {r.max_tick_ms:>7.2f}ms {r.predicted_share:>9.0%}  {verdict}"
        )
    worst = max(results, key=lambda r: r.inference_us)
    ratio = statistics.median(r.with_model_us / r.base_us for r in results)
    print(
        f"worst inference: {worst.inference_us:.1f} µs per person per tick ({worst.persons} "
        f"persons); a tick with the model costs {ratio:.1f}x one without (median)"
    )


if __name__ == "__main__":
    main()
