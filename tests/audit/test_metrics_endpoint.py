"""`/metrics` on `flotilla serve`: a run through the real runtime (its model aliases on a scripted
OpenAI-compatible server), then the Prometheus text scraped over real HTTP, behind its token,
and parsed with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flotilla.graphs import load_workflow
from flotilla.runtime.serve import create_app
from flotilla.runtime.settings import load_settings
from tests.graphs.tiers import GOOD, write_workflow
from tests.support.scripted_openai import Reply, ScriptedOpenAI
from tests.support.servers import serve_app

METRICS_TOKEN, AUDIT_TOKEN = "metrics-token-for-tests-0001", "audit-token-for-tests-0002"


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    model = ScriptedOpenAI(script=[Reply("not json")], default=lambda body: Reply(json.dumps(GOOD)), model="small")
    with serve_app(model.app()) as model_url:
        endpoint = {"provider": "openai-compatible", "base_url": f"{model_url}/v1", "model": "small", "max_retries": 0}
        (tmp_path / "flotilla.yaml").write_text(yaml.safe_dump({"models": {"specialist": endpoint, "frontier": endpoint}}))
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("FLOTILLA_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("FLOTILLA_AUDIT_CONTENT", "off")
        monkeypatch.setenv("FLOTILLA_METRICS_TOKEN", METRICS_TOKEN)
        monkeypatch.setenv("FLOTILLA_AUDIT_TOKEN", AUDIT_TOKEN)
        app = create_app(load_settings())
        runtime = app.state.runtime
        workflow = load_workflow(str(write_workflow(tmp_path, model=["specialist", "frontier"])))

        async def run_once() -> str:
            result = await runtime.runner.run(workflow, "Invoice INV-1 from Acme Ltd, total 12.50 GBP.")
            await runtime.runner.aclose()
            return result.status

        assert asyncio.run(run_once()) == "succeeded"
        try:
            with serve_app(app) as url:
                yield url
        finally:
            runtime.close()


def test_metrics_needs_its_token_and_parses_as_prometheus_text(served: str) -> None:
    with httpx.Client(base_url=served) as http:
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers={"Authorization": "Bearer not-the-token"}).status_code == 401
        assert http.get("/metrics", headers={"Authorization": f"Bearer {AUDIT_TOKEN}"}).status_code == 200  # the compliance role may read it too
        scraped = http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    step = {"flotilla_workflow": "tiered", "gen_ai_agent_name": "decide", "flotilla_model_alias": "specialist", "flotilla_model_version": "small"}

    def value(family: str, suffix: str, **labels: str) -> float:
        return sum(s.value for s in families[family].samples if s.name.endswith(suffix) and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("flotilla_agent_requests", "_total", **step) == 1
    assert value("flotilla_agent_schema_first_try", "_total", **step, flotilla_result="fail") == 1  # "not json" first
    assert value("flotilla_agent_repairs", "_total", **step) == 1
    assert value("flotilla_agent_verifications", "_total", **step, flotilla_result="pass") == 1
    assert "flotilla_agent_escalations" not in families or value("flotilla_agent_escalations", "_total") == 0
    assert value("gen_ai_client_operation_duration_seconds", "_count", gen_ai_operation_name="chat", gen_ai_provider_name="openai",
                 gen_ai_request_model="small") == 2  # the reply and its repair
    assert value("gen_ai_client_token_usage", "_count", gen_ai_token_type="input") == 2
