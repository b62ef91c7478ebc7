"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis).

Every operation gets valid and invalid inputs generated from the schema the app publishes; the
app must never answer 5xx, and every answer must match the status codes, content types and
response schemas it declares. Mutating operations run with a token configured and sent, so the
handlers behind the auth check are exercised too (and the check that unauthenticated calls are
refused stays meaningful).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path as FsPath
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from controller.api.app import create_app
from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.core.ports import Claim, Dispatched, Finish
from controller.ledger.sqlite import SQLiteLedger

from .conftest import GROUPS
from .support import TOKEN, make_service, make_settings, write_flag, write_rollout

MAX_EXAMPLES = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def _seed(ledger: SQLiteLedger) -> None:
    """Records in every state, so that lookups, pages and requeues meet real data."""
    ledger.accept([ConversionRequest("waiting-1", 4, {})], 1.0)
    ledger.claim(
        [Claim(ConversionRequest(f"c{i}", 1 + i % 12, {"k": "v"}), Path.NEW, "v1", "seed") for i in range(8)],
        2.0,
    )
    taken = ledger.mark_dispatching(ledger.pending_dispatch(Path.NEW, 4), "Nseed", 3.0)
    ledger.mark_dispatched(
        [Dispatched(r.conversion_id, r.fence, f"job-{r.conversion_id}") for r in taken], 4.0
    )
    ledger.mark_finished(
        [Finish(r.conversion_id, r.fence, ConversionState.FAILED, "boom") for r in taken[:2]], 5.0
    )


OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/status"),
    ("GET", "/metrics"),
    ("POST", "/conversions"),
    ("GET", "/conversions"),
    ("GET", "/conversions/{conversion_id}"),
    ("POST", "/conversions/{conversion_id}/requeue"),
    ("GET", "/tenants"),
    ("GET", "/tenants/{tenant_id}/route"),
    ("GET", "/gates"),
    ("GET", "/shadow"),
    ("GET", "/"),
]


@pytest.fixture
def api_schema(tmp_path: FsPath) -> Iterator[Any]:
    """The app's published schema, loaded over ASGI from an app on a seeded ledger."""
    write_flag(tmp_path / "flags.json", GROUPS["group-1"])
    write_rollout(tmp_path / "rollout.json", GROUPS)
    settings_ = make_settings(tmp_path, api_token=TOKEN, max_request_items=50)
    service, _ = make_service(tmp_path, settings=settings_)
    assert isinstance(service.ledger, SQLiteLedger)
    _seed(service.ledger)
    service.controller.run_cycle()
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(service, None))
    service.close()


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    """The list below covers every operation the app publishes, so a new endpoint is not missed."""
    published = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert published == set(OPERATIONS)


# Operations without any input have no invalid input to generate.
WITH_INPUT = {
    ("POST", "/conversions"),
    ("GET", "/conversions"),
    ("GET", "/conversions/{conversion_id}"),
    ("POST", "/conversions/{conversion_id}/requeue"),
    ("GET", "/tenants/{tenant_id}/route"),
    ("GET", "/shadow"),
}
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if (m, p) in WITH_INPUT
]


# schemathesis' own pytest loader (``from_fixture``) does not run under this pytest, so each
# operation's strategy is driven with hypothesis directly.
@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_api_answers_within_its_own_schema(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    """No 5xx for any generated input, and every answer conforms to the published schema."""
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)

    check()
