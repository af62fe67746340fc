"""A Python workflow for the tests of `flotilla serve` stopping and starting again: one model step
and a function step (api_flows' `decide_and_file`), its rail engines off (so each new serve process
starts in seconds)."""

from __future__ import annotations

from dataclasses import replace

from tests.support.api_flows import decide_and_file

RAILS_OFF = {engine: {"enabled": False} for engine in ("presidio", "yara", "injection_classifier", "content_safety", "tool_screen", "llama_guard", "nemo")}

decide_quietly = replace(decide_and_file, description="Decide on a document with a model, then file the decision (rails off).", rails=RAILS_OFF)
