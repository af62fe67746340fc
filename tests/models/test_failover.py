"""Endpoint failure isolation against real local HTTP servers that fail, hang and recover:
per-replica circuit breakers (open, half-open, close), replica failover, least-outstanding
balancing, health probes and the per-call deadline. Assertions are about behaviour — which
replica answered, breaker states, request counts — never about how long anything took."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flotilla.agents.models.base import ChatRequest, ModelBadResponse, ModelTimeout, ModelUnavailable
from flotilla.agents.models.endpoints import BreakerSettings, HealthCheck
from flotilla.agents.models.openai_compat import OpenAICompatibleClient
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.audit.errors import ConfigError
from flotilla.audit.runs import RunStore
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.setup import audit_exporters
from flotilla.audit.store import AuditStore
from flotilla.audit.telemetry import Telemetry
from flotilla.graphs import WorkflowRunner, load_workflow
from flotilla.runtime.settings import load_settings
from tests.support.scripted_openai import Reply, ScriptedOpenAI
from tests.support.servers import free_port, serve_app

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}], json_schema={"type": "object"}, schema_name="Ok")
OK = Reply('{"ok": true}')


class Switch:
    """A server behaviour flipped by the test: failing (HTTP `status`) or answering."""

    def __init__(self, status: int = 500) -> None:
        self.status = status

    def __call__(self, body: dict[str, Any]) -> Reply:
        return OK if self.status == 200 else Reply(status=self.status)


def client(*urls: str, failures: int = 3, reset_s: float = 30.0, **options: Any) -> OpenAICompatibleClient:
    options.setdefault("max_retries", 0)
    return OpenAICompatibleClient(
        base_url=[f"{u}/v1" for u in urls], model="specialist", backoff_s=0.01,
        breaker=BreakerSettings(failures=failures, reset_s=reset_s), **options,
    )


@contextmanager
def chat_span() -> Iterator[InMemorySpanExporter]:
    """Calls inside run under a `chat …` span whose attributes and events the test can read."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("chat specialist"):
        yield exporter


def events(exporter: InMemorySpanExporter, name: str) -> list[dict[str, Any]]:
    [span] = exporter.get_finished_spans()
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


async def answered_by(model: OpenAICompatibleClient) -> str:
    result = await model.complete(REQUEST)
    assert json.loads(result.text) == {"ok": True}
    return result.extra["endpoint"]


# -- circuit breaker -------------------------------------------------------------------------


async def test_breaker_opens_after_consecutive_failures_then_refuses_without_calling() -> None:
    server = ScriptedOpenAI(default=Switch(500))
    with serve_app(server.app()) as url:
        model = client(url, failures=3)
        try:
            for _ in range(3):
                with pytest.raises(ModelUnavailable, match="HTTP 500"):
                    await model.complete(REQUEST)
            assert model.pool.states() == {f"{url}/v1": "opened"}
            with pytest.raises(ModelUnavailable, match="circuit breaker is open") as caught:
                await model.complete(REQUEST)
        finally:
            await model.aclose()
    assert len(server.requests) == 3  # the fourth call never reached the server
    assert "breaker:" in str(caught.value)  # says what to tune


async def test_half_open_after_the_reset_then_closed_on_success() -> None:
    behaviour = Switch(503)
    server = ScriptedOpenAI(default=behaviour)
    with serve_app(server.app()) as url, chat_span() as exporter:
        model = client(url, failures=2, reset_s=0.2)
        try:
            for _ in range(2):
                with pytest.raises(ModelUnavailable):
                    await model.complete(REQUEST)
            assert model.pool.states() == {f"{url}/v1": "opened"}
            behaviour.status = 200  # the endpoint recovers
            await asyncio.sleep(0.3)  # past reset_s: the next call is let through (half-open)
            assert await answered_by(model) == f"{url}/v1"
            assert model.pool.states() == {f"{url}/v1": "closed"}
        finally:
            await model.aclose()
    states = [e["flotilla.breaker.state"] for e in events(exporter, "flotilla.breaker.state_changed")]
    assert states == ["opened", "half-opened", "closed"]
    [span] = exporter.get_finished_spans()
    assert span.attributes["flotilla.endpoint"] == f"{url}/v1"
    assert span.attributes["flotilla.breaker.state"] == "closed"


