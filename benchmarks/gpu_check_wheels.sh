#!/usr/bin/env bash
# Run here, before a lent GPU runs benchmarks/gpu_check.sh: puts in .whl/ (git-ignored, carried to the
# GPU machine) the wheels of what azr needs there and the machine lacks, for its Python (CPython 3.12,
# x86-64 manylinux), and the embedded model's tokenizer in .whl/tokenizer/; then prints what travels.
#
#     bash benchmarks/gpu_check_wheels.sh
#
# The machine has torch 2.11, transformers 5.17, tokenizers, safetensors, peft, accelerate, typer, rich,
# pyyaml, numpy (the device notes' package list). It lacks pydantic (azr.config) and, through the
# `azr train` command's import of azr.report, radon and apted. Each comes at the version this checkout's
# .venv holds, which `make setup` installed from pyproject.toml's pins:
#   pydantic, pydantic-core, annotated-types, typing-inspection   pydantic and what it imports
#   typing-extensions                                              pydantic needs >= 4.16
#   radon, apted                                                   azr.program_metrics (via azr.report)
#   transformers                                                   azr pins 5.19.0; the machine has 5.17
set -euo pipefail
cd "$(dirname "$0")/.."
python=${VENV_PYTHON:-.venv/bin/python}
limit=$((64 * 1024 * 1024))  # what one device call may carry: the working tree and .whl together
packages=(pydantic pydantic-core annotated-types typing-inspection typing-extensions radon apted transformers)

rm -rf .whl
mkdir -p .whl/tokenizer
for name in "${packages[@]}"; do
  version=$("$python" -c 'import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))' "$name")
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$name==$version" 2>&1 |
    { grep -v "^WARNING: Location" || true; }
done
tokenizer=$("$python" -c 'from azr.policy import named_model_path; print(named_model_path("embedded"))')
cp "$tokenizer"/tokenizer.json "$tokenizer"/tokenizer_config.json .whl/tokenizer/
cp "$tokenizer"/chat_template.jinja .whl/tokenizer/ 2>/dev/null || true

du -b .whl/*.whl .whl/tokenizer/* | sort -n
carried=$(du -cb .whl | tail -1 | cut -f1)
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "carried .whl: $((carried / 1024)) KiB; working tree that travels: $((tree / 1024)) KiB;" \
  "together $(((carried + tree) / 1024)) KiB of $((limit / 1024))"
if ((carried + tree > limit)); then
  echo "gpu_check_wheels.sh: over the 64 MiB a device call carries" >&2
  exit 1
fi
