"""Data-parallel self-play: rank 0 leads, the other ranks follow it in lockstep.

Rank 0 runs the `Trainer` exactly as a single process does: it alone owns the RNG, the prompts,
`buffers.sqlite`, the run directory, metrics and checkpoints, so every decision of a step is made once.
The other ranks hold the policy (a replica, or their shards with FSDP2), its optimizer and a rollout
backend, and do what rank 0 broadcasts:

    rank 0 (Trainer, ShardedBackend)                 ranks 1..N-1 (`follow`)
    Start(config, checkpoint)        ─broadcast─>    load the policy (and the checkpoint's optimizer)
    Generate(prompts, params, seed)  ─broadcast─>    generate prompts[rank::N]
      generate prompts[0::N]         <─gather───     their completions
    Execute(jobs)                    ─broadcast─>    the k-th of K sandbox ranks runs jobs[k::K]
      runs jobs[0::K] in its pool    <─gather───     their raw results
    Update(sequences)                ─broadcast─>    policy_update on sequences[rank::N]; gradients summed
      policy_update on its share     <─all-reduce─>  over ranks, the same optimizer step everywhere
    SaveCheckpoint (FSDP2 only)      ─broadcast─>    every rank gathers its shards; rank 0 writes
    Stop                             ─broadcast─>    return

Generation calls come from every phase that samples (proposals, solver batch, seeding, validation), so
followers never need to know which phase a call belongs to. Dealing prompts round-robin gives each rank a
share of every (task type, role) group.

Sandbox jobs: one pool per node, owned by its first process (`World.sandbox_ranks`; rank 0 for the first
node). On one node that is rank 0's pool alone, which uses every core while the followers wait. On several
nodes, rank 0 spreads the jobs of a step's two judging phases (proposal validation, answer checks) over all
the pools (`spread_over_nodes`): every job is checked on the host first, exactly as in one process, then
run in one pool, and the results come back in order, so a step's results are the same whatever the number
of pools. Seeding and in-training validation stay on rank 0's pool, and so do the shortcut checks of
`selfplay.reject_shortcut_tasks`: they are submitted once a proposal's validation has come back, after
the spread block (one job per deduction or abduction proposal, two per induction proposal).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from azr.config import TrainConfig
from azr.distributed import World
from azr.engines import Completion, GenerationBackend, SamplingParams, make_backend, per_prompt_params
from azr.executor import Executor
from azr.policy import load_frozen_reference
from azr.sharding import full_state_dicts, load_training_policy, restore_optimizer
from azr.update import TrainingSequence, make_optimizer, policy_update

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Start:
    config: TrainConfig
    checkpoint: Path | None  # the complete checkpoint rank 0 resumes from, or None for the initial weights


@dataclass(frozen=True)
class Generate:
    prompts: list[str]
    params: list[SamplingParams]
    seed: int | None


@dataclass(frozen=True)
class Update:
    sequences: list[TrainingSequence]


@dataclass(frozen=True)
class Execute:
    jobs: list[dict[str, Any]]  # sandbox jobs as `Executor.held_jobs` hands them out


@dataclass(frozen=True)
class SaveCheckpoint:
    pass


@dataclass(frozen=True)
class Stop:
    pass


def announce_start(world: World, config: TrainConfig, checkpoint: Path | None) -> None:
    world.broadcast(Start(config, checkpoint))


def announce_update(world: World, sequences: Sequence[TrainingSequence]) -> None:
    world.broadcast(Update(list(sequences)))


def announce_checkpoint(world: World) -> None:
    """Before rank 0 saves a sharded model: every rank must take part in gathering its shards."""
    world.broadcast(SaveCheckpoint())


def release_followers(world: World) -> None:
    """Let the other ranks return (a no-op in a single process)."""
    if world.size > 1:
        world.broadcast(Stop())


def _generate_share(
    backend: GenerationBackend,
    world: World,
    prompts: Sequence[str],
    params: Sequence[SamplingParams],
    seed: int | None,
) -> list[Completion]:
    mine = world.share(range(len(prompts)))
    if not mine:
        return []
    # Each rank draws from its own stream, so equal prompts on two ranks are not sampled alike.
    return backend.generate(
        [prompts[i] for i in mine],
        [params[i] for i in mine],
        seed=None if seed is None else seed + world.rank,
    )


class ShardedBackend(GenerationBackend):
    """Rank 0's rollout backend in a data-parallel job: every rank generates its share of each call."""

    def __init__(self, inner: GenerationBackend, world: World) -> None:
        self.inner = inner
        self.world = world
        self.tokenizer = inner.tokenizer

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams | Sequence[SamplingParams],
        *,
        seed: int | None = None,
    ) -> list[Completion]:
        per_prompt = per_prompt_params(prompts, params)
        self.world.broadcast(Generate(list(prompts), per_prompt, seed))
        shares = self.world.gather(_generate_share(self.inner, self.world, prompts, per_prompt, seed))
        completions: list[Completion] = [None] * len(prompts)  # type: ignore[list-item]
        for rank, share in enumerate(shares):
            completions[rank :: self.world.size] = share
        return completions

    def update_weights(self, model: torch.nn.Module) -> None:
        self.inner.update_weights(model)

    def sleep(self) -> None:
        self.inner.sleep()


