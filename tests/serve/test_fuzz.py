"""Property-based fuzzing of the live server's OpenAPI schema (schemathesis), bounded.

Every operation gets generated requests, valid and invalid by the schema; each answer must not
be a server error and must match the documented status codes, content types and JSON schemas.
"""

from __future__ import annotations

from collections import Counter

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import ServerProcess

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_every_operation_answers_as_documented(live: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case) -> None:
            response = case.call_and_validate(checks=CHECKS, timeout=30)
            statuses[response.status_code] += 1

        fuzz()
    assert sum(statuses.values()) >= 7 * 10
    print(f"\nfuzzed {sum(statuses.values())} requests over 7 operations: {dict(statuses)}")
