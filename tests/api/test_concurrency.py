"""Concurrent control traffic against a real server: the engine has one owner (issue 9).

Eight client threads hammer every control route (persons add / patch / delete, stress,
baseline, config, start / stop / pause / resume) and the read routes for ``HAMMER_S`` seconds
while twenty WebSocket clients read the stream. Afterwards:

- no tick failed, no request got a 5xx answer or a reset connection, nothing was logged as an
  error;
- every WebSocket client saw contiguous ``seq`` numbers (clients of a removed person were closed
  with 1000);
- the engine's state equals replaying the accepted commands in order.

The replay oracle needs an order, and only each client's own order is known. So the workload
is built for commands of different clients to commute on the state compared: every client
owns the persons it creates (only it patches or removes them) and one parameter at most (the
baseline of p0, p1 or p2, the tick rate, the spontaneous stress rate, the doomed persons).
Start / stop / pause / resume are sent by every client, so their global order is unknown; but
each answer says which transition it made (``prev -> new``: "already running", "resumed", ...),
and a serial execution of all of them is a walk through the state graph using each transition
once, starting at the initial state. In such a walk every state is left as often as it is
entered, except the first (left once more) and the last (entered once more): the degree counts
alone give the final state, and fail when no serial order could explain the answers.

``HEARTSIM_HAMMER_S`` shortens the run (the dev-mode variant below runs 8 s).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import importlib
import inspect
import json
import logging
import os
import pkgutil
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

import heartsim.api.routes as routes_package
from heartsim.api.context import get_ctx

from .conftest import ServerFactory

HAMMER_S = float(os.environ.get("HEARTSIM_HAMMER_S", "20"))
CLIENTS = 8
READERS = 20
FIXED = ("p0", "p1", "p2")
DOOMED = tuple(f"d{k}" for k in range(6))
#: Parameters owned by one client each (the index of the client).
BASELINE_OWNER = {"p0": 0, "p1": 1, "p2": 4}
TICK_HZ_OWNER, SPONTANEOUS_OWNER, DOOM_OWNER = 2, 3, 5
TICK_HZ_CHOICES = (10.0, 20.0, 40.0)
SPONTANEOUS_CHOICES = (0.0, 2.0, 30.0)
#: Profile fields the clients patch (any value in these ranges is valid alone).
PATCHABLE = {
    "resting_hr_bpm": (45.0, 110.0),
    "hr_reactivity_bpm": (5.0, 50.0),
    "rsa_amplitude_ms": (5.0, 100.0),
    "breathing_rate_bpm": (8.0, 25.0),
}

R, P, S = "running", "paused", "stopped"
#: (route, answer message) -> (state before, state after).
TRANSITIONS = {
    ("start", "Simulation already running"): (R, R),
    ("start", "Simulation resumed"): (P, R),
    ("start", "Simulation started"): (S, R),
    ("stop", "Simulation already stopped"): (S, S),
    ("stop", "Simulation stopped"): (R, S),
    ("stop", "Simulation stopped (it was paused)"): (P, S),
    ("pause", "Simulation paused"): (R, P),
    ("resume", "Simulation resumed"): (P, R),
    **{("pause", f"Simulation not paused: it is {s}"): (s, s) for s in (S, P)},
    **{("resume", f"Simulation not resumed: it is {s}"): (s, s) for s in (S, R)},
}


@dataclass
class ClientLog:
    """What one hammering client sent and what it learned."""

    index: int
    requests: int = 0
    problems: list[str] = field(default_factory=list)  # 5xx, resets, unexpected answers
    server_errors: int = 0
    resets: int = 0
    transitions: list[tuple[str, str]] = field(default_factory=list)
    persons: dict[str, dict[str, Any]] = field(default_factory=dict)  # own, expected profiles
    baseline: dict[str, float] = field(default_factory=dict)  # owned baselines, last accepted
    config: dict[str, float] = field(default_factory=dict)  # owned parameters, last accepted
    removed: list[str] = field(default_factory=list)  # doomed persons removed
    counts: collections.Counter[str] = field(default_factory=collections.Counter)


def _profile(person: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in person.items() if k != "is_default"}


class Hammer:
    """One client thread's loop of random control and read requests."""

    def __init__(self, index: int, url: str, deadline: float, seed: int) -> None:
        self.log = ClientLog(index)
        self.url = url
        self.deadline = deadline
        self.rng = random.Random(seed)
        self.made = 0
        self.next_doom = time.monotonic() + 1.0
        self.doomed = list(DOOMED) if index == DOOM_OWNER else []

    def run(self) -> ClientLog:
        with httpx.Client(base_url=self.url, timeout=15.0) as http:
            while time.monotonic() < self.deadline:
                action = self.rng.choice(
                    ["add", "patch", "patch", "bad_patch", "delete", "stress", "state", "state",
                     "state", "own", "own", "read", "read", "read"]
                )  # fmt: skip
                try:
                    getattr(self, f"_{action}")(http)
                except httpx.TransportError as exc:
                    self.log.resets += 1
                    self.log.problems.append(f"{action}: {type(exc).__name__}: {exc}")
        return self.log

    # ----- helpers --------------------------------------------------------------------------
    def _send(
        self, http: httpx.Client, method: str, path: str, expect: tuple[int, ...], **kw: Any
    ) -> httpx.Response:
        response = http.request(method, path, **kw)
        self.log.requests += 1
        self.log.counts[f"{method} {path.split('?')[0]} {response.status_code}"] += 1
        if response.status_code >= 500 and not (path == "/health" and response.status_code == 503):
            self.log.server_errors += 1
        if response.status_code not in expect:
            self.log.problems.append(
                f"{method} {path} {kw.get('params') or ''} -> {response.status_code} "
                f"{response.text[:300]}"
            )
        return response

    def _own_person(self) -> str | None:
        return self.rng.choice(sorted(self.log.persons)) if self.log.persons else None

    # ----- actions --------------------------------------------------------------------------
    def _add(self, http: httpx.Client) -> None:
        if len(self.log.persons) >= 3:
            return self._delete(http)
        body: dict[str, Any] | None = None
        if self.rng.random() < 0.5:  # an explicit profile; otherwise a drawn one
            self.made += 1
            body = {"person_id": f"c{self.log.index}-{self.made}"}
            for name, (low, high) in PATCHABLE.items():
                if self.rng.random() < 0.5:
                    body[name] = round(self.rng.uniform(low, high), 1)
        response = self._send(http, "POST", "/persons", (201,), json=body)
        if response.status_code == 201:
            created = response.json()
            self.log.persons[created["person_id"]] = _profile(created["person"])
            for name, value in (body or {}).items():
                if created["person"][name] != value:
                    self.log.problems.append(f"created {created['person_id']}: {name} differs")

    def _patch(self, http: httpx.Client) -> None:
        pid = self._own_person()
        if pid is None:
            return self._add(http)
        name = self.rng.choice(sorted(PATCHABLE))
        value = round(self.rng.uniform(*PATCHABLE[name]), 1)
        response = self._send(http, "PATCH", f"/persons/{pid}", (200,), json={name: value})
        if response.status_code == 200:
            expected = self.log.persons[pid]
            expected[name] = value
            if _profile(response.json()) != expected:
                self.log.problems.append(f"PATCH {pid}: {response.json()} != {expected}")

    def _bad_patch(self, http: httpx.Client) -> None:
        pid = self._own_person()
        if pid is None:
            return self._add(http)
        self._send(http, "PATCH", f"/persons/{pid}", (422,), json={"resting_hr_bpm": 500})

    def _delete(self, http: httpx.Client) -> None:
        pid = self._own_person()
        if pid is None:
            return self._add(http)
        response = self._send(http, "DELETE", f"/persons/{pid}", (200,))
        if response.status_code == 200:
            del self.log.persons[pid]

    def _stress(self, http: httpx.Client) -> None:
        person = self._own_person() or self.rng.choice(FIXED)
        params = {
            "person": person,
            "stress_level": round(self.rng.uniform(0.0, 1.0), 2),
            "duration_s": round(self.rng.uniform(1.0, 120.0), 1),
        }
        # 400 while the simulation is not running (other clients stop and pause it).
        self._send(http, "POST", "/simulation/trigger-stress", (200, 400), params=params)

    def _state(self, http: httpx.Client) -> None:
        route = self.rng.choice(["start", "start", "stop", "pause", "resume"])
        response = self._send(http, "POST", f"/simulation/{route}", (200,))
        if response.status_code != 200:
            return
        body = response.json()
        transition = TRANSITIONS.get((route, body["message"]))
        if transition is None or transition[1] != body["state"]:
            self.log.problems.append(f"{route}: unexpected answer {body}")
        else:
            self.log.transitions.append(transition)

    def _own(self, http: httpx.Client) -> None:
        index = self.log.index
        owned = [p for p, owner in BASELINE_OWNER.items() if owner == index]
        if owned:
            person = owned[0]
            bpm = round(self.rng.uniform(45.0, 110.0), 1)
            params = {"person": person, "bpm": bpm}
            response = self._send(http, "POST", "/simulation/set-baseline", (200,), params=params)
            if response.status_code == 200:
                self.log.baseline[person] = bpm
        elif index in (TICK_HZ_OWNER, SPONTANEOUS_OWNER):
            name = "tick_hz" if index == TICK_HZ_OWNER else "spontaneous_stress_per_h"
            choices = TICK_HZ_CHOICES if index == TICK_HZ_OWNER else SPONTANEOUS_CHOICES
            value = self.rng.choice(choices)
            response = self._send(http, "POST", "/simulation/config", (200,), params={name: value})
            if response.status_code == 200:
                self.log.config[name] = value
        elif self.doomed and time.monotonic() >= self.next_doom:
            person = self.doomed.pop(0)
            response = self._send(http, "DELETE", f"/persons/{person}", (200,))
            if response.status_code == 200:
                self.log.removed.append(person)
            self.next_doom = time.monotonic() + HAMMER_S / (len(DOOMED) + 2)
        else:
            self._read(http)

    def _read(self, http: httpx.Client) -> None:
        own = self._own_person()
        path, params, expect = self.rng.choice(
            [
                ("/persons", {}, (200,)),
                (f"/persons/{own or 'p0'}", {}, (200,)),
                ("/simulation/config", {"person": "p1"}, (200,)),
                ("/heartbeat/current", {"person": self.rng.choice(FIXED)}, (200, 404)),
                ("/heartbeat/history", {"person": "p2", "limit": 50}, (200,)),
                ("/health", {}, (200, 503)),
                ("/metrics", {}, (200,)),
            ]
        )
        self._send(http, "GET", path, expect, params=params)


