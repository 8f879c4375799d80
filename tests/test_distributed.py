"""Data-parallel training on CPU with gloo: the data-parallel and the FSDP2-sharded update equal the
single-process one, a sharded checkpoint round-trips, sandbox jobs spread over one pool per node give the
single pool's results, and `torchrun --nproc-per-node 2 -m azr train` runs (replicated or sharded), keeps
its replicas equal, and resumes after a SIGKILL."""

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
from azr.config import OptimConfig, load_config
from azr.data_parallel import announce_start, follow, release_followers, spread_over_nodes
from azr.distributed import SINGLE_PROCESS, World, init_distributed, shutdown_distributed
from azr.executor import Executor
from azr.policy import load_policy, save_policy_weights
from azr.run_dir import RunDir
from azr.sharding import full_state_dicts, restore_optimizer, shard_policy, whole
from azr.tasks import Abduction, Deduction, Proposal, load_seed_tasks, shipped_seed_path
from azr.update import TrainingSequence, make_optimizer, policy_update
from test_trainer import TINY_SETTINGS

OPTIM = OptimConfig(micro_batch_size=2, logprob_chunk_size=16)
CPU = torch.device("cpu")


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


def join_on_one_machine(rank: int, world_size: int, port: int, local_rank: int | None = None) -> World:
    """Join a gloo job of `world_size` processes on this machine as `rank`, as torchrun would start it
    (`local_rank` defaults to the rank: one node)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank if local_rank is None else local_rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    return init_distributed(timedelta(minutes=2))


def update_on_rank(rank: int, world_size: int, port: int, model_dir: Path, out_dir: Path) -> None:
    world = join_on_one_machine(rank, world_size, port)
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


# --- FSDP2 -------------------------------------------------------------------------------------------

# grad_clip 2e-3 clips the first update below (gradient norm ~6.6e-3) and not the second (~6e-5), so both
# the global-norm clipping and the plain sum over shards are compared. The entropy bonus gives the second
# update, one sequence alone in its group (advantage 0), a gradient.
FSDP_OPTIM = OptimConfig(micro_batch_size=2, logprob_chunk_size=16, grad_clip=2e-3, entropy_coef=0.01)


def two_updates(policy, world) -> list:
    """Five sequences (rank 0 gets 3, two micro-batches; rank 1 gets 2, one), then one (rank 1 gets none):
    under FSDP both ranks must still run the same number of forward/backward passes."""
    optimizer = sgd(policy)
    sequences = fixed_sequences()
    return [
        policy_update(policy, optimizer, sequences[:5], FSDP_OPTIM, world=world),
        policy_update(policy, optimizer, sequences[5:6], FSDP_OPTIM, world=world),
    ]


def fsdp_on_rank(rank: int, world_size: int, port: int, model_dir: Path, out_dir: Path) -> None:
    """The sharded updates of `two_updates`, then a checkpoint written (rank 0) and restored (every rank)."""
    world = join_on_one_machine(rank, world_size, port)

    def sharded(path: Path):
        # Gradient checkpointing as in the GPU presets: FSDP2 then all-gathers again during recomputation.
        return shard_policy(load_policy(path, device="cpu", gradient_checkpointing=True), world, CPU)

    def full_parameters(policy) -> dict[str, torch.Tensor]:
        return {name: whole(p).detach().clone() for name, p in policy.model.named_parameters()}

    try:
        policy = sharded(model_dir)
        results = two_updates(policy, world)
        torch.save({"parameters": full_parameters(policy), "results": results}, out_dir / f"update{rank}.pt")

        # A checkpoint as the trainer writes one: gathered whole, written once, read back by every rank.
        optim = OptimConfig(micro_batch_size=2, logprob_chunk_size=16, lr=1e-3)
        policy = sharded(model_dir)
        optimizer = make_optimizer(policy, optim)
        policy_update(policy, optimizer, fixed_sequences(), optim, world=world)
        saved = full_state_dicts(policy.model, optimizer, keep=world.is_leader)
        if world.is_leader:
            save_policy_weights(policy, out_dir / "checkpoint" / "model", saved[0])
            torch.save(saved[1], out_dir / "checkpoint" / "optimizer.pt")
        world.broadcast()  # the others wait until it is written
        restored = sharded(out_dir / "checkpoint" / "model")
        restored_optimizer = make_optimizer(restored, optim)
        restore_optimizer(restored_optimizer, out_dir / "checkpoint" / "optimizer.pt")
        reread = full_state_dicts(restored.model, restored_optimizer, keep=world.is_leader)
        # One more step from the original and from the restored state must land on the same weights.
        for model, opt in ((policy, optimizer), (restored, restored_optimizer)):
            policy_update(model, opt, fixed_sequences()[:3], optim, world=world)
        after = [full_parameters(policy), full_parameters(restored)]
        if world.is_leader:
            torch.save({"saved": saved, "reread": reread, "after": after}, out_dir / "checkpoint.pt")
    finally:
        shutdown_distributed(world)


@pytest.fixture(scope="module")
def fsdp_ranks(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2-process FSDP2 job (CPU, gloo) running `fsdp_on_rank`; its outputs' folder."""
    out_dir = tmp_path_factory.mktemp("fsdp")
    (out_dir / "checkpoint").mkdir()
    mp.spawn(fsdp_on_rank, args=(2, free_port(), tiny_model_dir, out_dir), nprocs=2, join=True)
    return out_dir


