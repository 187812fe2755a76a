"""Fuzzing the JSON API: generated requests (from its OpenAPI description and from random JSON and bytes)
never get a 500, and answers match the described schema."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webui import create_app
from webui.testing import app_settings, make_registry


def _make_app():
    # Built at import: schemathesis parametrizes at collection time (its lazy fixture loader does
    # not work with pytest 9).
    tmp = Path(tempfile.mkdtemp(prefix="t2sql-webui-fuzz-"))
    make_registry(tmp / "runs", with_model=False)
    return create_app(app_settings(tmp, QUERY_TIMEOUT_S=0.3, ROW_CAP=50))


APP = _make_app()
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", APP)


@pytest.fixture(scope="module")
def fuzz_app():
    return APP


@schema.parametrize()
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_matches_its_openapi_description(case):
    # Schema-valid input may still be refused for what a JSON schema cannot say (a pasted schema
    # that does not run, SQL with a syntax error): 4xx is right there, so that one check is left out.
    case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
field_values = st.one_of(json_values, st.sampled_from(["student_1", "wrestler", "schema:0000", "", "SELECT 1",
                                                       "CREATE TABLE t (x TEXT)", "DROP TABLE list", "\x00"]))
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"question": field_values, "database": field_values, "schema": field_values,
                                        "sql": field_values}),
)


@given(path=st.sampled_from(["/api/translate", "/api/query"]), body=bodies)
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_random_json_never_gets_a_500(fuzz_app, path, body):
    r = fuzz_app.test_client().post(path, data=json.dumps(body), content_type="application/json")
    assert r.status_code < 500 or r.status_code == 503, (body, r.get_data(as_text=True))
    assert r.is_json
    if r.status_code >= 400:
        assert r.json["status"] == r.status_code and r.json["error"]


@given(path=st.sampled_from(["/api/translate", "/api/query", "/api/databases", "/api/openapi.json"]),
       raw=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "text/plain",
                                                                    "application/x-www-form-urlencoded", ""]),
       method=st.sampled_from(["POST", "GET", "PUT"]))
@settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_random_bytes_never_get_a_500(fuzz_app, path, raw, content_type, method):
    r = fuzz_app.test_client().open(path, method=method, data=raw, content_type=content_type or None)
    assert r.status_code < 500, r.get_data(as_text=True)
    assert r.is_json
