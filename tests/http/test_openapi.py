"""GET /api/v1/openapi.json describes every route; schemathesis fuzzes the real daemon with it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from llamahomed.http.keys import ROUTES
from llamahomed.http.openapi import build_spec, routes
from llamahomed.http.app import create_app
from llamahomed.http.routes import ROUTES as ROUTE_ROWS
from tests.conftest import TINY_MODEL_FILE, TINY_MODEL_ID
from tests.fixtures.daemon import RunningDaemon, clean_environ, start_daemon

LIMIT_HEADERS = ("RateLimit-Policy", "RateLimit", "x-ratelimit-limit-requests",
                 "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
# cases per operation: 9 operations x (positive + negative) in CI stays under a minute on 2 cores
POSITIVE_CASES = int(os.environ.get("LLAMAHOME_TEST_FUZZ_POSITIVE", "25"))
NEGATIVE_CASES = int(os.environ.get("LLAMAHOME_TEST_FUZZ_NEGATIVE", "15"))


async def test_the_document_describes_every_route_the_app_serves(api: Any, auth: dict[str, str]) -> None:
    response = await api.get("/api/v1/openapi.json", headers=auth)
    assert response.status == 200
    spec = await response.json()
    assert spec["openapi"].startswith("3.1")
    served = {(method.lower(), path) for method, path in routes(api.app)}
    described = {(method, path) for path, item in spec["paths"].items() for method in item}
    assert described == served
    undocumented = [f"{m.upper()} {p}" for p, item in spec["paths"].items()
                    for m, op in item.items() if op.get("x-undocumented")]
    assert undocumented == [], "add a Route to llamahomed/http/routes.py"
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/health"]["get"]["security"] == []
    process = spec["paths"]["/api/v1/process"]["post"]
    assert process["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ProcessRequest"}
    assert process["responses"]["429"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorEnvelope"}
    assert "Retry-After" in process["responses"]["429"]["headers"]
    request_schema = spec["components"]["schemas"]["ProcessRequest"]
    assert "required" not in request_schema  # a prompt or messages, checked by a validator
    assert {"prompt", "messages"} <= set(request_schema["properties"])
    assert request_schema["additionalProperties"] is False


async def test_the_document_needs_a_token(api: Any) -> None:
    response = await api.get("/api/v1/openapi.json")
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "authentication_error"


def test_a_route_added_later_appears_and_is_flagged_until_described(settings: Any) -> None:
    from aiohttp import web

    from llamahomed.http.route import Operation, Route

    app = create_app(settings)

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_delete("/api/v1/things/{thing_id}", handler)
    spec = build_spec(app)
    op = spec["paths"]["/api/v1/things/{thing_id}"]["delete"]
    assert op["x-undocumented"] is True
    assert op["parameters"][0]["name"] == "thing_id"
    app[ROUTES].add(Route("DELETE", "/api/v1/things/{thing_id}", handler, "admin",
                          Operation("Delete a thing")))
    described = build_spec(app)
    op = described["paths"]["/api/v1/things/{thing_id}"]["delete"]
    assert "x-undocumented" not in op and "403" in op["responses"]


# ---- schemathesis against the real daemon process


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, tiny_model_file: Path) -> Iterator[RunningDaemon]:
    """``llamahomed start`` with the tiny model, small max_tokens, and limits that fuzzing
    will not exhaust (the admin token is enterprise tier)."""
    home = tmp_path_factory.mktemp("fuzz")
    models = home / "models"
    models.mkdir()
    os.link(tiny_model_file, models / TINY_MODEL_FILE)
    config = home / "config.toml"
    config.write_text(
        f'[model_settings]\ndefault_model = "{TINY_MODEL_ID}"\nmax_tokens = 4\n'
        "[system_settings]\nmax_tokens_limit = 16\nn_slots = 4\n"
        "[rate_limits.tiers.basic]\n[rate_limits.tiers.enterprise]\nrpm = 1000000\nburst = 100000\n")
    env = clean_environ()
    env.update(LLAMAHOME_STATE_DIR=str(home / "state"), LLAMAHOME_DATA_DIR=str(home / "data"),
               LLAMAHOME_CONFIG_FILE=str(config), LLAMAHOME_INSTALL_DEFAULT_MODEL="false",
               LLAMAHOME_LOG_LEVEL="warning")
    with start_daemon(home, env, args=["--models-dir", str(models)], check=False) as running:
        yield running
    text = running.output()  # the daemon's own words when something went wrong
    assert "unhandled_error" not in text, text[-4000:]


@dataclass
class FuzzReport:
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _fuzz(daemon: RunningDaemon, only: set[str] | None, skip: set[str],
          check_limits: bool = True) -> FuzzReport:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance,
                                                   negative_data_rejection,
                                                   response_schema_conformance,
                                                   status_code_conformance)

    auth = {"Authorization": f"Bearer {daemon.token}"}
    schema = schemathesis.openapi.from_url(f"{daemon.url}/api/v1/openapi.json", headers=auth,
                                           timeout=10)
    report = FuzzReport()
    session = requests.Session()

    def run(operation: Any, mode: Any, examples: int) -> None:
        checks = [not_a_server_error, status_code_conformance, content_type_conformance,
                  response_schema_conformance]
        if mode == schemathesis.GenerationMode.NEGATIVE:
            checks.append(negative_data_rejection)

        @settings(max_examples=examples, database=None, deadline=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def one(case: Any) -> None:
            report.cases += 1
            response = case.call(base_url=daemon.url, session=session, headers=auth, timeout=60)
            report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
            where = f"{operation.label} [{mode}] -> {response.status_code}"
            try:
                case.validate_response(response, checks=checks)
            except BaseExceptionGroup as exc:  # schemathesis's FailureGroup: reported below
                report.failures.append(f"{where}: {str(exc)[:600]}")
            limited = (check_limits and operation.path != "/health"
                       and response.status_code != 401)
            present = {name.lower() for name in response.headers}
            missing = [h for h in LIMIT_HEADERS if h.lower() not in present] if limited else []
            if missing or "x-request-id" not in present:
                report.failures.append(f"{where}: headers missing: {missing or 'x-request-id'}")
            if response.status_code >= 400:
                try:
                    body = json.loads(response.content)
                except ValueError:
                    body = None
                error = body.get("error") if isinstance(body, dict) else None
                shape = ({"type", "message"} if operation.path.startswith("/v1/messages")
                         else {"code", "message", "details"})  # Anthropic's routes: its shape
                if not (isinstance(error, dict) and set(error) == shape):
                    report.failures.append(f"{where}: not the error envelope: {response.text[:300]}")
                if response.status_code in (429, 503) and "retry-after" not in present:
                    report.failures.append(f"{where}: no Retry-After")

        try:
            one()
        except Unsatisfiable:
            assert mode == schemathesis.GenerationMode.NEGATIVE  # no input to get wrong
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in skip or (only is not None and operation.label not in only):
            continue
        run(operation, schemathesis.GenerationMode.POSITIVE, POSITIVE_CASES)
        run(operation, schemathesis.GenerationMode.NEGATIVE, NEGATIVE_CASES)
    return report


def test_schemathesis_finds_no_server_error_and_every_error_is_an_envelope(
        daemon: RunningDaemon) -> None:
    # pull is skipped: a fuzzed catalog id would start a real download from the internet; the
    # OpenAI routes answer in OpenAI's error shape (tests/http/test_openai.py), the WebSocket
    # route only upgrades (tests/http/test_ws.py)
    skip = {"POST /api/v1/config", "POST /api/v1/models/pull", "GET /api/v1/ws",
            "POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models",
            "GET /v1/models/{model_id}", "POST /v1/embeddings", "POST /v1/responses/input_tokens",
            # the console's static files (tests/http/test_console_routes.py)
            "GET /ui", "GET /ui/", "GET /ui/{name}", "POST /api/v1/console/login"}
    # the routes of dialects with their own error shape (Ollama's: tests/http/ollama/), pull,
    # delete and create among them
    skip |= {f"{r.method} {r.path}" for r in ROUTE_ROWS if r.errors == "ollama"}
    report = _fuzz(daemon, only=None, skip=skip)
    print(f"schemathesis: {report.cases} cases, statuses {sorted(report.statuses.items())}")
    assert report.cases >= 200
    assert not [s for s in report.statuses if s >= 500], report.statuses
    assert report.failures == [], "\n".join(report.failures[:20])
    assert daemon.proc.poll() is None
    assert 200 in report.statuses


def test_schemathesis_on_the_config_endpoint(daemon: RunningDaemon) -> None:
    """Last, because what it writes (random valid settings) would change the other runs."""
    # random valid configs may switch rate limits off, so their headers are not required here
    report = _fuzz(daemon, only={"POST /api/v1/config"}, skip=set(), check_limits=False)
    print(f"schemathesis (config): {report.cases} cases, statuses {sorted(report.statuses.items())}")
    assert report.cases >= 30
    assert report.failures == [], "\n".join(report.failures[:20])
    assert requests.get(f"{daemon.url}/health", timeout=5).ok
