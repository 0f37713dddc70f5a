"""``POST /predict``: the attached stress model's answer for a client's beats (or features)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.routing import APIRoute

from heartsim.api.context import Ctx, predict_guard
from heartsim.api.errors import (
    UNDECODABLE_BODY,
    ApiError,
    engine_value_error,
    error_responses,
    validation_error,
)
from heartsim.schema import (
    EXAMPLE_FEATURES,
    EXAMPLE_RR_MS,
    MAX_PREDICT_INTERVALS,
    PredictRequest,
    PredictResponse,
)

logger = logging.getLogger(__name__)

#: Commas a valid body can hold: between its most RR intervals, plus a margin for the other
#: members. A feature row has a few dozen; any other body is invalid anyway.
MAX_BODY_COMMAS = MAX_PREDICT_INTERVALS + 64


class _CountedRoute(APIRoute):
    """Refuses a body with too many values before it is parsed.

    Parsing holds the event loop (``json.loads`` takes ~100 ms per MiB of numbers; a thread
    would not help, it keeps the GIL throughout). A JSON array or object of ``n`` members has
    ``n - 1`` commas, so counting the body's commas (~0.1 ms per MiB) bounds every list and
    object in it: a body with more than :data:`MAX_BODY_COMMAS` cannot be valid, and gets the
    same 422 as too many ``rr_ms`` would, unparsed.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def counted(request: Request) -> Response:
            commas = (await request.body()).count(b",")  # the parser reuses the bytes
            if commas > MAX_BODY_COMMAS:
                raise validation_error(
                    "rr_ms",
                    f"rr_ms must hold at most {MAX_PREDICT_INTERVALS} RR intervals; this body "
                    f"holds about {commas + 1} values",
                    "body",
                )
            return await handler(request)

        return counted


router = APIRouter(tags=["model"], dependencies=[Depends(predict_guard)], route_class=_CountedRoute)

NO_MODEL_MESSAGE = (
    "No model is attached to this server. Start it with `heartsim serve --model FILE` (a file "
    "written by heartsim.ml.StressClassifier.save), or attach one from Python with "
    "server.attach_model(model) (HeartsimServer) or handle.attach_model(model) (notebook)."
)

_DOC = """One stress prediction from a person's RR intervals, or from a feature row, by the model
attached to the server (the same model as the stream's `prediction` fields).

**Body**: exactly one of
- `rr_ms`: the person's consecutive RR intervals in ms, oldest first, ending now (each 200 to
  3000 ms, at most 10000). They must span the model's window plus one step (65 s by default).
  The beats are scored as the stream would score them at the last beat, without the stream's
  release hold. **Send about 10 minutes of beats**: the default model compares the last 60 s
  window with the person's own baseline (heart rate and RMSSD over the last 10 min) and trend;
  with only ~1 min the person has no history, the comparison features are 0 and the answer
  leans to `"calm"` (`full_context` is then false).
- `features`: one row of `heartsim.ml.HRVFeatures` columns containing every feature the model
  reads (listed by GET /health under `model.features`); other known columns are ignored.

**Errors**: 422 names the field and its allowed range (too few beats, intervals out of range,
more than 10000 intervals, unknown or missing features, both or neither of rr_ms and
features); 413 for a body over the server's limit (1 MiB by default); 409 when no model is
attached (the message says how to attach one); 500 when the model itself fails.

**Limits**: scoring costs CPU, so when the server has a token this route needs it (as control
routes do), each client may send 2 requests per second (bursts of 10; 429 with Retry-After
beyond), and at most 2 scorings run at once, off the event loop: a request that finds every
slot busy for 2 s gets 503 with Retry-After (the server's defaults, see PredictLimits).
"""

