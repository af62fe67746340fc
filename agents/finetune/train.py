"""LoRA fine-tuning of the embedded base model on the CPU (peft + transformers' Trainer).

The base is the HF-format fp32 folder the embedded engine caches (`hf_checkpoint`). The loss
covers only the assistant's answer (prompt tokens are masked with -100), tokenised exactly as
the engine tokenises a prompt (chat template, no extra special tokens). Checkpoints land in
`<out>/checkpoints/` every `save_steps`; `resume=True` continues from the last one, step count
and optimizer state included. The adapter is saved in the PEFT format that vLLM's
`--lora-modules` loads unchanged.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flotilla.agents.finetune.adapter import TARGETS
from flotilla.audit.errors import ConfigError, MissingExtra

__all__ = ["TrainOptions", "TrainReport", "train_adapter", "BASE_MODEL_ID"]

BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""Written as the adapter's `base_model_name_or_path`; the serving side checks it."""


@dataclass(slots=True)
class TrainOptions:
    rank: int = 8
    alpha: float = 16.0
    epochs: float = 2.0
    lr: float = 1e-3
    batch_size: int = 4
    max_length: int = 1024
    """Tokens per example (prompt + answer); longer examples are left out, and counted."""
    targets: tuple[str, ...] = TARGETS
    top_layers: int | None = None
    """Adapt only the top N decoder layers (None: all). Backward passes stop at the lowest adapted
    layer, so adapting the top half costs about a third less CPU per example."""
    save_steps: int = 20
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run every epoch); for tests and quick trials."""
    seed: int = 0
    resume: bool = False
    validate_generations: int = 8
    """Validation examples answered by the served adapter to measure the schema-valid rate."""


@dataclass(slots=True)
class TrainReport:
    adapter: str
    examples: int
    skipped_too_long: int
    steps: int
    resumed_from_step: int
    train_loss: float | None
    validation_loss: float | None
    schema_valid: float | None
    """Share of validation answers, generated unconstrained by the adapted model, that match the agent's schema."""
    exact: float | None
    """Share of those answers equal (as JSON) to the validation example's answer."""
    wall_s: float
    examples_per_s: float
    peak_rss_mb: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tokenized(tokenizer, example: dict[str, Any], max_length: int) -> dict[str, list[int]] | None:
    messages = example["messages"]
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ConfigError("the chat template does not extend the prompt with the answer; cannot mask the prompt")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    ids = prompt_ids + answer_ids
    if len(ids) > max_length:
        return None
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(prompt_ids) + answer_ids}


def _hide_foreign_datasets_folder() -> None:
    """A `datasets/` data folder on sys.path (this repository's, when run from its root) is found
    as a namespace package named `datasets`; transformers' Trainer then takes it for Hugging Face's
    `datasets` library. Mark the library absent unless it is really installed."""
    import importlib.util
    import sys

    if "datasets" not in sys.modules:
        spec = importlib.util.find_spec("datasets")
        if spec is not None and spec.origin is None:  # a namespace package: a plain folder, not the library
            sys.modules["datasets"] = None  # type: ignore[assignment]  # find_spec/import now say "not installed"