async def test_a_failure_while_half_open_opens_the_breaker_again() -> None:
    server = ScriptedOpenAI(default=Switch(500))
    with serve_app(server.app()) as url:
        model = client(url, failures=2, reset_s=0.2)
        try:
            for _ in range(2):
                with pytest.raises(ModelUnavailable):
                    await model.complete(REQUEST)
            await asyncio.sleep(0.3)
            with pytest.raises(ModelUnavailable, match="HTTP 500"):  # the one trial call fails
                await model.complete(REQUEST)
            assert model.pool.states() == {f"{url}/v1": "opened"}
            with pytest.raises(ModelUnavailable, match="circuit breaker is open"):
                await model.complete(REQUEST)
        finally:
            await model.aclose()
    assert len(server.requests) == 3


@pytest.mark.parametrize("status", [400, 404, 422, 429])
async def test_client_errors_never_trip_the_breaker(status: int) -> None:
    server = ScriptedOpenAI(default=Switch(status))
    with serve_app(server.app()) as url:
        model = client(url, failures=2)
        try:
            for _ in range(4):
                with pytest.raises((ModelBadResponse, ModelUnavailable), match=f"HTTP {status}"):
                    await model.complete(REQUEST)
            assert model.pool.states() == {f"{url}/v1": "closed"}
        finally:
            await model.aclose()
    assert len(server.requests) == 4


async def test_retries_that_fail_count_against_the_breaker() -> None:
    server = ScriptedOpenAI(default=Switch(502))
    with serve_app(server.app()) as url:
        model = client(url, failures=3, max_retries=5)
        try:
            with pytest.raises(ModelUnavailable):
                await model.complete(REQUEST)
        finally:
            await model.aclose()
    # Three failed attempts opened the breaker; the retry policy stopped there instead of hammering.
    assert len(server.requests) == 3


# -- replicas --------------------------------------------------------------------------------


async def test_a_refused_replica_fails_over_at_once_and_is_skipped_while_open() -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    server = ScriptedOpenAI(default=Switch(200))
    with serve_app(server.app()) as live, chat_span() as exporter:
        model = client(dead, live, failures=2)
        try:
            answers = [await answered_by(model) for _ in range(6)]
            assert answers == [f"{live}/v1"] * 6
            assert model.pool.states() == {f"{dead}/v1": "opened", f"{live}/v1": "closed"}
        finally:
            await model.aclose()
    assert len(server.requests) == 6
    failovers = events(exporter, "flotilla.endpoint.failover")
    # Only the calls that hit the dead replica before its breaker opened failed over.
    assert [f["flotilla.endpoint"] for f in failovers] == [f"{dead}/v1"] * 2
    assert failovers[0]["error.type"] == "APIConnectionError"


async def test_a_recovered_replica_rejoins_after_the_reset() -> None:
    port = free_port()
    first, second = ScriptedOpenAI(default=Switch(200)), ScriptedOpenAI(default=Switch(200))
    with serve_app(first.app()) as live:
        model = client(f"http://127.0.0.1:{port}", live, failures=1, reset_s=0.2)
        try:
            await answered_by(model)
            await answered_by(model)
            assert model.pool.states()[f"http://127.0.0.1:{port}/v1"] == "opened"
            with serve_app(second.app(), port=port):  # the dead replica comes back
                await asyncio.sleep(0.3)
                answers = {await answered_by(model) for _ in range(4)}
            assert answers == {f"{live}/v1", f"http://127.0.0.1:{port}/v1"}
        finally:
            await model.aclose()
    assert second.requests  # traffic spread to the recovered replica again


async def test_every_replica_down_is_unavailable_then_refused_without_connecting() -> None:
    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    model = client(*urls, failures=1, max_retries=3)
    try:
        with pytest.raises(ModelUnavailable, match="cannot reach"):
            await model.complete(REQUEST)
        assert set(model.pool.states().values()) == {"opened"}
        with pytest.raises(ModelUnavailable, match="every replica of model alias 'specialist' is failing"):
            await model.complete(REQUEST)
    finally:
        await model.aclose()


