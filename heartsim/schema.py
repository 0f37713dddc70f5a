"""The wire contract as pydantic models: the single source of truth for requests, responses,
stream messages and their documentation (OpenAPI and the JSON Schema of the stream).

Stream messages are *not* built through these models at run time (the hub encodes the engine's
dicts once per tick with orjson, which is much faster); tests validate real messages against
them, and :func:`message_json_schema` publishes them for clients.

Every validated number has its allowed range here, once: the API's ``Query(ge=, le=)`` bounds
and its 422 messages ("stress_level must be between 0 and 1, got 2") both read :data:`RANGES`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from heartsim.engine import (
    MAX_SPONTANEOUS_PER_H,
    MAX_STRESS_DURATION_S,
    MAX_TICK_HZ,
    MIN_TICK_HZ,
)
from heartsim.physiology.profiles import PROFILE_RANGES, PersonProfile

#: Version of the stream message schema; bumped on any change of the message models.
SCHEMA_VERSION = "1.1"

#: Most messages one ``GET /heartbeat/history`` returns.
MAX_HISTORY_LIMIT = 10_000
#: Most characters of a person id (ids appear in URLs and log lines).
MAX_PERSON_ID_LENGTH = 64
#: Longest ``epoch`` (the id of a run's seq numbering; see :attr:`heartsim.engine.Engine.epoch`).
MAX_EPOCH_LENGTH = 64
PERSON_ID_PATTERN = r"^[A-Za-z0-9_.\-]+$"
#: Most RR intervals one ``POST /predict`` takes (over 30 min at 300 bpm; the default model
#: reads the last ~11 min).
MAX_PREDICT_INTERVALS = 10_000

#: Allowed range (low, high), inclusive, of every numeric request parameter and profile field.
RANGES: dict[str, tuple[float, float]] = {
    "stress_level": (0.0, 1.0),
    "duration_s": (1.0, MAX_STRESS_DURATION_S),
    "bpm": PROFILE_RANGES["resting_hr_bpm"],
    "tick_hz": (MIN_TICK_HZ, MAX_TICK_HZ),
    "spontaneous_stress_per_h": (0.0, MAX_SPONTANEOUS_PER_H),
    "since": (0, 2**53),
    "limit": (1, MAX_HISTORY_LIMIT),
    # RR intervals of POST /predict, ms: 300 to 20 bpm; anything else is an artefact.
    "rr_ms": (200.0, 3000.0),
    **PROFILE_RANGES,
}
#: Parameters that must be whole numbers.
INTEGER_FIELDS = frozenset({"since", "limit"})

#: A number in a JSON request body: only a JSON number (``true``/``false`` or ``"72"`` are
#: refused, as the document's ``"type": "number"`` says; pydantic's lax mode would take them).
JsonNumber = Annotated[float, Field(strict=True)]


def describe_range(field: str) -> str | None:
    """``"a number between 0 and 1"`` for a known field, ``None`` otherwise."""
    if field not in RANGES:
        return None
    low, high = RANGES[field]
    kind = "an integer" if field in INTEGER_FIELDS else "a number"
    if field == "since":
        return f"{kind} >= {low:g}"
    return f"{kind} between {low:g} and {high:g}"


# ----- stream messages -------------------------------------------------------------------------
class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HeartbeatMessage(_Message):
    """One heartbeat message: one JSON object per tick and person."""

    type: Literal["heartbeat"] = "heartbeat"
    seq: int = Field(ge=1, description="Strictly increasing per person (stream); gaps are visible")
    person_id: str = Field(description="Id of the simulated person")
    t: float = Field(description="Simulation time, s")
    timestamp: str = Field(description="ISO 8601 UTC time the message was produced")
    ts: float = Field(description="Wall-clock epoch time the message was produced, s")
    bpm: int = Field(description="Heart rate, beats per minute (mean of the last 5 s)")
    variability: float | None = Field(
        description="RMSSD over the beats of the last 30 s, ms (null with fewer than 3 beats)"
    )
    stress_level: float = Field(
        ge=0.0, le=1.0, description="True autonomic stress state, 0 to 1 (ground truth)"
    )
    systolic: int = Field(description="Systolic blood pressure, mmHg")
    diastolic: int = Field(description="Diastolic blood pressure, mmHg")
    state: Literal["running", "paused", "stopped"] = Field(description="Simulation state")
    prediction: str | int | float | None = Field(
        default=None,
        description="Attached model's call for this person now ('stress' or 'calm' for a "
        "heartsim StressClassifier); null without a model, during the person's first window "
        "(60 s by default) or when the model failed",
    )
    confidence: float | None = Field(
        default=None,
        description="Attached model's probability of its call, 0 to 1, else null",
    )
    stress_score: float | None = Field(
        default=None, description="Attached model's probability of stress, 0 to 1, else null"
    )
    rr_ms: list[float] = Field(
        description="RR intervals, ms, of the beats completed since the previous message"
    )
    label: Literal["rest", "stress", "recovery"] = Field(description="Ground-truth label")
    respiration_rate: float = Field(description="Breathing rate, breaths per minute")
    run: int = Field(
        ge=1,
        description="Starts from stopped so far, this one included: each start after a stop "
        "puts every person back at baseline, so a new run is a break in the data (simulation "
        "time t goes on across it; a resume after pause is the same run)",
    )


class ConnectedMessage(_Message):
    """The first message of every WebSocket stream."""

    type: Literal["connected"] = "connected"
    message: str = "Connected to heartbeat stream"
    state: Literal["running", "paused", "stopped"] = Field(description="Simulation state")
    base_bpm: float = Field(description="Resting heart rate of the streamed person, bpm")
    person_id: str = Field(description="Id of the streamed person")
    schema_version: str = Field(description="Version of the message schema")
    tick_hz: float = Field(description="Messages per second and person")
    latest_seq: int | None = Field(
        description="seq of the last message before the live stream (after any replay)"
    )
    since: int | None = Field(default=None, description="The ?since= the client asked for")
    replayed: int = Field(default=0, description="Buffered messages replayed before live ones")
    missed: int = Field(
        default=0, description="Messages after ?since= no longer in the buffer (a gap)"
    )
    epoch: str = Field(
        description="Id of this run's seq numbering: seq values of different epochs are "
        "unrelated (the server was restarted). Send it back as ?epoch= when resuming."
    )
    restarted: bool = Field(
        default=False,
        description="The ?epoch= sent is not this run's: ?since= was ignored and the replay "
        "starts at the oldest buffered message of this epoch",
    )


class PongMessage(_Message):
    """The answer to a text ``ping``."""

    type: Literal["pong"] = "pong"


StreamMessage = Annotated[
    HeartbeatMessage | ConnectedMessage | PongMessage, Field(discriminator="type")
]
_STREAM_ADAPTER: TypeAdapter[Any] = TypeAdapter(StreamMessage)


def validate_message(data: bytes | str | dict[str, Any]) -> BaseModel:
    """Parse and validate one stream message (JSON text or dict); raises ``ValidationError``."""
    if isinstance(data, dict):
        return _STREAM_ADAPTER.validate_python(data)
    return _STREAM_ADAPTER.validate_json(data)


def message_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of every WebSocket stream message, with its version."""
    schema = _STREAM_ADAPTER.json_schema(ref_template="#/$defs/{model}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://heartsim/schema/messages/{SCHEMA_VERSION}",
        "title": "heartsim stream messages",
        "description": "Messages of WS /ws/heartbeat; heartbeat messages are also the items of "
        "GET /heartbeat/history and the body of GET /heartbeat/current.",
        "version": SCHEMA_VERSION,
        **schema,
    }