@dataclass
class ReaderLog:
    """What one WebSocket client received."""

    person: str
    heartbeats: int = 0
    gaps: list[tuple[int | None, int]] = field(default_factory=list)
    close_code: int | None = None  # set when the server closed the connection
    error: str | None = None


async def read_stream(ws_url: str, person: str, log: ReaderLog) -> None:
    """Count ``person``'s heartbeats, recording any seq that does not follow the previous one."""
    try:
        async with websockets.connect(f"{ws_url}?person={person}", open_timeout=10) as ws:
            connected = json.loads(await ws.recv())
            assert connected["type"] == "connected", connected
            last: int | None = connected["latest_seq"]
            async for raw in ws:  # ends when the server closes it normally
                message = json.loads(raw)
                if message["type"] != "heartbeat":
                    continue
                if message["person_id"] != person or (
                    last is not None and message["seq"] != last + 1
                ):
                    log.gaps.append((last, message["seq"]))
                last = message["seq"]
                log.heartbeats += 1
            log.close_code = ws.close_code
    except (OSError, websockets.WebSocketException, AssertionError) as exc:
        log.error = f"{type(exc).__name__}: {exc}"


def final_state(transitions: list[tuple[str, str]], initial: str) -> str:
    """The last state of a walk from ``initial`` using every transition once.

    Raises AssertionError when no walk (no serial order of the commands) fits.
    """
    balance: collections.Counter[str] = collections.Counter({initial: 1})
    for before, after in transitions:
        balance[before] -= 1  # left
        balance[after] += 1  # entered
    # Entered minus left: the first state +1 - 1 ... each state 0, the last one +1.
    ends = [state for state, b in balance.items() if b == 1]
    assert all(b in (0, 1) for b in balance.values()) and len(ends) == 1, (
        f"no serial order explains the answers: entered - left = {dict(balance)}"
    )
    return ends[0]


