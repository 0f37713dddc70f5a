"""``GET /metrics``: Prometheus text from a per-app registry.

The collector reads the hub's and runner's counters at scrape time, so the hot path (ticks and
fan-out) never touches a metric object.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from heartsim.api.context import AppContext
from heartsim.api.ws import REFUSAL_CAUSES, clients_dropped_by_cause
from heartsim.engine import SimulationState


class HeartsimCollector(Collector):
    """Exposes one app's :class:`~heartsim.api.context.AppContext` as Prometheus metrics."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        """Yield the current values (called on every scrape)."""
        ctx = self.ctx
        hub = ctx.hub.stats()
        ticks = ctx.runner.stats()
        model = ctx.runner.model_stats()
        counters = [
            ("heartsim_messages_published", "Messages produced (one per tick and person)",
             hub.messages_published),
            ("heartsim_messages_sent", "Messages delivered to subscribers", hub.messages_sent),
            ("heartsim_messages_dropped", "Messages a slow subscriber could not take",
             hub.messages_dropped),
            ("heartsim_ticks", "Runner ticks", ticks.ticks),
            ("heartsim_ticks_skipped", "Ticks skipped because the loop was late",
             ticks.ticks_skipped),
            ("heartsim_tick_errors", "Ticks that failed", ticks.tick_errors),
            ("heartsim_rate_limited", "Control requests refused with 429",
             ctx.limiter.rejected if ctx.limiter is not None else 0),
            ("heartsim_model_errors", "Prediction failures (their messages carried nulls)",
             model.errors),
            ("heartsim_model_inference_seconds", "Time spent predicting in ticks",
             model.inference_s),
            ("heartsim_history_evicted", "Messages dropped from the history by its budget",
             hub.history_evicted),
        ]  # fmt: skip
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)
        yield CounterMetricFamily(
            "heartsim_hosts_refused",
            "Requests refused because their Host header is not a name of this server",
            value=ctx.hosts_refused,
        )
        labelled = [
            ("heartsim_clients_dropped",
             "Clients the server disconnected, by cause (slow 1008, keepalive 1011, too_big 1009)",
             clients_dropped_by_cause(ctx)),
            ("heartsim_websocket_refused", "WebSocket handshakes refused, by cause",
             {cause: ctx.ws_refused[cause] for cause in REFUSAL_CAUSES}),
        ]  # fmt: skip
        for name, doc, values in labelled:
            family = CounterMetricFamily(name, doc, labels=["cause"])
            for cause, value in values.items():
                family.add_metric([cause], value)
            yield family
        refused = CounterMetricFamily(
            "heartsim_requests_refused",
            "Requests refused by the bounds: body over max_body_bytes (413), POST /predict "
            "over its rate (429) or with every scoring slot busy (503)",
            labels=["reason"],
        )
        refused.add_metric(["body_too_large"], ctx.refused.body_too_large)
        refused.add_metric(["predict_rate_limited"], ctx.refused.predict_rate_limited)
        refused.add_metric(["predict_busy"], ctx.refused.predict_busy)
        yield refused
        gauges = [
            ("heartsim_websocket_clients", "Connected WebSocket clients", ctx.websocket_clients),
            ("heartsim_subscribers", "Hub subscribers", hub.subscribers),
            ("heartsim_persons", "Simulated persons", len(ctx.engine.person_ids)),
            ("heartsim_tick_hz", "Ticks per second", ctx.engine.tick_hz),
            ("heartsim_uptime_seconds", "Seconds since start", ctx.uptime_s),
            ("heartsim_simulation_running", "1 while the simulation runs",
             float(ctx.engine.state is SimulationState.RUNNING)),
            ("heartsim_model_attached", "1 while a model fills the predictions",
             float(model.attached)),
            ("heartsim_history_bytes", "Memory of the message history, bytes",
             hub.history_bytes),
            ("heartsim_history_window_seconds", "Simulation time the history spans",
             hub.history_window_s),
        ]  # fmt: skip
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)
        lag = GaugeMetricFamily(
            "heartsim_tick_lag_seconds",
            "Lateness of recent ticks after their schedule, by quantile",
            labels=["quantile"],
        )
        lag.add_metric(["0.5"], ticks.lag_ms_p50 / 1e3)
        lag.add_metric(["0.99"], ticks.lag_ms_p99 / 1e3)
        lag.add_metric(["1"], ticks.lag_ms_max / 1e3)
        yield lag


def build_registry(ctx: AppContext) -> CollectorRegistry:
    """A fresh registry (not the process-global one) holding this app's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HeartsimCollector(ctx))
    return registry
