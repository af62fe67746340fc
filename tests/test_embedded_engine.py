"""The embedded engine on the real SmolLM2 model: schema-valid JSON, concurrency, cache, timeouts."""

from __future__ import annotations

import json
import threading
import time

import jsonschema
import pytest
import torch

from flotilla.agents.models.base import ChatRequest, ModelClient, ModelTimeout
from flotilla.agents.models.embedded import EmbeddedClient, EmbeddedEngine, InvalidModelRequest, InvalidSchema

pytestmark = pytest.mark.model

INVOICE_TEXT = (
    "INVOICE INV-2026-0412 from Northwind Office Supplies Ltd. Date 2026-11-02, due 2026-12-02. "
    "40 x A4 copier paper at 24.50 = 980.00; 12 x Toner cartridge at 61.00 = 732.00. Total GBP 1712.00."
)
INVOICE = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string", "maxLength": 60},
        "invoice_number": {"type": "string", "maxLength": 30},
        "currency": {"type": "string", "enum": ["GBP", "EUR", "USD"]},
        "line_items": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"description": {"type": "string", "maxLength": 40}, "amount": {"type": "number"}},
                "required": ["description", "amount"],
            },
        },
        "total": {"type": "number"},
    },
    "required": ["vendor", "invoice_number", "currency", "line_items", "total"],
}
DECISION = {
    "type": "object",
    "properties": {
        "decision": {"type": "string", "enum": ["approve", "hold", "reject"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["decision", "confidence"],
}
NOTE = {
    "type": "object",
    "properties": {"note": {"type": "string", "maxLength": 160}},
    "required": ["note"],
}
CASES = {
    # Every field of INVOICE is bounded (strings, items, and numbers: _grammar._bounded), so its
    # longest reply is ~490 characters: the grammar must close it within this budget whatever the
    # model writes. (220, enough for the replies the int8 model gave on one CPU, was not on another.)
    "invoice": (INVOICE, f"Extract the invoice fields as JSON.\n\n{INVOICE_TEXT}", 500),
    "decision": (DECISION, "An invoice of 1712 GBP matches its purchase order. Decide: approve, hold or reject.", 40),
    "note": (NOTE, "Write a one-sentence note telling Anna her invoice INV-2026-0412 was approved.", 80),
}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("case", sorted(CASES))
def test_constrained_output_is_schema_valid(embedded_engine: EmbeddedEngine, case: str) -> None:
    schema, prompt, max_tokens = CASES[case]
    result = embedded_engine.generate(user(prompt), json_schema=schema, max_tokens=max_tokens)
    assert result.finish_reason == "stop", result.text  # the grammar completed, not the token budget
    jsonschema.validate(json.loads(result.text), schema)
    assert result.input_tokens > 10 and result.output_tokens > 3


def test_unbounded_numbers_are_bounded_in_the_grammar_only() -> None:
    """A 135M model can run a number on to the token budget; the grammar holds numbers to ±10^15
    and integers to what a double holds exactly, where the schema sets no bound of its own."""
    import xgrammar
    from xgrammar.testing import _is_grammar_accept_string

    from flotilla.agents.models._grammar import _bounded

    schema = {"type": "object", "properties": {"amount": {"type": "number"}, "n": {"type": "integer"},
                                               "share": {"type": "number", "minimum": 0, "maximum": 1}},
              "required": ["amount", "n", "share"]}
    grammar = xgrammar.Grammar.from_json_schema(json.dumps(_bounded(schema)), any_whitespace=False, strict_mode=True)
    accepts = lambda text: _is_grammar_accept_string(grammar, text)  # noqa: E731
    assert accepts('{"amount": 2734.8, "n": 9007199254740991, "share": 0.5}')
    assert accepts('{"amount": -999999999999999.5, "n": -12, "share": 1}')
    assert not accepts('{"amount": 12000000000000000000, "n": 1, "share": 0.5}')  # the runaway number
    assert not accepts('{"amount": 1, "n": 90071992547409910, "share": 0.5}')
    assert not accepts('{"amount": 1, "n": 1, "share": 2}')  # the schema's own bound stands
    assert schema["properties"]["amount"] == {"type": "number"}  # the schema itself is left as given


def test_concurrent_requests_with_different_schemas_do_not_mix(embedded_engine: EmbeddedEngine) -> None:
    results: dict[str, object] = {}

    def ask(case: str) -> None:
        schema, prompt, max_tokens = CASES[case]
        try:
            results[case] = embedded_engine.generate(user(prompt), json_schema=schema, max_tokens=max_tokens)
        except Exception as exc:  # surfaced by the assertion below
            results[case] = exc

    threads = [threading.Thread(target=ask, args=(case,)) for case in ("decision", "note", "decision")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert set(results) == {"decision", "note"}
    for case, result in results.items():
        assert not isinstance(result, Exception), result
        jsonschema.validate(json.loads(result.text), CASES[case][0])


def test_unconstrained_generation_stops_at_end_of_turn_or_length(embedded_engine: EmbeddedEngine) -> None:
    result = embedded_engine.generate(user("Say hello in one short sentence."), max_tokens=40)
    assert result.finish_reason in ("stop", "length")
    assert result.text.strip() and "<|im_end|>" not in result.text
    capped = embedded_engine.generate(user("Count from one to one hundred in words."), max_tokens=5)
    assert capped.finish_reason == "length" and capped.output_tokens == 5


def test_greedy_decoding_is_deterministic(embedded_engine: EmbeddedEngine) -> None:
    schema, prompt, max_tokens = CASES["decision"]
    first = embedded_engine.generate(user(prompt), json_schema=schema, max_tokens=max_tokens)
    second = embedded_engine.generate(user(prompt), json_schema=schema, max_tokens=max_tokens)
    assert first.text == second.text


def test_bad_requests_raise_typed_errors(embedded_engine: EmbeddedEngine) -> None:
    with pytest.raises(InvalidSchema, match="invalid JSON schema"):
        embedded_engine.generate(user("hi"), json_schema={"type": "object", "properties": {"a": {"type": "nope"}}})
    with pytest.raises(InvalidModelRequest, match="messages is empty"):
        embedded_engine.generate([])
    with pytest.raises(InvalidModelRequest, match="role"):
        embedded_engine.generate([{"role": "robot", "content": "hi"}])


def test_warm_load_reads_the_safetensors_cache(embedded_engine: EmbeddedEngine) -> None:
    again = EmbeddedEngine(embedded_engine.cache_path.parent.parent)
    try:
        assert again.load_info["source"] == "cache"
        assert (embedded_engine.cache_path / "model.safetensors").is_file()
        prompt = user("Name one colour.")
        assert again.generate(prompt, max_tokens=8).text == embedded_engine.generate(prompt, max_tokens=8).text
    finally:
        again.close()


def test_lean_forward_matches_transformers(embedded_engine: EmbeddedEngine) -> None:
    """The own decode loop computes what transformers' LlamaForCausalLM computes (fp32)."""
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    from flotilla.agents.models._llama import LeanLlama, lean_fp32

    path = embedded_engine.cache_path
    reference = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True).eval()
    lean = LeanLlama(embedded_engine._model.shape, lean_fp32(load_file(path / "model.safetensors"), embedded_engine._model.shape))
    ids = embedded_engine.prompt_ids(user("What is an invoice?"))
    with torch.inference_mode():
        expected = reference(torch.tensor([ids])).logits[0, -1]
    cache = lean.new_cache(len(ids) + 1)
    # prefill in two chunks, to cover the chunked-prefill mask too
    lean.forward(torch.tensor(ids[:5]), cache)
    got = lean.forward(torch.tensor(ids[5:]), cache)
    assert torch.allclose(got, expected, atol=1e-3), (got - expected).abs().max()


async def test_client_answers_a_chat_request(embedded_engine: EmbeddedEngine) -> None:
    client = EmbeddedClient(embedded_engine, max_tokens=64)
    assert isinstance(client, ModelClient) and client.name == "embedded:SmolLM2-135M-Instruct"
    schema, prompt, _ = CASES["decision"]
    result = await client.complete(ChatRequest(messages=user(prompt), json_schema=schema, max_tokens=500, timeout_s=120))
    jsonschema.validate(json.loads(result.text), schema)
    assert (result.provider, result.local, result.model) == ("embedded", True, "SmolLM2-135M-Instruct")
    assert result.input_tokens > 0 and 0 < result.output_tokens <= 64


async def test_timeout_raises_model_timeout_and_frees_the_engine(embedded_engine: EmbeddedEngine) -> None:
    client = EmbeddedClient(embedded_engine)
    started = time.monotonic()
    with pytest.raises(ModelTimeout, match="did not answer within"):
        await client.complete(ChatRequest(messages=user("Write a long story about ships."), max_tokens=2000, timeout_s=0.3))
    assert time.monotonic() - started < 2.3
    # the timed-out generation stopped: the engine takes the next request straight away
    follow_up = embedded_engine.submit(user("Hi"), max_tokens=2)
    assert follow_up.result(timeout=30).output_tokens == 2