async def test_concurrent_control_traffic_keeps_one_owner_and_loses_nothing(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    loop = asyncio.get_running_loop()
    if os.environ.get("PYTHONASYNCIODEBUG") or sys.flags.dev_mode:
        assert loop.get_debug()  # the variant below really runs in asyncio's debug mode
    server = await make_server(persons=len(FIXED), rate_limit=None, autostart=True)
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
        for person in DOOMED:
            assert (await http.post("/persons", json={"person_id": person})).status_code == 201
        listing = (await http.get("/persons")).json()
        before = {p["person_id"]: _profile(p) for p in listing["persons"]}
    initial_state = server.engine.state.value

    readers = [ReaderLog(person) for person in (FIXED * 5)[:14] + DOOMED]
    assert len(readers) == READERS
    reading = [asyncio.ensure_future(read_stream(server.ws_url, r.person, r)) for r in readers]
    await asyncio.sleep(0.5)  # every reader connected

    started = time.monotonic()
    deadline = started + HAMMER_S
    hammers = [Hammer(i, server.url, deadline, seed=i) for i in range(CLIENTS)]
    with concurrent.futures.ThreadPoolExecutor(CLIENTS, thread_name_prefix="hammer") as pool:
        logs: list[ClientLog] = await asyncio.gather(
            *(loop.run_in_executor(pool, h.run) for h in hammers)
        )
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.5)  # the last ticks reach the readers
    for task in reading:
        task.cancel()  # closing: the readers' own close (1000), not the server's
    await asyncio.wait_for(asyncio.gather(*reading, return_exceptions=True), 10)

    requests = sum(log.requests for log in logs)
    server_errors = sum(log.server_errors for log in logs)
    resets = sum(log.resets for log in logs)
    tick_errors = server.runner.tick_errors
    print(
        f"\n{requests} requests in {elapsed:.1f} s ({requests / elapsed:.0f}/s) from {CLIENTS} "
        f"clients, {READERS} readers: tick errors {tick_errors}, 5xx {server_errors}, resets "
        f"{resets}, heartbeats read {sum(r.heartbeats for r in readers)}"
    )
    problems = [p for log in logs for p in log.problems]
    assert tick_errors == 0 and server_errors == 0 and resets == 0, (
        f"tick errors {tick_errors}, 5xx {server_errors}, resets {resets}: {problems[:10]}"
    )
    assert problems == []
    assert server.runner.running
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []

    # The stream: contiguous per client; only the removed persons' clients were closed (1000).
    removed = {p for log in logs for p in log.removed}
    assert removed, "the doomed persons were never removed"
    for reader in readers:
        assert reader.error is None, (reader.person, reader.error)
        assert reader.gaps == [], (reader.person, reader.gaps[:5])
        expected_close = 1000 if reader.person in removed else None
        assert reader.close_code == expected_close, (reader.person, reader.close_code)
    assert all(r.heartbeats > 0 for r in readers if r.person in FIXED)

    # The final state equals the replay of the accepted commands.
    expected = {pid: dict(profile) for pid, profile in before.items() if pid not in removed}
    for log in logs:
        expected.update(log.persons)
        for person, bpm in log.baseline.items():
            expected[person]["resting_hr_bpm"] = bpm
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
        listing = (await http.get("/persons")).json()
        config = (await http.get("/simulation/config")).json()
    actual = {p["person_id"]: _profile(p) for p in listing["persons"]}
    assert sorted(actual) == sorted(expected)
    assert actual == expected
    assert listing["default_person"] == "p0"
    tick_hz = logs[TICK_HZ_OWNER].config.get("tick_hz", 20.0)
    spontaneous = logs[SPONTANEOUS_OWNER].config.get("spontaneous_stress_per_h", 0.0)
    assert (config["tick_hz"], config["spontaneous_stress_per_h"]) == (tick_hz, spontaneous)
    transitions = [t for log in logs for t in log.transitions]
    assert len(transitions) > 50
    assert config["state"] == final_state(transitions, initial_state)
    assert server.engine.state.value == config["state"]


