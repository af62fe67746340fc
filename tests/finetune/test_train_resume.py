"""`flotilla finetune` on the CPU: killed mid-run, `--resume` continues from its last checkpoint
(step count and all), and the adapter it saves is one the embedded engine serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flotilla.agents.finetune.data import conversation, write_examples

pytestmark = pytest.mark.model


def _data(tmp: Path) -> Path:
    examples = [
        conversation(
            [{"role": "system", "content": "Copy the invoice number."}, {"role": "user", "content": f"Invoice INV-{i:03d} from Acme Ltd."}],
            {"invoice_number": f"INV-{i:03d}"},
        )
        for i in range(24)
    ]
    write_examples(tmp / "train.jsonl", examples[:20])
    write_examples(tmp / "train.val.jsonl", examples[20:])
    return tmp / "train.jsonl"


def _finetune(data: Path, out: Path, *extra: str) -> list[str]:
    # The console script, not `python -m`: the repository's datasets/ folder would shadow HF `datasets`.
    return [str(Path(sys.executable).with_name("flotilla")), "finetune", "--agent", "extract", "--data", str(data), "--out", str(out),
            "--batch-size", "2", "--rank", "4", "--top-layers", "2", "--save-steps", "2", "--validate", "0", *extra]


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    data, out = _data(tmp_path), tmp_path / "adapter"
    first = subprocess.Popen(_finetune(data, out, "--max-steps", "1000"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        while not list(out.glob("checkpoints/checkpoint-*/trainer_state.json")):
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            time.sleep(0.5)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a crash, not a polite stop
        first.wait()
    saved = max(int(p.parent.name.rsplit("-", 1)[1]) for p in out.glob("checkpoints/checkpoint-*/trainer_state.json"))
    assert not (out / "adapter_model.safetensors").exists()

    done = subprocess.run(_finetune(data, out, "--max-steps", str(saved + 2), "--resume", "--json"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["resumed_from_step"] == saved and report["steps"] == saved + 2
    assert report["validation_loss"] is not None and report["train_loss"] is not None
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (out / "adapter_model.safetensors").is_file()


def test_resume_without_a_checkpoint_says_so(tmp_path: Path) -> None:
    data, out = _data(tmp_path), tmp_path / "adapter"
    done = subprocess.run(_finetune(data, out, "--max-steps", "1", "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no checkpoint yet, started from step 0" in done.stderr


def test_a_bad_training_line_exits_2_naming_it(tmp_path: Path) -> None:
    data = _data(tmp_path)
    data.write_text(data.read_text() + '{"messages": [{"role": "user", "content": "INV-9"}]}\n')
    done = subprocess.run(_finetune(data, tmp_path / "adapter"), capture_output=True, text=True)
    assert done.returncode == 2 and f"{data}:21: no assistant message" in done.stderr and "Traceback" not in done.stderr


def test_resume_takes_the_newest_checkpoint_a_kill_did_not_cut_short(tmp_path: Path) -> None:
    from flotilla.agents.finetune.train import _last_complete_checkpoint

    checkpoints = tmp_path / "checkpoints"
    for step, state in ((2, '{"global_step": 2}'), (3, '{"global_step": 3}'), (4, None), (5, '{"global_st')):
        folder = checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        if state is not None:  # 4: killed before its state was written; 5: killed while writing it
            (folder / "trainer_state.json").write_text(state)
    assert _last_complete_checkpoint(checkpoints) == str(checkpoints / "checkpoint-3")
    assert _last_complete_checkpoint(tmp_path / "none-yet") is None