def test_fsdp2_update_equals_the_single_process_update(fsdp_ranks: Path, tiny_model_dir: Path):
    ranks = [torch.load(fsdp_ranks / f"update{r}.pt", weights_only=False) for r in range(2)]
    policy = load_policy(tiny_model_dir, device="cpu", gradient_checkpointing=True)
    single = two_updates(policy, SINGLE_PROCESS)
    norms = [result.metrics["update/grad_norm"] for result in single]
    assert norms[0] > FSDP_OPTIM.grad_clip > norms[1]

    for name, expected in policy.model.named_parameters():
        assert torch.equal(ranks[0]["parameters"][name], ranks[1]["parameters"][name]), name
        torch.testing.assert_close(ranks[0]["parameters"][name], expected.detach(), atol=1e-6, rtol=0)
    # Float32 norms of gradients this small are only good to ~1e-4 and depend on the summation order, which
    # sharding changes (measured on the embedding gradient: 1.5e-4 off its float64 norm in one process,
    # 6e-5 sharded), so the second update's norm (6e-5, from the entropy bonus alone) agrees to 4e-5.
    for rank in ranks:
        for sharded, expected, rel in zip(rank["results"], single, (1e-5, 1e-3), strict=True):
            assert sharded.advantages == pytest.approx(expected.advantages)
            assert "dp/replica_divergence" not in sharded.metrics  # the ranks hold different slices
            for key in ("update/loss", "update/grad_norm", "update/entropy", "update/tokens"):
                assert sharded.metrics[key] == pytest.approx(expected.metrics[key], rel=rel), key


def test_fsdp2_checkpoint_is_the_unsharded_format_and_restores_exactly(fsdp_ranks: Path):
    checkpoint = torch.load(fsdp_ranks / "checkpoint.pt", weights_only=False)
    (model_state, optimizer_state), reread = checkpoint["saved"], checkpoint["reread"]
    for name, tensor in model_state.items():
        assert torch.equal(reread[0][name], tensor), name
    assert reread[1]["param_groups"] == optimizer_state["param_groups"]
    for index, state in optimizer_state["state"].items():
        assert state.keys() == {"step", "exp_avg", "exp_avg_sq"}
        for key, tensor in state.items():
            assert torch.equal(reread[1]["state"][index][key], tensor), (index, key)
    original, restored = checkpoint["after"]
    for name, tensor in original.items():
        assert torch.equal(restored[name], tensor), name

    # The same files an unsharded run writes: a plain policy and optimizer load them as they are.
    folder = fsdp_ranks / "checkpoint"
    plain = load_policy(folder / "model", device="cpu")
    for name, parameter in plain.model.named_parameters():
        assert torch.equal(parameter.detach(), model_state[name]), name
    optimizer = make_optimizer(plain, OptimConfig(lr=1e-3))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    exp_avg = [optimizer.state[p]["exp_avg"] for p in plain.trainable_parameters()]
    assert all(torch.equal(m, optimizer_state["state"][i]["exp_avg"]) for i, m in enumerate(exp_avg))


