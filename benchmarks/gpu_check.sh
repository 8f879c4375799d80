#!/usr/bin/env bash
# The one command a lent GPU runs, from the repository root with .whl/ carried (made here first by
# benchmarks/gpu_check_wheels.sh): installs the carried wheels beside the machine's own packages, runs
# benchmarks/gpu_check.py, and leaves its JSON, its log and nvidia-smi's view of the card in $OUT.
#
#     bash benchmarks/gpu_check.sh          # device run: carry [".whl"], timeout_s 540
#
# Arguments go to gpu_check.py (e.g. --budget-s 300).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ ! -d .whl/tokenizer ]; then
  echo "gpu_check.sh: no .whl/ here: run 'bash benchmarks/gpu_check_wheels.sh' first and carry .whl" >&2
  exit 2
fi
out=${OUT:-gpu_check_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl || exit
# The carried wheels first (they replace the machine's transformers), then azr's own source.
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv >"$out/nvidia-smi.csv" 2>&1
python3 benchmarks/gpu_check.py --tokenizer .whl/tokenizer --out "$out/gpu_check.json" "$@" 2>&1 |
  tee "$out/gpu_check.log"