# ----- errors ----------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    """Every error response: what went wrong and what to do."""

    error: str = Field(description="Short error title", examples=["No data available"])
    message: str = Field(
        description="What to do about it",
        examples=["Start simulation first using POST /simulation/start"],
    )


class ValidationIssue(BaseModel):
    """One invalid input (FastAPI's format)."""

    loc: list[str | int] = Field(description="Where: ['query', 'stress_level'], ['body', ...]")
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorBody(ErrorBody):
    """422: names the offending field and its allowed range."""

    field: str | None = Field(default=None, description="The first invalid field")
    detail: list[ValidationIssue] = Field(default_factory=list)


# ----- responses -------------------------------------------------------------------------------
SimState = Literal["running", "paused", "stopped"]


class SimulationStatus(BaseModel):
    """Answer to start / stop / pause / resume."""

    message: str = Field(examples=["Simulation started", "Simulation already running"])
    state: SimState


class StressTriggered(BaseModel):
    """Answer to ``POST /simulation/trigger-stress``."""

    message: str
    person_id: str
    stress_level: float = Field(description="Intensity, 0 to 1")
    duration_s: float = Field(description="Length of the episode, s")
    start_t: float = Field(description="Simulation time the episode starts, s")
    end_t: float = Field(description="Simulation time the episode ends, s")
    state: SimState


