"""One record per rollout, from prompt to reward, and the pure functions on lists of them.

A self-play step is a list of `Rollout`s that its phases fill in turn: the prompt, then the completion,
then the parse and the executor's outcome, then the reward and the advantage. Proposer rollouts carry
the solver samples that estimate their task's learnability; one of those samples is also the solver
rollout trained on that task when the task is in the solver batch (see `azr.trainer`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from azr.engines.base import Completion
from azr.executor import Verdict
from azr.parsing import BadFormat
from azr.rewards import RewardConfig, proposer_reward, solve_rate, solver_reward
from azr.tasks import Proposal, ProposerPrompt, Role, Task, Validation


@dataclass
class Rollout:
    """One sampled response and everything the step learns about it."""

    task_type: str
    role: Role
    prompt: str
    proposer_prompt: ProposerPrompt | None = None  # propose: the parser needs the prompt's program back
    task: Task | None = None  # solve: the task asked; propose: the task the proposal became, once stored
    completion: Completion | None = None
    parsed: Proposal | str | BadFormat | None = None
    validation: Validation | None = None  # propose
    verdict: Verdict | None = None  # solve; None when the answer could not be parsed
    learnability: list[Rollout] = field(default_factory=list)  # propose: n solver samples on its task
    trained: bool = True  # learnability samples are scored; only the one reused as a solver answer trains
    held_out: bool = False  # propose: valid, but one of the probe's programs, so never stored or trained on
    program_copy: bool = False  # propose: valid, but a program its buffer has (`selfplay.distinct_programs`)
    reward: float | None = None
    advantage: float | None = None

    @property
    def group(self) -> str:
        """The TRR++ group: one baseline per (task type, role)."""
        return f"{self.task_type}/{self.role}"

    @property
    def is_parsed(self) -> bool:
        return self.parsed is not None and not isinstance(self.parsed, BadFormat)

    @property
    def correct(self) -> bool:
        return self.verdict is not None and self.verdict.correct

    @property
    def valid(self) -> bool:
        return self.validation is not None and self.validation.valid

    @property
    def solve_rate(self) -> float | None:
        """acc: the fraction of this proposal's learnability samples that solved its task."""
        if not self.valid:
            return None
        return solve_rate([sample.correct for sample in self.learnability])


def assign_rewards(rollouts: Sequence[Rollout], config: RewardConfig) -> None:
    """Set the reward of every rollout (table in `azr.rewards`)."""
    for rollout in rollouts:
        if rollout.role == "propose":
            rollout.reward = proposer_reward(
                rollout.is_parsed, rollout.valid, rollout.solve_rate, config, rollout.program_copy
            )
        else:
            rollout.reward = solver_reward(rollout.is_parsed, rollout.correct, config)


def mean_rewards(rollouts: Sequence[Rollout]) -> dict[str, float]:
    """`reward/<type>/<role>`: the mean reward of each group."""
    rewards: dict[str, list[float]] = defaultdict(list)
    for rollout in rollouts:
        if rollout.reward is not None:
            rewards[rollout.group].append(rollout.reward)
    return {f"reward/{group}": sum(values) / len(values) for group, values in sorted(rewards.items())}


def sample_row(rollout: Rollout, step: int) -> dict[str, Any]:
    """The JSON row of `samples/step_N.jsonl` for one trained rollout.

    Always: step, task_type, role, prompt, response, finish_reason, reward, advantage. Solver rows add
    task_id and task_step (the buffer id of the task asked and the step that added it), the task, the
    parsed answer and the verdict. Proposer rows add the validation outcome, the solve rate of the
    learnability samples, whether its task is a held-out probe program (then never stored) and, once stored,
    the task with its task_id.
    """
    completion = rollout.completion
    row: dict[str, Any] = {
        "step": step,
        "task_type": rollout.task_type,
        "role": rollout.role,
        "prompt": rollout.prompt,
        "response": completion.text if completion is not None else None,
        "finish_reason": completion.finish_reason if completion is not None else None,
        "reward": rollout.reward,
        "advantage": rollout.advantage,
        "format_error": rollout.parsed.reason if isinstance(rollout.parsed, BadFormat) else None,
    }
    task = rollout.task
    if rollout.role == "solve":
        row |= {
            "task_id": task.task_id if task else None,
            "task_step": task.step if task else None,
            "task": task.__dict__ if task else None,
            "answer": rollout.parsed if rollout.is_parsed else None,
            "correct": rollout.correct,
            "status": rollout.verdict.status.value if rollout.verdict is not None else None,
        }
    else:
        validation = rollout.validation
        row |= {
            "valid": rollout.valid,
            "reason": validation.reason if validation is not None else None,
            "solve_rate": rollout.solve_rate,
            "held_out": rollout.held_out,
            "program_copy": rollout.program_copy,
            "task_id": task.task_id if task else None,
            "task": task.__dict__ if task else None,
        }
    return row


def response_token_mask(
    decode: Callable[[Sequence[int]], str], response_ids: Sequence[int], spans: Sequence[tuple[int, int]]
) -> list[bool] | None:
    """Per response token, whether it lies outside every (start, end) character span of the decoded
    response (`decode(response_ids)`): a token is left out when it starts inside a span. None when no span
    is given (every token counts)."""
    if not spans:
        return None
    keep, start = [], 0
    for count in range(1, len(response_ids) + 1):
        end = len(decode(response_ids[:count]))
        keep.append(not any(low <= start < high for low, high in spans))
        start = max(start, end)
    return keep
