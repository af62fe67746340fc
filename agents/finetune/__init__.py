"""Distillation: chat-format training data, LoRA fine-tuning on the CPU, adapters the embedded
engine and vLLM both serve. Training needs flotilla[finetune] (peft); reading data does not."""

from flotilla.agents.finetune.data import ExampleError, read_examples, write_examples

__all__ = ["ExampleError", "read_examples", "write_examples"]