def test_final_state_oracle() -> None:
    """The degree count names the last state of a walk, and refuses impossible answers."""
    assert final_state([], R) == R
    assert final_state([(R, P), (P, S), (S, R), (R, R)], R) == R
    assert final_state([(S, R), (R, P), (R, S)], R) == P  # R -> S -> R -> P
    with pytest.raises(AssertionError, match="no serial order"):
        final_state([(R, P), (R, P)], R)  # paused twice without a resume between
    with pytest.raises(AssertionError, match="no serial order"):
        final_state([(P, R)], R)  # resumed while running


@pytest.mark.skipif(sys.flags.dev_mode, reason="already in dev mode: this is the variant")
def test_concurrent_control_under_dev_mode_and_asyncio_debug() -> None:
    """The same test in a Python started with ``PYTHONDEVMODE=1`` and ``PYTHONASYNCIODEBUG=1``,
    its loop in asyncio debug mode (pytest-asyncio's ``asyncio_debug``, which otherwise turns it
    off whatever the environment says).

    In asyncio debug mode the loop also raises when a non-thread-safe loop method is called
    from another thread, and logs callbacks that block it. 8 s instead of 20 (debug mode is
    several times slower).
    """
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONDEVMODE": "1",
        "PYTHONASYNCIODEBUG": "1",
        "HEARTSIM_HAMMER_S": "8",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    test = f"{Path(__file__).relative_to(root)}::"
    test += "test_concurrent_control_traffic_keeps_one_owner_and_loses_nothing"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", test, "-q", "-s", "-p", "no:cacheprovider",
         "-p", "no:nbval", "-o", "addopts=", "-o", "asyncio_debug=true",
         "-W", "error::RuntimeWarning"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "1 passed" in output
    for trouble in ("was never awaited", "Task was destroyed", "Non-thread-safe operation"):
        assert trouble not in output, output[-6000:]


