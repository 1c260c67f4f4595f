"""Property-based fuzz of every operation of the OpenAPI document
(schemathesis), against the real server and its storage process: inputs
that fit the schema and inputs that break it, each sent with a secret
read-write key and with a publishable key. No answer may be a 5xx, and every
answer keeps the envelope: ``{"data", "params"}`` on 2xx, exactly
``{"error": "<sentence>"}`` otherwise.

Bounded for CI: a fixed number of examples per operation and mode, generated
deterministically (``derandomize``), no example database."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from tally.api.openapi import openapi_document
from tests.support.postgres import fresh_schema
from tests.support.server import Server, running_server

pytestmark = pytest.mark.slow

EXAMPLES = 8  # per operation, mode and backend; each example is sent with both keys
SCHEMA = schemathesis.openapi.from_dict(json.loads(openapi_document()))
# it sends a request to the URL of a registered webhook: no traffic leaves
# this machine from a test (its refusals are tested in tests/api/test_webhooks.py)
NOT_FUZZED = {"POST /webhooks/{webhook_id}/test"}
OPERATIONS = [
    op
    for op in (result.ok() for result in SCHEMA.get_all_operations())
    if op.label not in NOT_FUZZED
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The real server, once per backend for the whole module (PostgreSQL: a
    fresh schema of the run's database). No delivery loop: webhooks the fuzz
    registers are never called."""
    with contextlib.ExitStack() as stack:
        url = None
        if request.param == "postgres":
            url = stack.enter_context(fresh_schema(request.getfixturevalue("postgres_database")))
        tmp = tmp_path_factory.mktemp("fuzz")
        yield stack.enter_context(running_server(tmp, {"TALLY_DELIVER": "off"}, database_url=url))


def check_envelope(response: Any, label: str) -> None:
    status = response.status_code
    said = f"{label}: {status} {response.text[:300]}"
    assert status < 500, said
    (content_type,) = response.headers.get("content-type", [""])
    if label == "GET /metrics" and status == 200:  # the Prometheus exposition, not JSON
        assert content_type.startswith("text/plain"), said
        return
    assert content_type.startswith("application/json"), said
    payload = json.loads(response.content)
    assert isinstance(payload, dict), said
    if 200 <= status < 300:
        if label != "GET /openapi.json":
            assert set(payload) == {"data", "params"}, said
        return
    # a capture batch of more than 100 events also says the SDK's max_size
    allowed = {"error", "max_size"} if label == "POST /batch" else {"error"}
    assert set(payload) <= allowed and "error" in payload, said
    error = payload["error"]
    assert isinstance(error, str) and error.strip() and "\n" not in error, said


def _takes_input(label: str) -> bool:
    doc = json.loads(openapi_document())
    method, path = label.split(" ", 1)
    op = doc["paths"][path][method.lower()]
    return bool(op.get("parameters") or op.get("requestBody") or op.get("security") != [])


# an operation without input has nothing to break (/health, /openapi.json)
CASES = [
    pytest.param(op, mode, id=f"{op.label}-{mode.value}")
    for op in OPERATIONS
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or _takes_input(op.label)
]


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_no_route_answers_5xx_or_breaks_the_envelope(
    server: Server, operation: Any, mode: GenerationMode
) -> None:
    keys = (server.secret_key, server.publishable_key)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    def fuzz(case: Any) -> None:
        for key in keys:
            # the key replaces whatever the case made of the security header
            case.headers = {**(case.headers or {}), "X-Schematic-Api-Key": key}
            response = case.call(base_url=server.base_url, timeout=30)
            check_envelope(response, operation.label)

    fuzz()


def test_every_operation_is_fuzzed_but_the_one_that_sends_out() -> None:
    labels = {op.label for op in OPERATIONS}
    assert len(labels) == len(list(SCHEMA.get_all_operations())) - len(NOT_FUZZED)
    assert "GET /companies/lookup" in labels and "POST /company-traits" in labels


def test_the_server_log_holds_no_traceback(server: Server, tmp_path: Path) -> None:
    """Run after the fuzz (same module server): nothing went unexpected."""
    assert "Traceback" not in server.log(), server.log()[-3000:]