class BaselineSet(BaseModel):
    """Answer to ``POST /simulation/set-baseline``."""

    message: str
    person_id: str
    base_bpm: float = Field(description="New resting heart rate, bpm")


class TickLag(BaseModel):
    """How late the runner's ticks fire after their schedule, ms (recent ticks)."""

    p50: float
    p99: float
    max: float
    jitter: float = Field(description="Standard deviation of the lag, ms")


class ModelStatus(BaseModel):
    """The model whose predictions fill the stream (``GET /health``)."""

    attached: bool = Field(description="Whether messages carry a model's predictions")
    name: str | None = Field(
        default=None, description="The attached model's label (its file name with --model)"
    )
    features: list[str] = Field(
        default_factory=list,
        description="Feature names the attached model reads (the keys of POST /predict's features)",
    )
    errors: int = Field(
        default=0,
        description="Prediction failures since the server started (failing model calls, "
        "rejected messages); the messages concerned carried null predictions",
    )
    last_error: str | None = Field(default=None, description="The last failure")


class ClientsDropped(BaseModel):
    """Clients the server disconnected, by cause; each cause has its own WebSocket close code."""

    slow: int = Field(
        default=0,
        description="Too slow to read the stream: its send buffer overflowed (close 1008)",
    )
    keepalive: int = Field(
        default=0,
        description="Did not answer the server's protocol ping in time (close 1011)",
    )
    too_big: int = Field(default=0, description="Sent a message over the size limit (close 1009)")


class Health(BaseModel):
    """``GET /health``."""

    status: Literal["healthy", "degraded", "unhealthy"] = Field(
        default="healthy",
        description="healthy (HTTP 200); degraded: messages flow but ticks failed or ran late "
        "recently, or a check failed; unhealthy: no messages are produced (HTTP 503 for both)",
    )
    reasons: list[str] = Field(
        default_factory=list, description="Why the status is not healthy (empty when it is)"
    )
    simulation_state: SimState
    base_bpm: float = Field(description="Resting heart rate of the default person, bpm")
    websocket_clients: int
    uptime_s: float
    version: str
    schema_version: str = SCHEMA_VERSION
    messages_published: int = Field(description="Messages produced (one per tick and person)")
    messages_sent: int = Field(description="Messages delivered to subscribers")
    messages_dropped: int = Field(description="Messages a slow subscriber could not take")
    clients_dropped: int = Field(
        description="Clients the server disconnected because of their behaviour, all causes "
        "(the sum of clients_dropped_by_cause)"
    )
    clients_dropped_by_cause: ClientsDropped = Field(
        default_factory=ClientsDropped,
        description="clients_dropped by cause, each with its own close code",
    )
    tick_lag_ms: TickLag
    ticks: int
    ticks_skipped: int = Field(description="Ticks skipped because the loop was late")
    tick_errors: int = Field(
        default=0, description="Ticks that failed since the start (their messages were lost)"
    )
    tick_hz: float
    clock: Literal["real", "virtual"]
    persons: int = Field(description="Number of simulated persons")
    default_person: str
    model: ModelStatus = Field(default_factory=lambda: ModelStatus(attached=False))
    max_persons: int | None = Field(
        default=None, description="Most persons at once (POST /persons beyond it: 409)"
    )
    history_bytes: int = Field(
        default=0, description="Memory the message history of every person takes now, bytes"
    )
    history_budget_bytes: int | None = Field(
        default=None,
        description="Budget of history_bytes (null: unlimited); beyond it the oldest "
        "messages of all persons go first",
    )
    history_evicted: int = Field(
        default=0, description="Messages dropped from the history to stay within the budget"
    )
    history_window_s: float = Field(
        default=0.0,
        description="Simulation time the history spans now, s: how far back ?since= replay "
        "and GET /heartbeat/history reach (at most 600 s; less once the budget is reached)",
    )


