import pytest

from flotilla.audit.errors import ConfigError
from flotilla.guardrails.base import RailPoint
from flotilla.guardrails.llama_guard import HAZARD_CATEGORIES, LlamaGuardRail, build_prompt, parse_output

from .tiny_llama_guard import build_tiny_llama_guard


@pytest.mark.parametrize(
    ("raw", "safe", "categories"),
    [
        ("safe", True, ()),
        ("\n\nsafe", True, ()),
        ("unsafe\nS1,S10", False, ("S1", "S10")),
        ("unsafe\nS14", False, ("S14",)),
        (" unsafe \n s2, S9 ", False, ("S2", "S9")),
        ("unsafe", False, ()),
        ("I cannot help with that", None, ()),
        ("", None, ()),
    ],
)
def test_parse_real_format_outputs(raw: str, safe: bool | None, categories: tuple[str, ...]) -> None:
    result = parse_output(raw)
    assert (result.safe, result.categories) == (safe, categories)


def test_prompt_has_the_14_categories_and_the_role() -> None:
    prompt = build_prompt("hello", role="Agent")
    assert all(f"{code}: {name}" in prompt for code, name in HAZARD_CATEGORIES.items()) and len(HAZARD_CATEGORIES) == 14
    assert "unsafe content in 'Agent' messages" in prompt and "Agent: hello" in prompt
    assert "ONLY THE LAST Agent message" in prompt and prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    with pytest.raises(ConfigError):
        build_prompt("x", categories=["S99"])


def test_no_weights_reports_disabled_not_safe() -> None:
    verdict = LlamaGuardRail(None).check_sync("anything", point=RailPoint.INPUT)
    assert verdict.enabled is False and verdict.rule == "disabled" and "no Llama Guard weights" in verdict.detail


@pytest.fixture(scope="module")
def tiny_guard(tmp_path_factory) -> LlamaGuardRail:
    return LlamaGuardRail(build_tiny_llama_guard(tmp_path_factory.mktemp("llama-guard")))


def test_tiny_checkpoint_runs_load_prompt_generate_parse(tiny_guard: LlamaGuardRail) -> None:
    tokenizer, _ = tiny_guard._load()
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Summarise invoice INV-2041"}], tokenize=False)
    assert rendered == build_prompt("Summarise invoice INV-2041", role="User")  # our prompt = the template's
    verdict = tiny_guard.check_sync("Summarise invoice INV-2041", point=RailPoint.OUTPUT)
    expected = parse_output(verdict.attributes["raw"])
    assert verdict.enabled and verdict.attributes["role"] == "Agent"
    assert verdict.allowed == (expected.safe is True) and list(expected.categories) == verdict.attributes["categories"]


def test_missing_weights_directory_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="Llama-Guard-3"):
        LlamaGuardRail(tmp_path / "nowhere").check_sync("x", point=RailPoint.INPUT)
