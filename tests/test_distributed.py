"""Data-parallel training on CPU with gloo: the sharded update equals the single-process one, and
`torchrun --nproc-per-node 2 -m azr train` runs, keeps its replicas equal, and resumes after a SIGKILL."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

import azr
from azr.config import OptimConfig
from azr.distributed import SINGLE_PROCESS, init_distributed, shutdown_distributed
from azr.policy import load_policy
from azr.run_dir import RunDir
from azr.update import TrainingSequence, policy_update
from test_trainer import TINY_SETTINGS

OPTIM = OptimConfig(micro_batch_size=2, logprob_chunk_size=16)


def sgd(policy) -> torch.optim.Optimizer:
    """Plain SGD at lr 1: the parameter change is the (clipped) gradient itself, so comparing parameters
    compares gradients. (Adam's first step, g / (|g| + eps), would turn float noise in near-zero gradients
    into lr-sized differences.)"""
    return torch.optim.SGD(policy.trainable_parameters(), lr=1.0)


def fixed_sequences() -> list[TrainingSequence]:
    """Seven sequences (an odd count, so the ranks' shares differ in size) in three groups."""
    rng = random.Random(0)
    sequences = []
    for i in range(7):
        response = [rng.randrange(5, 500) for _ in range(rng.randint(2, 9))]
        sequences.append(
            TrainingSequence(
                group=("deduction/solve", "deduction/propose", "induction/solve")[i % 3],
                prompt_ids=[rng.randrange(5, 500) for _ in range(rng.randint(3, 12))],
                response_ids=response,
                logprobs=[-rng.uniform(0.5, 6.0) for _ in response],
                reward=rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0]),
            )
        )
    return sequences


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def update_on_rank(rank: int, world_size: int, port: int, model_dir: Path, out_dir: Path) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    world = init_distributed(timedelta(minutes=2))
    try:
        policy = load_policy(model_dir, device="cpu")
        result = policy_update(policy, sgd(policy), fixed_sequences(), OPTIM, world=world)
        parameters = {name: p.detach().clone() for name, p in policy.model.named_parameters()}
        torch.save({"parameters": parameters, "result": result}, out_dir / f"rank{rank}.pt")
    finally:
        shutdown_distributed(world)


def test_two_rank_update_equals_the_single_process_update(tiny_model_dir: Path, tmp_path: Path):
    mp.spawn(update_on_rank, args=(2, free_port(), tiny_model_dir, tmp_path), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    policy = load_policy(tiny_model_dir, device="cpu")
    single = policy_update(policy, sgd(policy), fixed_sequences(), OPTIM)
    assert single.metrics["update/grad_norm"] > 0

    for name, expected in policy.model.named_parameters():
        assert torch.equal(ranks[0]["parameters"][name], ranks[1]["parameters"][name]), name
        torch.testing.assert_close(ranks[0]["parameters"][name], expected.detach(), atol=1e-6, rtol=0)
    for rank in ranks:
        assert rank["result"].advantages == pytest.approx(single.advantages)
        assert rank["result"].metrics["dp/replica_divergence"] == 0.0
        for key in ("update/loss", "update/grad_norm", "update/entropy", "update/tokens"):
            assert rank["result"].metrics[key] == pytest.approx(single.metrics[key], rel=1e-5), key


def test_single_process_world_shares_everything():
    assert SINGLE_PROCESS.share([3, 1, 2]) == [3, 1, 2]
    assert SINGLE_PROCESS.broadcast("x") == "x"
    assert SINGLE_PROCESS.gather("x") == ["x"]


# --- torchrun end to end ---------------------------------------------------------------------------


def torchrun_train(*args: str, **kwargs) -> subprocess.Popen:
    """`torchrun --standalone --nproc-per-node 2 -m azr train` on this checkout's azr."""
    source = str(Path(azr.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    sets = [item for setting in TINY_SETTINGS for item in ("--set", setting)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.Popen(
        [*command, "-m", "azr", "train", *args, *sets, "--set", "logging.tensorboard=false"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **kwargs,
    )


def test_torchrun_two_ranks_trains_and_keeps_replicas_equal(tiny_model_dir: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = torchrun_train("--model", str(tiny_model_dir), "--steps", "2", "--run-dir", str(run_dir))
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output

    assert yaml.safe_load((run_dir / "config.yaml").read_text())["distributed"]["world_size"] == 2
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert record["dp/replica_divergence"] == 0.0
        assert record["update/tokens"] > 0
        assert {"reward/deduction/propose", "reward/induction/solve"} <= record.keys()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_000001", "step_000002"]
    assert (run_dir / "buffers.sqlite").is_file()
    assert (run_dir / "samples" / "step_000002.jsonl").is_file()


def test_torchrun_sigkill_mid_step_then_resume(
    tiny_model_dir: Path, tmp_path: Path, kill_after_first_checkpoint
):
    run_dir = tmp_path / "run"
    proc = torchrun_train(
        "--model", str(tiny_model_dir), "--steps", "5", "--run-dir", str(run_dir), start_new_session=True
    )
    kill_after_first_checkpoint(proc, run_dir, 1.0)  # somewhere inside step 2 (generation, sandbox or update)
    killed_at, _ = RunDir(run_dir).latest_checkpoint()
    assert killed_at < 5

    proc = torchrun_train("--resume", str(run_dir), "--steps", str(killed_at + 1))
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    run = RunDir(run_dir)
    records = run.read_metrics()
    assert [r["step"] for r in records] == list(range(1, killed_at + 2))
    assert records[-1]["dp/replica_divergence"] == 0.0
    assert run.latest_checkpoint()[0] == killed_at + 1
    state = torch.load(run.latest_checkpoint()[1] / "optimizer.pt", weights_only=True)["state"]
    assert all(float(s["step"]) == killed_at + 1 for s in state.values())


def test_accelerate_launch_with_the_shipped_ddp_config(tiny_model_dir: Path, tmp_path: Path):
    """configs/accelerate/ddp.yaml, with 2 processes instead of 8: on CPU accelerate starts them with the
    torchrun variables and azr joins over gloo."""
    config = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "ddp.yaml"
    source = str(Path(azr.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    sets = [item for setting in TINY_SETTINGS for item in ("--set", setting)]
    run_dir = tmp_path / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    train = ["--model", str(tiny_model_dir), "--steps", "1", "--run-dir", str(run_dir), *sets]
    proc = subprocess.run(
        [*launch, "--num_processes", "2", "-m", "azr", "train", *train, "--set", "logging.tensorboard=false"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["distributed"]["world_size"] == 2
    [record] = RunDir(run_dir).read_metrics()
    assert record["dp/replica_divergence"] == 0.0
