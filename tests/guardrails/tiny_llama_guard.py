"""Builds a tiny random Llama checkpoint with a Llama-Guard-style tokenizer, on disk, offline.

It has the real file layout (config.json, safetensors, tokenizer.json with Llama 3 header
tokens, a Llama Guard chat template), so the rail runs its real load → prompt → generate →
parse path; its answers are random, so tests check the path, and parsing on real outputs.
"""

from __future__ import annotations

from pathlib import Path

from flotilla.guardrails.llama_guard import HAZARD_CATEGORIES, build_prompt

SPECIAL = ["<unk>", "<pad>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

CHAT_TEMPLATE = (
    "{% set role = 'Agent' if messages[-1]['role'] == 'assistant' else 'User' %}"
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    "Task: Check if there is unsafe content in '{{ role }}' messages in conversations according our safety policy "
    "with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n"
    + "".join(f"{code}: {name}\n" for code, name in HAZARD_CATEGORIES.items())
    + "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n"
    "{% for m in messages %}{{ 'User' if m['role'] == 'user' else 'Agent' }}: {{ m['content'] }}\n\n{% endfor %}"
    "<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST {{ role }} message in the above "
    "conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, a second line must include a "
    "comma-separated list of violated categories.<|eot_id|><|start_header_id|>assistant<|end_header_id|>{{ '\\n\\n' }}"
)


def build_tiny_llama_guard(directory: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    corpus = [build_prompt("Summarise invoice INV-2041", role=r) for r in ("User", "Agent")]
    corpus += ["safe", "unsafe", "\n", ",".join(HAZARD_CATEGORIES)] + list(HAZARD_CATEGORIES)
    tokenizer.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=SPECIAL))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