def spread_over_nodes(executor: Executor, world: World) -> contextlib.AbstractContextManager:
    """On rank 0, a block whose sandbox jobs run spread over the pools of every node (dealt round-robin,
    results gathered back in order) when it ends; with one pool, the jobs run as they are submitted."""
    if len(world.sandbox_ranks) == 1:
        return contextlib.nullcontext()

    def run_everywhere(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        world.broadcast(Execute(jobs))
        shares = world.gather(_run_share(executor, world, jobs))
        results: list[dict[str, Any]] = [None] * len(jobs)  # type: ignore[list-item]
        for pool, rank in enumerate(world.sandbox_ranks):
            results[pool :: len(world.sandbox_ranks)] = shares[rank]
        return results

    return executor.held_jobs(run_everywhere)


def _run_share(executor: Executor | None, world: World, jobs: list[dict[str, Any]]) -> list | None:
    """This rank's pool's share of the jobs (None on a rank without a pool)."""
    if executor is None:
        return None
    pool = world.sandbox_ranks.index(world.rank)
    return executor.run_jobs(jobs[pool :: len(world.sandbox_ranks)])


def follow(world: World) -> None:
    """What ranks other than 0 run for the whole job: take part in every call rank 0 announces."""
    start = world.broadcast()
    if not isinstance(start, Start):
        return
    config = start.config
    # The same seed as rank 0 before building the model, so freshly initialised LoRA adapters match.
    torch.manual_seed(config.seed)
    policy = load_training_policy(config, start.checkpoint / "model" if start.checkpoint else None, world)
    backend = make_backend(config.generation, policy, seed=config.seed)
    optimizer = make_optimizer(policy, config.optim)
    if start.checkpoint is not None:
        restore_optimizer(optimizer, start.checkpoint / "optimizer.pt")
    reference_model = load_frozen_reference(config.model) if config.optim.kl_coef > 0 else None
    executor = Executor(config.executor) if world.rank in world.sandbox_ranks else None
    pool = " with a sandbox pool" if executor else ""
    log.info("rank %d of %d following rank 0%s", world.rank, world.size, pool)
    try:
        while True:
            command = world.broadcast()
            if isinstance(command, Generate):
                world.gather(_generate_share(backend, world, command.prompts, command.params, command.seed))
            elif isinstance(command, Execute):
                world.gather(_run_share(executor, world, command.jobs))
            elif isinstance(command, Update):
                backend.sleep()
                policy_update(
                    policy,
                    optimizer,
                    command.sequences,
                    config.optim,
                    reference_model=reference_model,
                    world=world,
                )
                backend.update_weights(policy.model)
            elif isinstance(command, SaveCheckpoint):
                full_state_dicts(policy.model, optimizer, keep=False)
            elif isinstance(command, Stop):
                return
            else:
                raise RuntimeError(f"rank {world.rank}: unexpected command {command!r} from rank 0")
    finally:
        if executor is not None:
            executor.close()