async def test_concurrent_calls_spread_over_replicas_by_outstanding_requests() -> None:
    servers = [ScriptedOpenAI(default=lambda body: Reply('{"ok": true}', delay_s=0.2)) for _ in range(2)]
    with serve_app(servers[0].app()) as a, serve_app(servers[1].app()) as b:
        model = client(a, b)
        try:
            answers = await asyncio.gather(*(answered_by(model) for _ in range(6)))
        finally:
            await model.aclose()
    assert sorted(answers) == sorted([f"{a}/v1"] * 3 + [f"{b}/v1"] * 3)
    assert [len(s.requests) for s in servers] == [3, 3]


async def test_a_slow_replica_gets_fewer_calls_than_a_fast_one() -> None:
    slow = ScriptedOpenAI(default=lambda body: Reply('{"ok": true}', delay_s=1.0))
    fast = ScriptedOpenAI(default=Switch(200))
    with serve_app(slow.app()) as s, serve_app(fast.app()) as f:
        model = client(s, f)
        try:
            calls = []
            for _ in range(8):  # calls arrive one after another while the slow ones are in flight
                calls.append(asyncio.create_task(answered_by(model)))
                await asyncio.sleep(0.05)
            await asyncio.gather(*calls)
        finally:
            await model.aclose()
    assert len(slow.requests) < len(fast.requests)
    assert len(slow.requests) + len(fast.requests) == 8


# -- deadline --------------------------------------------------------------------------------


async def test_the_deadline_bounds_a_call_when_every_replica_hangs() -> None:
    hanging = [ScriptedOpenAI(default=lambda body: Reply('{"ok": true}', delay_s=3)) for _ in range(2)]
    with serve_app(hanging[0].app()) as a, serve_app(hanging[1].app()) as b:
        model = client(a, b, failures=1, max_retries=3, timeout_s=60)
        try:
            with pytest.raises(ModelTimeout, match="did not answer within 0.3s"):
                await model.complete(ChatRequest(messages=REQUEST.messages, timeout_s=0.3))
            # The slow replica was charged with the timeout; the other one was never reached
            # because the deadline was already spent — no retry outlives the call's deadline.
            assert sorted(model.pool.states().values()) == ["closed", "opened"]
        finally:
            await model.aclose()
    assert sum(len(s.requests) for s in hanging) == 1


async def test_cancelling_a_call_from_outside_is_not_the_replicas_fault() -> None:
    server = ScriptedOpenAI(default=lambda body: Reply('{"ok": true}', delay_s=3))
    with serve_app(server.app()) as url:
        model = client(url, failures=1)
        try:
            call = asyncio.create_task(model.complete(REQUEST))
            while not server.requests:
                await asyncio.sleep(0.01)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert model.pool.states() == {f"{url}/v1": "closed"}
        finally:
            await model.aclose()


# -- health probes ---------------------------------------------------------------------------


async def test_health_probes_open_a_dead_replica_and_close_a_recovered_one() -> None:
    port = free_port()
    dead = f"http://127.0.0.1:{port}"
    server = ScriptedOpenAI(default=Switch(200))
    with serve_app(server.app()) as live:
        model = client(dead, live)
        try:
            async with httpx.AsyncClient() as http:
                await model.pool.probe(http)
                assert model.pool.states() == {f"{dead}/v1": "opened", f"{live}/v1": "closed"}
                assert await answered_by(model) == f"{live}/v1"  # no call wasted on the dead one
                with serve_app(ScriptedOpenAI().app(), port=port):
                    await model.pool.probe(http)
                    assert model.pool.states() == {f"{dead}/v1": "closed", f"{live}/v1": "closed"}
        finally:
            await model.aclose()
    assert len(server.requests) == 1


async def test_background_health_probes_run_on_their_period() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    server = ScriptedOpenAI(default=Switch(200))
    with serve_app(server.app()) as live:
        model = client(dead, live, health=HealthCheck(period_s=0.05, path="/v1/models"))
        try:
            await answered_by(model)  # the first call starts the probes
            for _ in range(200):
                if model.pool.states()[f"{dead}/v1"] == "opened":
                    break
                await asyncio.sleep(0.02)
            assert model.pool.states() == {f"{dead}/v1": "opened", f"{live}/v1": "closed"}
        finally:
            await model.aclose()


# -- the audit trail ------------------------------------------------------------------------

ONE_STEP = """
name: one_step
description: One model step on a replicated alias.
input: {type: text, description: any text}
agents:
  note:
    role: Writes a short note.
    instructions: prompt.md
    output_schema: flotilla.agents.document_triage.schemas:Note
    model: specialist
edges: []
"""
NOTE = Reply(json.dumps({"subject": "Invoice received", "body": "The invoice was received and is being checked."}))


