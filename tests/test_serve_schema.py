"""Schemathesis against the service's own OpenAPI schema, on a live server: for a bounded number of
generated requests per operation (valid and invalid bodies), no 5xx, every response matches the
schema the service declares (status, content type, body, the 4xx error shape included), and every
4xx names the field it is about.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_serve_schema.py
"""

import re

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.config import SchemathesisConfig

from agrl.model.score import Scorer
from agrl.serve.app import Limits, create_app
from agrl.model.tiny import base_judge_dir

LIMITS = Limits(max_items=6, max_query_chars=100, max_item_chars=600, max_new_tokens=8, body_timeout_s=5)
EXAMPLES = 25  # per operation: the whole file runs in about a minute on one core


@pytest.fixture(scope="module")
def base_url(start_service):
    url = start_service(create_app(Scorer(base_judge_dir("tiny-base"), device="cpu"), LIMITS, "tiny-base"))
    assert httpx.get(f"{url}/openapi.json").json() == SPEC  # the schema under test is the one served
    return url


# The schema does not depend on the model (nothing is scored to build it), so it is read at collection.
SPEC = create_app(None, LIMITS).openapi()
# A body over a limit is refused with 413 before it is read further: a rejection like 400 or 422.
CONFIG = SchemathesisConfig.from_dict({"checks": {
    "negative_data_rejection": {"expected-statuses": [400, 408, 413, 415, 422]},
    # The schema says what type each field is, not every rule a product must satisfy (a title of
    # spaces, an attribute name with no letters): a valid-looking body may still get a 422 naming it.
    "positive_data_acceptance": {"enabled": False}}})
schema = schemathesis.openapi.from_dict(SPEC, config=CONFIG)


def error_names_the_field(ctx, response, case):
    """A 4xx body is `{"error": "FIELD: what is wrong", "error_type": ...}`, FIELD printable ASCII."""
    if 400 <= response.status_code < 500:
        error = response.json()["error"]
        assert re.match(r"[!-~]+: \S", error), f"the error names no field: {error!r}"


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_service_keeps_to_its_schema(case, base_url):
    case.call_and_validate(base_url=base_url, timeout=60, additional_checks=[error_names_the_field])


def test_the_fuzz_reached_every_route_with_good_and_bad_bodies(base_url):
    """Runs after the fuzz (file order): it was not vacuous. Each POST route answered 200s and 4xx."""
    families = text_string_to_metric_families(httpx.get(f"{base_url}/metrics").text)
    seen = {(s.labels["route"], s.labels["status"][0]) for f in families for s in f.samples
            if s.name == "agrl_http_requests_total"}
    for route in ("/v1/score", "/v1/judge", "/rerank", "/v1/rerank", "/v2/rerank"):
        assert {(route, "2"), (route, "4")} <= seen, (route, sorted(seen))
    assert not any(status == "5" for _, status in seen)