PredictBody = Annotated[
    PredictRequest,
    Body(
        openapi_examples={
            "rr_ms": {
                "summary": "RR intervals (the shortest valid request)",
                "value": {"rr_ms": EXAMPLE_RR_MS},
            },
            "features": {
                "summary": "A feature row for the default model",
                "value": {"features": EXAMPLE_FEATURES},
            },
        }
    ),
]


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=error_responses(
        400,
        401,
        403,
        409,
        413,
        422,
        429,
        500,
        503,
        descriptions={
            400: UNDECODABLE_BODY,
            409: "No model is attached; the message says how to attach one",
            429: "Too many predictions from this client; retry after Retry-After seconds",
            500: "The attached model failed on this input",
        },
    ),
    summary="Predict stress from RR intervals or features",
    description=_DOC,
)
async def predict(ctx: Ctx, body: PredictBody) -> PredictResponse:
    """Score ``body`` with the attached model on a worker thread (at most
    ``PredictLimits.concurrency`` at once), leaving the event loop to the stream."""
    if (body.rr_ms is None) == (body.features is None):
        raise validation_error(
            None, "send exactly one of rr_ms (a list of RR intervals, ms) or features", "body"
        )
    predictor = ctx.runner.predictor
    if predictor is None:
        raise ApiError(409, "No model attached", NO_MODEL_MESSAGE)
    name = ctx.runner.model_stats().name
    native_limit = ctx.runner.native_limit

    def score() -> PredictResponse:
        # Reads only the model (a fitted estimator, safe to share between threads) and the
        # predictor's settings, never the live predictor's per-person state.
        with native_limit():  # as in the stream: no OpenMP stalls on a busy machine
            if body.rr_ms is not None:
                return _from_rr(predictor, name, body.rr_ms)
            assert body.features is not None
            return _from_features(predictor, name, body.features)

    async with ctx.predict.slot():
        return await anyio.to_thread.run_sync(score)


def _from_rr(predictor: Any, name: str | None, rr_ms: list[float]) -> PredictResponse:
    from heartsim.ml import predict_rr

    try:
        result = predict_rr(predictor.model, rr_ms)
    except ValueError as exc:  # too few beats: the message says how many seconds are needed
        raise engine_value_error(exc, location="body") from None
    except RuntimeError as exc:
        logger.warning("POST /predict: the model failed: %s", exc)
        raise ApiError(500, "Model failed", f"The attached model failed: {exc}") from None
    span_s = sum(rr_ms) / 1000.0
    context_s = predictor.window_s + (predictor.baseline_s or predictor.step_s)
    return PredictResponse(
        **result, model=name, span_s=round(span_s, 3), full_context=span_s >= context_s
    )


def _from_features(predictor: Any, name: str | None, features: dict[str, float]) -> PredictResponse:
    from heartsim.ml import FEATURE_COLUMNS

    unknown = sorted(set(features) - set(FEATURE_COLUMNS))
    if unknown:
        raise validation_error(
            "features",
            f"features has unknown name(s) {unknown}; known feature names: {list(FEATURE_COLUMNS)}",
            "body",
        )
    needed = list(predictor.feature_names)
    missing = [n for n in needed if n not in features]
    if missing:
        raise validation_error(
            "features",
            f"features lacks {missing}: the attached model reads {needed} (GET /health)",
            "body",
        )
    model = predictor.model
    try:
        import pandas as pd

        row = pd.DataFrame([[features[n] for n in needed]], columns=needed)
        proba = model.predict_proba(row)
        classes = list(getattr(model, "classes_", [False, True]))
        score = float(proba[0, classes.index(True) if True in classes else 1])
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"probability of stress {score!r} outside [0, 1]")
    # The model is user code: whatever it raises is its failure, reported as such.
    except Exception as exc:
        logger.warning("POST /predict: the model failed: %r", exc)
        raise ApiError(500, "Model failed", f"The attached model failed: {exc!r}") from None
    stressed = score > float(getattr(model, "threshold", 0.5))
    return PredictResponse(
        prediction="stress" if stressed else "calm",
        confidence=score if stressed else 1.0 - score,
        stress_score=score,
        model=name,
        span_s=None,
        full_context=None,
    )


__all__ = ["NO_MODEL_MESSAGE", "router"]
