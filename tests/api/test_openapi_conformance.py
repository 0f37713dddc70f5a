"""Property-based check that the server does what its OpenAPI document says (schemathesis).

For every operation, generated valid and invalid requests go to a real server; every response
must have a documented status code, content type, headers and body schema. An undocumented
500 fails the status-code check.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from heartsim.server import HeartsimServer

from .conftest import ServerFactory

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def fuzz(url: str, spec: dict[str, Any], mode: Any, examples: int) -> dict[str, str]:
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
            case.call_and_validate(base_url=url, checks=CHECKS, timeout=5)

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


@pytest.mark.parametrize("mode", ["positive", "negative"])
async def test_responses_conform_to_the_openapi_document(
    make_server: ServerFactory, mode: str
) -> None:
    server: HeartsimServer = await make_server(rate_limit=None, autostart=True)
    generation = schemathesis.GenerationMode(mode)
    failures = await asyncio.wait_for(
        asyncio.to_thread(fuzz, server.url, server.app.openapi(), generation, 8), 60
    )
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
