"""The gateway against its own OpenAPI schema: schemathesis, with the real worker behind it.

For every operation, schemathesis generates requests from ``/openapi.json``
(valid ones, and in a second pass invalid ones) and checks each answer: the
status is documented for the operation, the body and content type match the
documented schema, a request without the API key is refused, and nothing is a
server fault. A healthy stack answers 5xx only with 504, and only to a request
that set ``?wait=`` shorter than its job took.

The app runs in process (ASGI) on the session's Redis, so the session's worker
and emulator answer its jobs. Examples are bounded so the module takes seconds.
Generated ``callback_url``s are dropped: callbacks are covered by their own
tests, and a generated host must never be resolved or contacted.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cards.settings import Settings
from harness.processes import CeleryWorker, RedisServer, client_app
from producers.http.app import create_app

KEY = "contract-test-key-0123456789"
MAX_EXAMPLES = 40
OPERATIONS = [
    ("POST", "/api/cards/default"),
    ("POST", "/api/cards/assign"),
    ("GET", "/api/cards/{customerId}"),
    ("GET", "/api/jobs/{job_id}"),
    ("GET", "/healthz"),
]
#: /healthz takes nothing, so there is nothing to make invalid.
CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if path != "/healthz" or mode is GenerationMode.POSITIVE
]


def no_server_fault(ctx: Any, response: Any, case: Case[Any]) -> bool | None:
    """No 5xx, except a 504 to a request that asked to wait (and its job took longer)."""
    status = int(response.status_code)
    if status >= 500 and not (status == 504 and "wait" in (case.query or {})):
        raise AssertionError(f"{status} from {case.operation.label}: {response.text[:500]}")
    return None


CHECKS = [
    no_server_fault,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    ignored_auth,
]


@pytest.fixture(scope="module")
def api_schema(worker: CeleryWorker, redis_server: RedisServer) -> Any:
    app = create_app(
        Settings(
            gateway_api_keys=KEY,
            gateway_max_wait_seconds=10,
            state_redis_url=redis_server.url(),  # the job-id claims, beside the jobs
        ),
        client_app(redis_server.url()),
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_every_answer_conforms_to_the_schema(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Case[Any]) -> None:
        if isinstance(case.body, dict):
            case.body.pop("callback_url", None)
        case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS)

    check()