#: Routes that may run on the thread pool: they touch no engine, hub or runner state (predict
#: only reads the attached model's reference, then scores off the loop, on purpose).
THREAD_POOL_ROUTES = {"messages_schema", "predict"}


def _calls(dependant: Dependant) -> list[tuple[Any, bool]]:
    """Every callable FastAPI runs for a route, with whether it receives the app context."""
    uses_ctx = any(d.call is get_ctx for d in dependant.dependencies)
    found = [(dependant.call, uses_ctx)]
    for sub in dependant.dependencies:
        found += _calls(sub)
    return found


def _is_async(call: Any) -> bool:
    if inspect.isfunction(call) or inspect.ismethod(call):
        return inspect.iscoroutinefunction(call)
    return inspect.iscoroutinefunction(type(call).__call__)  # e.g. HTTPBearer()


def test_every_route_and_dependency_touching_state_runs_on_the_loop() -> None:
    """FastAPI runs plain ``def`` routes and dependencies on its thread pool, concurrently with
    the ticks on the loop: whatever reaches the context (or the request, to find it) is async."""
    offenders = []
    modules = [
        importlib.import_module(f"{routes_package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(routes_package.__path__)
    ]
    routes = [route for module in modules for route in module.router.routes]
    assert len(routes) >= 20
    for route in routes:
        assert isinstance(route, APIRoute)
        if route.name in THREAD_POOL_ROUTES:
            continue
        for call, uses_ctx in _calls(route.dependant):
            if call is None or _is_async(call):
                continue
            takes_request = any(
                p.annotation in ("Request", "HTTPConnection")
                for p in inspect.signature(call).parameters.values()
            )
            if uses_ctx or takes_request:
                offenders.append(f"{route.path}: {getattr(call, '__name__', call)}")
    assert offenders == []