class SimulationConfig(BaseModel):
    """``GET`` / ``POST /simulation/config``."""

    tick_hz: float = Field(description="Messages per second and person")
    spontaneous_stress_per_h: float = Field(description="Spontaneous stress episodes per hour")
    clock: Literal["real", "virtual"]
    state: SimState
    persons: int
    default_person: str


_PROFILE_DOCS: dict[str, str] = {
    "resting_hr_bpm": "Resting heart rate, bpm",
    "rsa_amplitude_ms": "Respiratory sinus arrhythmia SD at rest (vagal HF), ms",
    "mayer_amplitude_ms": "Mayer-wave (~0.1 Hz, LF) SD, ms",
    "drift_sd_ms": "Slow (~1 min, VLF) drift SD of the heart period, ms",
    "beat_noise_sd_ms": "Independent beat-to-beat noise SD at rest, ms",
    "breathing_rate_bpm": "Resting breathing rate, breaths per minute",
    "systolic_mmhg": "Resting systolic blood pressure, mmHg",
    "diastolic_mmhg": "Resting diastolic blood pressure, mmHg (>= 10 below systolic)",
    "hr_reactivity_bpm": "Heart-rate rise at full stress, bpm",
    "sbp_reactivity_mmhg": "Systolic rise at full stress, mmHg",
    "breathing_reactivity_bpm": "Breathing-rate rise at full stress, breaths per minute",
    "onset_tau_s": "Time constant of the stress response's rise, s",
    "recovery_tau_s": "Time constant of recovery after a stressor, s",
}
if set(_PROFILE_DOCS) != set(PROFILE_RANGES):  # pragma: no cover - guards against drift
    raise RuntimeError("schema._PROFILE_DOCS must document exactly the PROFILE_RANGES fields")

PersonId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_PERSON_ID_LENGTH,
        pattern=PERSON_ID_PATTERN,
        description="Person id: letters, digits, '_', '.', '-'",
        examples=["p1"],
    ),
]


def _profile_field(name: str, *, required: bool) -> Any:
    low, high = PROFILE_RANGES[name]
    default = ... if required else None
    kind = float if required else JsonNumber | None  # requests: JSON numbers only
    field = Field(default=default, ge=low, le=high, description=_PROFILE_DOCS[name])
    return (kind, field)


#: A person's profile as sent in ``POST /persons`` and ``PATCH /persons/{id}``: every field
#: optional and range-checked.
PersonProfileIn: type[BaseModel] = create_model(
    "PersonProfileIn",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Profile fields (all optional). POST /persons: omitted fields take the typical-adult "
    "defaults when any field is given; an empty body draws a random realistic person.",
    person_id=(PersonId | None, Field(default=None)),
    **{name: _profile_field(name, required=False) for name in PROFILE_RANGES},
)

#: A person as returned by the API.
Person: type[BaseModel] = create_model(
    "Person",
    __doc__="A simulated person and its physiological profile.",
    person_id=(str, Field(description="Person id")),
    is_default=(bool, Field(description="Whether routes act on this person without ?person=")),
    **{name: _profile_field(name, required=True) for name in PROFILE_RANGES},
)


