"""The tool loop on the real embedded model (SmolLM2-135M under xgrammar) against the real
ledger server. The model is weak, so this checks what the constraint guarantees — every turn
is a well-formed action, every call's arguments pass the tool's schema, the answer fits the
output schema — not the quality of its lookups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import validators

from flotilla.agents.tool_loop import action_schema, run_tool_loop
from tests.mcp.helpers import ledger_config
from flotilla.tools import open_hub

pytestmark = pytest.mark.model

OUTPUT = {
    "type": "object",
    "properties": {"vendor_id": {"type": "string", "maxLength": 12}, "po_status": {"type": "string", "maxLength": 20}},
    "required": ["vendor_id", "po_status"],
    "additionalProperties": False,
}
MESSAGES = [
    {"role": "system", "content": "You check supplier invoices against the ledger. Look up the purchase order with a tool, then answer."},
    {"role": "user", "content": "Invoice INV-2026-0412 from Northwind Office Supplies Ltd. references purchase order PO-7781. What are the vendor id and the PO status?"},
]


@pytest.fixture(scope="session")
def embedded_client():
    from flotilla.agents.models.embedded import EmbeddedClient, get_engine
    from flotilla.runtime.settings import Settings

    return EmbeddedClient(get_engine(Settings().cache_dir), max_tokens=160)


async def test_embedded_model_drives_the_loop_within_the_constraint(embedded_client, lock_file: Path) -> None:
    async with open_hub({"ledger": ledger_config()}, lock_file=lock_file) as hub:
        view = hub.view(["ledger.get_purchase_order", "ledger.find_vendor"])
        usable = await view.usable()
        result = await run_tool_loop(MESSAGES, view, embedded_client, OUTPUT, max_steps=3, max_tokens=160)

    schema = action_schema(usable, OUTPUT)
    action = validators.validator_for(schema)(schema)
    for reply in result.model_results:
        if reply.finish_reason == "stop":  # a reply cut by max_tokens is the one thing the grammar cannot prevent
            assert action.is_valid(json.loads(reply.text)), reply.text
    assert all(call.error_code != "tool_arguments_invalid" for call in result.calls)
    assert all(call.tool in {"ledger.get_purchase_order", "ledger.find_vendor"} for call in result.calls)
    assert validators.validator_for(OUTPUT)(OUTPUT).is_valid(result.output)
    assert result.model_results[-1].provider == "embedded" and result.model_results[-1].local
