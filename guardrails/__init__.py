"""Guardrails at every boundary: PII redaction, YARA + classifier injection screening, tool-result
quarantine, NeMo Guardrails checks and Llama Guard, run as one pipeline per point.

    from guardrails import Guardrails, RailPoint
    rails = Guardrails(model_resolver=lambda alias: registry.resolve(alias).client)
    text = await rails.check(RailPoint.INPUT, text, workflow="document_triage")
"""

from guardrails.base import GuardrailViolation, Rail, RailPoint, Verdict
from guardrails.config import RailsConfig, load_rails_config
from guardrails.pipeline import Guardrails, RailsPipeline, RailsReport

__all__ = [
    "Guardrails",
    "RailsPipeline",
    "RailsReport",
    "RailsConfig",
    "load_rails_config",
    "RailPoint",
    "Verdict",
    "Rail",
    "GuardrailViolation",
]