# --- one sandbox pool per node -----------------------------------------------------------------------

SEED_TASKS = load_seed_tasks(shipped_seed_path("io"))[:12]  # real Qwen2.5-Coder-7B programs


def judged(executor: Executor, world) -> dict[str, list]:
    """A step's two sandbox phases on real programs (some failing), through `spread_over_nodes`: every
    outcome, without the seconds it took."""
    deduction, abduction = Deduction(), Abduction()
    proposals = [Proposal(task.program, task.input) for task in SEED_TASKS] + [
        Proposal("def f(a):\n    return a / 0", "1"),
        Proposal("def f(a):\n    import os\n    return a", "1"),  # banned: rejected on the host
    ]
    with spread_over_nodes(executor, world):
        validations = [deduction.submit_validation(executor, proposal) for proposal in proposals]
    tasks = [v.result().task for v in validations if v.result().valid]
    with spread_over_nodes(executor, world):
        verdicts = [
            *(deduction.judge(executor, task, task.output) for task in tasks),
            *(deduction.judge(executor, task, "None") for task in tasks),
            *(abduction.judge(executor, task, task.input) for task in tasks),
        ]
    return {
        "validations": [v.result() for v in validations],
        "verdicts": [(v.result().correct, v.result().status, v.result().error) for v in verdicts],
    }


def sandbox_on_rank(rank: int, port: int, model_dir: Path, out_dir: Path) -> None:
    """Two processes that each believe they are the first of their node (LOCAL_RANK 0), so each owns a
    sandbox pool: rank 0 judges through both, then through its own alone; rank 1 follows."""
    jobs_run: list[int] = []
    run_jobs = Executor.run_jobs

    def counted(self, jobs):
        jobs_run.append(len(jobs))
        return run_jobs(self, jobs)

    Executor.run_jobs = counted  # the pools' side of spreading; both processes count what they ran
    world = join_on_one_machine(rank, 2, port, local_rank=0)
    try:
        if world.is_leader:
            config = load_config("tiny-cpu", [*TINY_SETTINGS, f"model.path={model_dir}"])
            announce_start(world, config, None)
            with Executor(config.executor) as executor:
                spread = judged(executor, world)
                single = judged(executor, SINGLE_PROCESS)
            release_followers(world)
            torch.save({"spread": spread, "single": single}, out_dir / "judged.pt")
        else:
            follow(world)
        torch.save({"sandbox_ranks": world.sandbox_ranks, "jobs_run": jobs_run}, out_dir / f"pool{rank}.pt")
    finally:
        shutdown_distributed(world)


def test_sandbox_jobs_spread_over_one_pool_per_node_give_the_single_pool_results(
    tiny_model_dir: Path, tmp_path: Path
):
    mp.spawn(sandbox_on_rank, args=(free_port(), tiny_model_dir, tmp_path), nprocs=2, join=True)
    results = torch.load(tmp_path / "judged.pt", weights_only=False)
    pools = [torch.load(tmp_path / f"pool{rank}.pt", weights_only=False) for rank in range(2)]

    assert results["spread"] == results["single"]
    validations = results["single"]["validations"]
    assert sum(v.valid for v in validations) == len(SEED_TASKS)
    assert [v.reason.split(":")[0] for v in validations[-2:]] == ["error", "banned"]
    assert {correct for correct, _, _ in results["single"]["verdicts"]} == {True, False}
    assert all(pool["sandbox_ranks"] == (0, 1) for pool in pools)
    # 13 validation jobs (the banned one never reaches a sandbox), then 36 answer checks, dealt in turn.
    assert pools[0]["jobs_run"] == [7, 18] and pools[1]["jobs_run"] == [6, 18]


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


