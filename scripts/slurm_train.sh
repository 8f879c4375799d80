#!/bin/bash
# Data-parallel azr training on several nodes with SLURM: one torchrun per node, which starts one process
# per GPU; the ranks meet at the first node (c10d rendezvous), and the first process of every node runs
# that node's sandbox pool. Replicated or FSDP2-sharded as the config says. Submit from the repository root:
#   sbatch --nodes 2 scripts/slurm_train.sh --config paper-14b-coder --model /models/Qwen2.5-Coder-14B \
#       --run-dir /shared/runs/coder14b
# Resume a killed job with the same command and `--resume /shared/runs/coder14b` instead of --run-dir.
# The run directory must be on a filesystem every node sees. Not run on a cluster yet (see README "Scaling").
#SBATCH --job-name=azr-train
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --exclusive
#SBATCH --time=48:00:00
set -euo pipefail

GPUS_PER_NODE=${GPUS_PER_NODE:-8}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PYTHON=${PYTHON:-.venv/bin/python}

srun "$PYTHON" -m torch.distributed.run \
    --nnodes "$SLURM_NNODES" \
    --nproc-per-node "$GPUS_PER_NODE" \
    --rdzv-id "$SLURM_JOB_ID" \
    --rdzv-backend c10d \
    --rdzv-endpoint "$HEAD_NODE:29500" \
    -m azr train "$@"
