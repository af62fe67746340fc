"""Guardrails at every boundary: PII redaction, YARA + classifier injection screening, tool-result
quarantine, NeMo Guardrails checks and Llama Guard, run as one pipeline per point.

    from flotilla.guardrails import Guardrails, RailPoint
    rails = Guardrails(model_resolver=lambda alias: registry.resolve(alias).client)
    text = await rails.check(RailPoint.INPUT, text, workflow="document_triage")

Names are loaded lazily, and each engine's libraries only when the engine is first built.
"""

from __future__ import annotations

from flotilla.audit.lazy import lazy_exports


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

_WHERE = {
    "Guardrails": "flotilla.guardrails.pipeline",
    "RailsPipeline": "flotilla.guardrails.pipeline",
    "RailsReport": "flotilla.guardrails.pipeline",
    "RailsConfig": "flotilla.guardrails.config",
    "load_rails_config": "flotilla.guardrails.config",
    "RailPoint": "flotilla.guardrails.base",
    "Verdict": "flotilla.guardrails.base",
    "Rail": "flotilla.guardrails.base",
    "GuardrailViolation": "flotilla.guardrails.base",
}


__getattr__ = lazy_exports(__name__, _WHERE)