# Sharded training samples from its own bf16 copy of the weights (the trainer's model is only slices).
FSDP2 = ["--set", "distributed.sharding=fsdp2", "--set", "generation.backend=transformers-bf16"]


def test_torchrun_fsdp2_trains_and_writes_the_usual_run_directory(tiny_model_dir: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = torchrun_train("--model", str(tiny_model_dir), "--steps", "2", "--run-dir", str(run_dir), *FSDP2)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output

    distributed = yaml.safe_load((run_dir / "config.yaml").read_text())["distributed"]
    assert (distributed["world_size"], distributed["sharding"]) == (2, "fsdp2")
    records = RunDir(run_dir).read_metrics()
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["update/tokens"] > 0 and "dp/replica_divergence" not in r for r in records)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_000001", "step_000002"]
    # Whole weights under the model's own names, as without sharding: it loads in one process.
    saved = load_policy(run_dir / "checkpoints" / "step_000002" / "model", device="cpu").model.state_dict()
    initial = load_policy(tiny_model_dir, device="cpu").model.state_dict()
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in initial.items()}


@pytest.mark.parametrize("sharding", [[], FSDP2], ids=["replicated", "fsdp2"])
def test_torchrun_sigkill_mid_step_then_resume(
    sharding: list[str], tiny_model_dir: Path, tmp_path: Path, kill_after_first_checkpoint
):
    run_dir = tmp_path / "run"
    proc = torchrun_train(
        "--model",
        str(tiny_model_dir),
        "--steps",
        "5",
        "--run-dir",
        str(run_dir),
        *sharding,
        start_new_session=True,
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
    if not sharding:  # sharded, the ranks hold different slices and there is no replica to compare
        assert records[-1]["dp/replica_divergence"] == 0.0
    assert run.latest_checkpoint()[0] == killed_at + 1
    state = torch.load(run.latest_checkpoint()[1] / "optimizer.pt", weights_only=True)["state"]
    assert all(float(s["step"]) == killed_at + 1 for s in state.values())


@pytest.mark.parametrize(("name", "sharding"), [("ddp", []), ("fsdp2", FSDP2)], ids=["ddp", "fsdp2"])
def test_accelerate_launch_with_the_shipped_configs(
    name: str, sharding: list[str], tiny_model_dir: Path, tmp_path: Path
):
    """configs/accelerate/{ddp,fsdp2}.yaml, with 2 processes instead of 8: on CPU accelerate starts them
    with the torchrun variables and azr joins over gloo (and shards the model itself with fsdp2)."""
    config = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / f"{name}.yaml"
    source = str(Path(azr.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    sets = [item for setting in TINY_SETTINGS for item in ("--set", setting)]
    run_dir = tmp_path / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    train = ["--model", str(tiny_model_dir), "--steps", "1", "--run-dir", str(run_dir), *sets, *sharding]
    proc = subprocess.run(
        [*launch, "--num_processes", "2", "-m", "azr", "train", *train, "--set", "logging.tensorboard=false"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    distributed = yaml.safe_load((run_dir / "config.yaml").read_text())["distributed"]
    assert (distributed["world_size"], distributed["sharding"]) == (2, "fsdp2" if sharding else "none")
    [record] = RunDir(run_dir).read_metrics()
    assert record["update/tokens"] > 0
    if not sharding:
        assert record["dp/replica_divergence"] == 0.0
