"""Guardrails at every boundary: PII redaction, YARA + classifier injection screening, tool-result
quarantine, NeMo Guardrails checks and Llama Guard, run as one pipeline per point.

    from flotilla.guardrails import Guardrails, RailPoint
    rails = Guardrails(model_resolver=lambda alias: registry.resolve(alias).client)
    text = await rails.check(RailPoint.INPUT, text, workflow="document_triage")
"""

from flotilla.guardrails.base import GuardrailViolation, Rail, RailPoint, Verdict
from flotilla.guardrails.config import RailsConfig, load_rails_config
from flotilla.guardrails.pipeline import Guardrails, RailsPipeline, RailsReport

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