def person_model(profile: PersonProfile, *, is_default: bool) -> BaseModel:
    """The API representation of ``profile``."""
    fields = {name: getattr(profile, name) for name in PROFILE_RANGES}
    return Person(person_id=profile.person_id, is_default=is_default, **fields)


class PersonList(BaseModel):
    """``GET /persons``."""

    default_person: str
    persons: list[Person]  # type: ignore[valid-type]


class PersonCreated(BaseModel):
    """``POST /persons`` (201)."""

    message: str
    person_id: str
    person: Person  # type: ignore[valid-type]


class PersonRemoved(BaseModel):
    """``DELETE /persons/{person_id}``."""

    message: str
    person_id: str


class HistoryPage(BaseModel):
    """``GET /heartbeat/history``: buffered heartbeat messages of one person, oldest first."""

    person_id: str
    since: int | None = Field(description="The ?since= asked for (messages have seq > since)")
    count: int
    oldest_seq: int | None = Field(description="Oldest seq still in the buffer")
    latest_seq: int | None = Field(description="Newest seq in the buffer")
    missed: int = Field(description="Messages after ?since= no longer buffered (a gap)")
    more: bool = Field(description="More messages follow (ask again with since=last seq)")
    epoch: str = Field(description="Id of this run's seq numbering (see the connected message)")
    restarted: bool = Field(
        default=False,
        description="The ?epoch= sent is not this run's: ?since= was ignored (read from the "
        "oldest buffered message)",
    )
    messages: list[HeartbeatMessage]


# ----- predictions -----------------------------------------------------------------------------
_RR_LOW, _RR_HIGH = RANGES["rr_ms"]
#: 82 beats (~67 s) of a calm rhythm with breathing arrhythmia: about the shortest valid
#: ``POST /predict`` request.
EXAMPLE_RR_MS = [round(820.0 + 40.0 * math.sin(2.0 * math.pi * k / 4.5), 1) for k in range(82)]
#: A feature row for the default model (heart rate 12.5 bpm above baseline, RMSSD at 55 %).
EXAMPLE_FEATURES = {"hr_delta_bpm": 12.5, "rmssd_log_ratio": -0.6, "hr_trend_bpm": 4.0}


class PredictRequest(BaseModel):
    """``POST /predict``: exactly one of ``rr_ms`` or ``features``."""

    model_config = ConfigDict(extra="forbid")

    rr_ms: list[Annotated[JsonNumber, Field(ge=_RR_LOW, le=_RR_HIGH)]] | None = Field(
        default=None,
        max_length=MAX_PREDICT_INTERVALS,
        description=f"One person's consecutive RR intervals, ms, oldest first, ending now; "
        f"each from {_RR_LOW:g} to {_RR_HIGH:g} ms, at most {MAX_PREDICT_INTERVALS} of them. "
        "They must span the model's window plus one step (65 s by default); send the last "
        "10 min for the default model's full context.",
    )
    features: dict[str, Annotated[JsonNumber, Field(allow_inf_nan=False)]] | None = Field(
        default=None,
        description="One precomputed feature row (heartsim.ml.HRVFeatures column names): "
        "every feature the attached model reads (GET /health: model.features); other "
        "heartsim feature columns are ignored",
    )


class PredictResponse(BaseModel):
    """``POST /predict``: the attached model's answer."""

    prediction: Literal["stress", "calm"] = Field(
        description="'stress' when stress_score exceeds the model's threshold (0.5 by default)"
    )
    confidence: float = Field(
        ge=0.0, le=1.0, description="The model's probability of its prediction, 0.5 to 1"
    )
    stress_score: float = Field(ge=0.0, le=1.0, description="Probability of stress, 0 to 1")
    model: str | None = Field(description="Label of the model that answered")
    span_s: float | None = Field(
        description="Time spanned by the rr_ms sent, s (null for a feature row)"
    )
    full_context: bool | None = Field(
        description="Whether rr_ms covered the model's whole context (its window plus the "
        "person's baseline history, 11 min by default); false: the answer leans to 'calm'. "
        "Null for a feature row."
    )