def train_adapter(
    examples: list[dict[str, Any]],
    validation: list[dict[str, Any]],
    out: Path,
    *,
    cache_dir: Path,
    options: TrainOptions,
    schema: dict[str, Any] | None = None,
    progress: Callable[[int, int, float | None], None] | None = None,
) -> TrainReport:
    """Train a LoRA adapter on `examples`, save it to `out`, and measure it on `validation`.

    Args:
        schema: the agent's output JSON schema, for the schema-valid rate (None: not measured).
        progress: called as (step, total_steps, last_loss) after each optimizer step.
    """
    MissingExtra.require("fine-tuning", "finetune", "torch", "transformers", "peft")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _hide_foreign_datasets_folder()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM, DataCollatorForSeq2Seq, PreTrainedTokenizerFast, Trainer, TrainerCallback, TrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback

    from flotilla.agents.models._weights import hf_checkpoint
    from flotilla.agents.models.quiet import quiet_model_libraries

    if options.rank < 1 or options.epochs <= 0 or options.lr <= 0:
        raise ConfigError("rank must be >= 1, epochs and lr > 0")
    quiet_model_libraries()
    started = time.perf_counter()
    base = hf_checkpoint(cache_dir)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(base, local_files_only=True)
    rows = [_tokenized(tokenizer, e, options.max_length) for e in examples]
    train_rows = [r for r in rows if r is not None]
    val_rows = [r for r in (_tokenized(tokenizer, e, options.max_length) for e in validation) if r is not None]
    skipped = len(rows) - len(train_rows)
    if not train_rows:
        raise ConfigError(f"every example is longer than --max-length {options.max_length} tokens; raise it")

    torch.manual_seed(options.seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, local_files_only=True)
    layers = model.config.num_hidden_layers
    top = min(options.top_layers or layers, layers)
    model = get_peft_model(
        model,
        LoraConfig(
            r=options.rank, lora_alpha=options.alpha, lora_dropout=0.05, target_modules=list(options.targets), task_type="CAUSAL_LM",
            layers_to_transform=list(range(layers - top, layers)) if top < layers else None,
        ),
    )
    checkpoints = out / "checkpoints"
    args = TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=options.batch_size,
        num_train_epochs=options.epochs,
        max_steps=options.max_steps,
        learning_rate=options.lr,
        lr_scheduler_type="cosine",
        warmup_steps=min(10, max(1, len(train_rows) // options.batch_size // 10)),
        logging_steps=1,
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=2,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        train_sampling_strategy="group_by_length",  # fewer pad tokens per batch: real CPU time saved
        seed=options.seed,
    )

    class _Progress(TrainerCallback):
        loss: float | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])

        def on_step_end(self, args, state, control, **kwargs):
            if progress is not None:
                progress(state.global_step, state.max_steps, self.loss)

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=val_rows or None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        callbacks=[_Progress()],
    )
    trainer.remove_callback(PrinterCallback)
    last = _last_complete_checkpoint(checkpoints) if options.resume else None
    notes = [] if last or not options.resume else ["--resume: no checkpoint yet, started from step 0"]
    resumed = int(Path(last).name.rsplit("-", 1)[-1]) if last else 0
    result = trainer.train(resume_from_checkpoint=last)
    trained_s = time.perf_counter() - started
    validation_loss = trainer.evaluate()["eval_loss"] if val_rows else None

    model.peft_config["default"].base_model_name_or_path = BASE_MODEL_ID
    model.save_pretrained(str(out))
    report = TrainReport(
        adapter=str(out),
        examples=len(train_rows),
        skipped_too_long=skipped,
        steps=trainer.state.global_step,
        resumed_from_step=resumed,
        train_loss=result.training_loss,
        validation_loss=validation_loss,
        schema_valid=None,
        exact=None,
        wall_s=trained_s,
        examples_per_s=(trainer.state.global_step - resumed) * options.batch_size / max(trained_s, 1e-9),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        notes=notes,
    )
    del trainer, model
    if validation and options.validate_generations and schema is not None:
        report.schema_valid, report.exact = _generate_and_check(validation[: options.validate_generations], out, cache_dir, schema)
    (out / "training.json").write_text(json.dumps(report.to_dict(), indent=1))
    return report


def _generate_and_check(validation: list[dict[str, Any]], adapter: Path, cache_dir: Path, schema: dict[str, Any]) -> tuple[float, float]:
    """Answer each validation prompt with the adapter as the embedded engine serves it (merged,
    int8), unconstrained and greedy, and check each answer against the schema."""
    import jsonschema

    from flotilla.agents.models.embedded import EmbeddedEngine

    engine = EmbeddedEngine(cache_dir, adapter=adapter)
    validator = jsonschema.Draft202012Validator(schema)
    valid = exact = 0
    try:
        for example in validation:
            # A right answer is about as long as the reference; past that, the reply is wrong anyway.
            budget = len(engine.tokenizer(example["messages"][-1]["content"])["input_ids"]) + 64
            generation = engine.generate(example["messages"][:-1], max_tokens=budget)
            try:
                answer = json.loads(generation.text)
            except json.JSONDecodeError:
                continue
            if validator.is_valid(answer):
                valid += 1
                exact += answer == json.loads(example["messages"][-1]["content"])
    finally:
        engine.close()
    return valid / len(validation), exact / len(validation)


def _last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest checkpoint a kill did not cut short. The Trainer writes `trainer_state.json` after
    the weights, optimizer and RNG state, so a checkpoint folder without a readable one is half
    written (transformers' `get_last_checkpoint` takes the newest folder, and resuming it failed)."""
    complete = []
    for state in checkpoints.glob("checkpoint-*/trainer_state.json"):
        try:
            json.loads(state.read_text(encoding="utf-8"))
            complete.append((int(state.parent.name.rsplit("-", 1)[-1]), state.parent))
        except (OSError, ValueError):  # cut short while written
            continue
    return str(max(complete)[1]) if complete else None