async def test_a_workflow_run_records_the_failover_in_the_audit_trail(tmp_path) -> None:
    (tmp_path / "prompt.md").write_text("Write a short note about the text.\n")
    (tmp_path / "one_step.yaml").write_text(ONE_STEP)
    dead = f"http://127.0.0.1:{free_port()}"
    server = ScriptedOpenAI(default=lambda body: NOTE)
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    with serve_app(server.app()) as live:
        endpoint = ModelEndpoint(provider="openai-compatible", base_url=[f"{dead}/v1", f"{live}/v1"], model="note", max_retries=0)
        registry = ModelRegistry(
            {"specialist": endpoint},
            embedded=lambda: pytest.fail("the alias has replicas; nothing may fall back to the embedded model"),
            http_client=lambda e, key: OpenAICompatibleClient(base_url=e.replicas, model=e.model, max_retries=0, breaker=e.breaker),
        )
        telemetry = Telemetry(audit_exporters(store, Sanitizer("off")))
        runner = WorkflowRunner(registry=registry, telemetry=telemetry, runs=RunStore(f"sqlite:///{tmp_path / 'runs.sqlite'}"),
                                checkpoint_path=tmp_path / "cp.sqlite", max_input_bytes=10_000)
        try:
            results = [await runner.run(load_workflow(tmp_path / "one_step.yaml"), "Invoice INV-1, total 12.00") for _ in range(2)]
        finally:
            await runner.aclose()
            telemetry.shutdown()
    assert [r.status for r in results] == ["succeeded", "succeeded"], [r.error for r in results]
    chats = [
        rec.payload for r in results for rec in store.run_records(r.run_id)
        if rec.kind == "span" and rec.payload["name"].startswith("chat ")
    ]
    store.close()
    assert [c["attributes"]["flotilla.endpoint"] for c in chats] == [f"{live}/v1"] * 2
    failovers = [e["attributes"] for c in chats for e in c["events"] if e["name"] == "flotilla.endpoint.failover"]
    # The balancer alternates, so one of the two runs met the dead replica first and failed over.
    assert [(f["flotilla.model_alias"], f["flotilla.endpoint"]) for f in failovers] == [("specialist", f"{dead}/v1")]


# -- configuration ---------------------------------------------------------------------------


def test_replicas_and_breaker_settings_from_flotilla_yaml(tmp_path, monkeypatch) -> None:
    config = tmp_path / "flotilla.yaml"
    config.write_text(
        "models:\n"
        "  specialist-extract:\n"
        "    provider: openai-compatible\n"
        "    model: extract\n"
        "    base_url: [http://vllm-a:8000/v1, http://vllm-b:8000/v1]\n"
        "    breaker: {failures: 2, reset_s: 5}\n"
        "    health: {period_s: 10, path: /health}\n"
    )
    monkeypatch.setenv("FLOTILLA_CONFIG", str(config))
    endpoint = load_settings().models["specialist-extract"]
    assert endpoint.replicas == ["http://vllm-a:8000/v1", "http://vllm-b:8000/v1"]
    assert (endpoint.breaker.failures, endpoint.breaker.reset_s, endpoint.health.period_s) == (2, 5.0, 10.0)
    assert ModelEndpoint(base_url="http://one/v1").replicas == ["http://one/v1"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("provider: openai-compatible\n    base_url: []", "empty list"),
        ("provider: openai-compatible\n    base_url: [http://a/v1, http://a/v1]", "listed twice"),
        ("provider: anthropic\n    model: claude\n    base_url: [http://a/v1, http://b/v1]", "needs provider openai-compatible"),
        ("provider: openai-compatible\n    base_url: http://a/v1\n    breaker: {failures: 0}", "failures"),
        ("provider: openai-compatible\n    base_url: http://a/v1\n    breaker: {reset: 3}", "reset"),
    ],
)
def test_bad_replica_and_breaker_settings_say_what_to_fix(tmp_path, monkeypatch, entry: str, message: str) -> None:
    config = tmp_path / "flotilla.yaml"
    config.write_text(f"models:\n  frontier:\n    {entry}\n")
    monkeypatch.setenv("FLOTILLA_CONFIG", str(config))
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings()
    assert "models.frontier" in str(caught.value)
