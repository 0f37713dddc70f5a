"""Property-based check that the server does what its OpenAPI document says (schemathesis).

For every operation, generated valid and invalid requests go to a real server; every response
must have a documented status code, content type, headers and body schema. An undocumented
500 fails the status-code check.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from heartsim.server import HeartsimServer

from .conftest import ServerFactory

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    # The document's security is the server's: operations that declare it refuse requests
    # without a valid token (schemathesis ST401), the others need none.
    ignored_auth,
    # Requests the document calls invalid (e.g. `false` for a number) are refused (ST201).
    negative_data_rejection,
]
TOKEN = "s3cret"


def fuzz(
    url: str, spec: dict[str, Any], mode: Any, examples: int, checks: list[Any] = CHECKS
) -> dict[str, str]:
    """Run every operation with ``examples`` generated requests; failures by operation."""
    schema = schemathesis.openapi.from_dict(spec)
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def check(case: Any) -> None:
            case.call_and_validate(base_url=url, checks=checks, timeout=5)

        try:
            check()
        except hypothesis.errors.Unsatisfiable:
            # Negative mode on an operation without inputs: there is nothing to get wrong.
            if mode != schemathesis.GenerationMode.NEGATIVE:
                raise
        except AssertionError as exc:
            failures[operation.label] = str(exc)[:2000]
        except BaseExceptionGroup as group:  # schemathesis' FailureGroup
            failures[operation.label] = str(group)[:2000]
    return failures


@pytest.mark.parametrize(
    ("mode", "access"),
    [
        ("positive", {}),
        ("negative", {}),
        ("positive", {"token": TOKEN}),  # control routes need it, reads are public
        ("positive", {"token": TOKEN, "public_read": False}),
    ],
    ids=["positive", "negative", "token", "token-private-reads"],
)
async def test_responses_conform_to_the_openapi_document(
    make_server: ServerFactory, mode: str, access: dict[str, Any]
) -> None:
    server: HeartsimServer = await make_server(rate_limit=None, autostart=True, **access)
    generation = schemathesis.GenerationMode(mode)
    failures = await asyncio.wait_for(
        asyncio.to_thread(fuzz, server.url, server.app.openapi(), generation, 8), 60
    )
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


async def test_json_numbers_must_be_numbers(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    # pydantic's lax mode took `false` as 0.0 and "70" as 70.0 where the document says number.
    for value in (False, True, "70"):
        added = await client.post("/persons", json={"resting_hr_bpm": value})
        assert added.status_code == 422, value
        assert added.json()["field"] == "resting_hr_bpm"
        patched = await client.patch("/persons/p0", json={"hr_reactivity_bpm": value})
        assert patched.status_code == 422 and patched.json()["field"] == "hr_reactivity_bpm"
        scored = await client.post("/predict", json={"rr_ms": [800.0, value]})
        assert scored.status_code == 422 and "rr_ms" in scored.json()["field"]
    assert server.engine.person_ids == ["p0"]
    assert (await client.post("/persons", json={"resting_hr_bpm": 70})).status_code == 201


async def test_405_names_every_method_the_path_takes(client: httpx.AsyncClient) -> None:
    for method, path, allowed in (
        ("OPTIONS", "/persons", "GET, POST"),
        ("PUT", "/persons/p0", "DELETE, GET, PATCH"),
        ("OPTIONS", "/simulation/config", "GET, POST"),
        ("DELETE", "/health", "GET"),
    ):
        response = await client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == allowed, (method, path)
        assert allowed in response.json()["message"]
