"""Schemathesis over the running gateway's own OpenAPI document (over HTTP, on the real system):
generated requests, valid and not, never get a 5xx, and every response matches the published
schema (documented status codes, content types and bodies)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from devkit.system import running_system, system_settings

pytestmark = pytest.mark.slow

KEY = "fuzz-key"


@pytest.fixture(scope="module")
def base_url(serve_port, database_factory, tmp_path_factory):
    with database_factory.database() as url:
        # Keys on, so every generated case also passes through the key check.
        config = system_settings(tmp_path_factory.mktemp("home"), url, serve_port, api_keys=KEY)
        with running_system(config) as client:
            yield str(client.base_url)


def test_generated_requests_get_no_5xx_and_match_the_schema(base_url):
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    # The event stream never ends, so no generated call of it could be read to its end; its
    # parameters and answers are tested in tests/serve_app/test_routes_events.py.
    operations = [op for op in (result.ok() for result in schema.get_all_operations())
                  if (op.method.upper(), op.path) != ("GET", "/api/v1/events")]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def check(case):
            # Every check but "schema-valid data is accepted": an upload's bytes must also be a
            # real photo or video, which no schema can say, so a random file is rightly a 4xx.
            case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"},
                                   excluded_checks=[positive_data_acceptance])

        check()
