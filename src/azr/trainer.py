"""The self-play trainer: one Absolute Zero step, in the paper's order (Zhao et al. 2025, Algorithm 1).

    propose   B proposer prompts per task type                                   generation call 1
    check     every proposal runs in the sandbox; the valid ones become tasks
    grow      valid tasks join their type's buffer (deduplicated) and get their task ids
    solve     per type, B solver tasks: this step's valid tasks first, the rest
              drawn uniformly from the buffer; plus n learnability samples per
              valid proposal                                                      generation call 2
    judge     every answer is checked in the sandbox; solve rates give learnability
    reward    solver and proposer rewards (table in azr.rewards)
    update    TRR++ advantages and one PPO-clip step (azr.update); the rollout backend gets the new weights
    record    safety screening of every response, metrics and samples (the caller checkpoints)

The solver's answer on one of this step's tasks is the first of that task's n learnability samples, not a
second sample: both are drawn from the same policy, the same prompt and the same temperature before the
update, so the trained answer has exactly the distribution the paper's separate solve phase draws from,
and the step saves one generation per fresh task. The other n − 1 samples are scored, not trained on,
as in the paper.

`selfplay.mode: solver-only` is the RLVR control: the same solver prompts, rewards and update, without a
proposer. Its buffers hold the fixed split `selfplay.train_tasks` and nothing else, and never change; each
step draws B tasks per type from them (the trainer's rng, so a resumed run draws the same), solves them in
one generation call, judges them and trains the `<type>/solve` groups. Its metrics keep the self-play keys
that mean the same thing (solve_rate/<type>, reward/<type>/solve, update/*, time/*).

Nothing trains on the held-out probe (`azr.probe`): a seed file's tasks on one of its programs are left
out, a control split holding one is refused, and a valid proposal on one of them (`held_out/<type>`)
keeps its proposer reward but is neither stored in a buffer nor given to the solver batch.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from azr.behaviour import behaviour_cache_key, copy_key, submit_behaviour_key
from azr.buffer import TaskBuffer, open_buffers, task_key
from azr.config import ConfigError, TrainConfig
from azr.data_parallel import (
    ShardedBackend,
    announce_checkpoint,
    announce_start,
    announce_update,
    release_followers,
    spread_over_nodes,
)
from azr.distributed import SINGLE_PROCESS, World
from azr.engines import Completion, GenerationBackend, SamplingParams, make_backend
from azr.executor import Executor, Verdict
from azr.metrics import MetricsWriter
from azr.parsing import program_key
from azr.policy import load_frozen_reference, save_policy_weights
from azr.probe import ProbeLeakError, check_no_probe_tasks, in_probe, without_probe_tasks
from azr.prompts import get_format
from azr.rollouts import Rollout, assign_rewards, mean_rewards, response_token_mask, sample_row
from azr.run_dir import RunDir, attach_file_log
from azr.safety import FLAGS_FILENAME, SafetyMonitor, SafetyStop
from azr.seeding import GenerationRequest, grow_seed_tasks, validate_seed_tasks
from azr.sharding import full_state_dicts, is_sharded, load_training_policy, restore_optimizer
from azr.tasks import ProposerPrompt, Task, TaskType, get_task_type, load_seed_tasks, shipped_seed_path
from azr.update import TrainingSequence, make_optimizer, policy_update

log = logging.getLogger(__name__)

StepCallback = Callable[[str], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def step_seed(base_seed: int, step: int, call: int) -> int:
    """A distinct, reproducible sampling seed per (step, generation call): a resumed step samples the same."""
    return (base_seed * 1_000_003 + step * 101 + call) % (2**62)


def task_file_path(spec: str, task_type: TaskType) -> Path:
    """The JSONL file a `seed_file` / `train_tasks` setting names for `task_type`: 'builtin' is the shipped
    seed file of its seed set, `package:<path>` a file inside the installed azr package, else a path."""
    if spec == "builtin":
        return shipped_seed_path(task_type.seed_set)
    if spec.startswith("package:"):
        return Path(str(resources.files("azr").joinpath(spec.removeprefix("package:"))))
    return Path(spec)


def training_sequences(
    rollouts: Sequence[Rollout], trained: Sequence[Sequence[bool] | None] | None = None
) -> list[TrainingSequence]:
    """What the update needs of each trained rollout: group, tokens, behaviour log-probs, reward, and
    which response tokens the loss counts (`trained`, one entry per rollout; None: all of them)."""
    masks = trained if trained is not None else [None] * len(rollouts)
    return [
        TrainingSequence(
            r.group, r.completion.prompt_ids, r.completion.response_ids, r.completion.logprobs, r.reward, mask
        )
        for r, mask in zip(rollouts, masks, strict=True)
    ]


class PhaseClock:
    """Seconds per phase of a step, as `time/<phase>` metrics."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[f"time/{phase}"] = now - self._last
        self._last = now


class Trainer:
    """Owns the policy, rollout backend, executor, buffers and optimizer of one run.

    In a data-parallel job this is rank 0 (`world`); the other ranks run `azr.data_parallel.follow` and
    take part in every generation call and every update (see `azr.data_parallel`).
    """

    def __init__(
        self,
        config: TrainConfig,
        run: RunDir,
        *,
        resume: bool = False,
        backend: GenerationBackend | None = None,
        world: World = SINGLE_PROCESS,
    ):
        self.config = config
        self.run = run
        self.step = 0
        seed_everything(config.seed)
        self.rng = random.Random(config.seed)
        self.fmt = get_format(config.selfplay.prompt_format, config.selfplay.prompt_version)
        self.task_types: dict[str, TaskType] = {
            name: get_task_type(name, config.selfplay) for name in config.selfplay.task_types
        }
        checkpoint = run.latest_checkpoint() if resume else None
        self.world = world
        if world.size > 1:
            announce_start(world, config, checkpoint[1] if checkpoint else None)
        self.policy = load_training_policy(config, checkpoint[1] / "model" if checkpoint else None, world)
        self.backend = backend or make_backend(config.generation, self.policy, seed=config.seed)
        if world.size > 1:
            self.backend = ShardedBackend(self.backend, world)
        self.optimizer = make_optimizer(self.policy, config.optim)
        self.reference_model = load_frozen_reference(config.model) if config.optim.kl_coef > 0 else None
        self.executor = Executor(config.executor)
        self.buffers = open_buffers(run.buffer_path, self.task_types, cap=config.selfplay.buffer_cap)
        self._behaviour_keys: dict[str, str | None] = {}  # `_duplicate_keys`' cache, by `behaviour_cache_key`
        self.safety = SafetyMonitor(config.safety, run.root / FLAGS_FILENAME)
        self.safety_stop: SafetyStop | None = None  # set by a step whose flag rate passed the limit
        if resume:
            self._restore(checkpoint)
        else:
            self._fill_initial_buffers()
        if self.step == 0 and config.selfplay.seed_buffer_size:
            self._seed_phase()
        self.metrics = MetricsWriter(run, config, resume_step=self.step)

    # the step

    def train_step(self, on_phase: StepCallback = lambda phase: None) -> dict[str, Any]:
        """One self-play step over every task type, in the paper's order (or one solver-only step, in
        `selfplay.mode: solver-only`); returns its metrics."""
        self.step += 1
        if self.config.selfplay.mode == "solver-only":
            return self.solver_only_step(on_phase)
        clock = PhaseClock()
        on_phase("propose")
        proposals = self.propose()
        clock.lap("propose")
        on_phase("check proposals")
        self.check_proposals(proposals)
        added = self.grow_buffers(proposals)
        clock.lap("check")
        on_phase("solve")
        solutions = self.solve(proposals)
        clock.lap("solve")
        on_phase("judge")
        self.judge([*solutions, *(s for p in proposals for s in p.learnability)])
        clock.lap("judge")
        trained = [*proposals, *solutions]
        assign_rewards(trained, self.config.rewards)
        on_phase("update")
        update_metrics = self.update(trained)
        clock.lap("update")
        return self.record(proposals, solutions, added, update_metrics, clock.timings)

    def solver_only_step(self, on_phase: StepCallback = lambda phase: None) -> dict[str, Any]:
        """The control's step (the caller has advanced `self.step`): solve B split tasks per type, judge,
        reward, update; nothing is proposed and the buffers do not change."""
        clock = PhaseClock()
        on_phase("solve")
        solutions = self.solve_split()
        clock.lap("solve")
        on_phase("judge")
        self.judge(solutions)
        clock.lap("judge")
        assign_rewards(solutions, self.config.rewards)
        on_phase("update")
        update_metrics = self.update(solutions)
        clock.lap("update")
        return self.record([], solutions, {}, update_metrics, clock.timings)

    def solve_split(self) -> list[Rollout]:
        """solver-only, one generation call: B tasks per type drawn uniformly from the fixed split, each
        with a solver prompt built as in self-play."""
        solutions = []
        for name, task_type in self.task_types.items():
            drawn = self._shared_solver_examples(task_type)
            for task in self.buffers[name].sample_solver_batch(self.rng, self.config.selfplay.batch_size):
                prompt = self._solver_prompt(task_type, task, drawn)
                solutions.append(Rollout(name, "solve", prompt, task=task))
        self._generate(solutions, call=1)
        return solutions

    def propose(self) -> list[Rollout]:
        """Generation call 1: B proposals of every task type."""
        cfg = self.config.selfplay
        proposals = []
        for name, task_type in self.task_types.items():
            if cfg.shared_references:
                draws = task_type.shared_proposer_references(
                    self.buffers, self.rng, cfg.references, cfg.batch_size
                )
            else:  # each prompt draws its own, in turn
                draws = [None] * cfg.batch_size
            for references in draws:
                # A prompt over the token budget drops its last shared references, not its first: the
                # prompts still share the header and the references they all kept.
                prompt = self._proposer_prompt(task_type, references)
                proposals.append(Rollout(name, "propose", prompt.text, proposer_prompt=prompt))
        self._generate(proposals, call=0)
        return proposals

    def check_proposals(self, proposals: Sequence[Rollout]) -> None:
        """Parse every proposal and validate it in the sandbox (all submitted before any is awaited)."""
        futures = []
        with spread_over_nodes(self.executor, self.world):
            for rollout in proposals:
                task_type = self.task_types[rollout.task_type]
                rollout.parsed = task_type.parse_proposal(
                    self.fmt, rollout.proposer_prompt, rollout.completion.text
                )
                futures.append(task_type.submit_validation(self.executor, rollout.parsed, self.step))
        for rollout, future in zip(proposals, futures, strict=True):
            rollout.validation = future.result()

    def grow_buffers(self, proposals: Sequence[Rollout]) -> dict[str, int]:
        """Add this step's valid tasks to their buffers; each valid proposal gets its stored task (a
        duplicate gets the task it duplicates). Returns how many tasks were new, per type."""
        added = {}
        for name, buffer in self.buffers.items():
            valid = [p for p in proposals if p.task_type == name and p.valid]
            for proposal in valid:
                proposal.held_out = in_probe(proposal.validation.task)
            copied = self._program_copies(buffer, [p for p in valid if not p.held_out])
            added[name] = buffer.add(
                p.validation.task for p in valid if not p.held_out and id(p) not in copied
            )
            for proposal in valid:
                task = copied.get(id(proposal), proposal.validation.task)
                proposal.task = buffer.stored(task) or task
        return added

    def _program_copies(self, buffer: TaskBuffer, proposals: Sequence[Rollout]) -> dict[int, Task]:
        """With `selfplay.distinct_programs`: the valid proposals whose program (`_duplicate_keys`) the buffer
        or an earlier proposal of the step has, each with the task it copies (by `id` of the rollout)."""
        if not self.config.selfplay.distinct_programs:
            return {}
        stored = list(buffer.tasks)
        proposed = [proposal.validation.task for proposal in proposals]
        keys = self._duplicate_keys(stored + proposed)
        programs: dict[str, Task] = {}
        for task, key in zip(stored, keys, strict=False):
            programs.setdefault(key, task)
        copied = {}
        for proposal, key in zip(proposals, keys[len(stored) :], strict=True):
            if key in programs:
                copied[id(proposal)] = programs[key]
                proposal.program_copy = True
            else:
                programs[key] = proposal.validation.task
        return copied

    def _duplicate_keys(self, tasks: Sequence[Task]) -> list[str]:
        """What makes two tasks one program: its text up to names and layout (`program_key`) or, with
        `selfplay.distinct_behaviour`, its outputs on canonical arguments (`azr.behaviour`) where it has
        them. Behaviour keys are run in the sandbox once per program and input types, then remembered."""
        if not self.config.selfplay.distinct_behaviour:
            return [program_key(task.program) for task in tasks]
        cache_keys = [behaviour_cache_key(task) for task in tasks]
        missing = {}
        for task, cache_key in zip(tasks, cache_keys, strict=True):
            if cache_key not in self._behaviour_keys and cache_key not in missing:
                missing[cache_key] = submit_behaviour_key(self.executor, task)
        for cache_key, future in missing.items():
            self._behaviour_keys[cache_key] = future.result()
        return [
            copy_key(task.program, self._behaviour_keys[cache_key])
            for task, cache_key in zip(tasks, cache_keys, strict=True)
        ]

    def solve(self, proposals: Sequence[Rollout]) -> list[Rollout]:
        """Generation call 2: the solver batch of every type and the learnability samples of every valid
        proposal. Returns the solver rollouts, B per type, in batch order."""
        solutions, to_generate = [], []
        for name, task_type in self.task_types.items():
            drawn = self._shared_solver_examples(task_type)
            fresh = {}  # this step's distinct valid tasks, each with the first proposal that made it
            for proposal in proposals:
                if proposal.task_type == name and proposal.valid:
                    proposal.learnability = self._learnability_samples(task_type, proposal.task, drawn)
                    to_generate += proposal.learnability
                    if not proposal.held_out:
                        fresh.setdefault(task_key(proposal.task), proposal)
            batch = self.buffers[name].sample_solver_batch(
                self.rng, self.config.selfplay.batch_size, first=[p.task for p in fresh.values()]
            )
            for task in batch:
                proposal = fresh.pop(task_key(task), None)
                if proposal is not None:  # its first learnability sample is the solver's answer
                    proposal.learnability[0].trained = True
                    solutions.append(proposal.learnability[0])
                else:
                    prompt = self._solver_prompt(task_type, task, drawn)
                    solutions.append(Rollout(name, "solve", prompt, task=task))
                    to_generate.append(solutions[-1])
        self._generate(to_generate, call=1)
        return solutions

    def _learnability_samples(
        self, task_type: TaskType, task: Task, drawn: Sequence[Task] | None
    ) -> list[Rollout]:
        """n solver rollouts on one prompt for `task`, scored to estimate its solve rate."""
        prompt = self._solver_prompt(task_type, task, drawn)
        return [
            Rollout(task_type.name, "solve", prompt, task=task, trained=False)
            for _ in range(self.config.selfplay.learnability_samples)
        ]

    def judge(self, answers: Sequence[Rollout]) -> None:
        """Parse every answer and check it in the sandbox (all submitted before any is awaited)."""
        futures: list[Future[Verdict] | None] = []
        with spread_over_nodes(self.executor, self.world):
            for rollout in answers:
                task_type = self.task_types[rollout.task_type]
                rollout.parsed = task_type.parse_answer(self.fmt, rollout.completion.text)
                futures.append(task_type.submit_judgement(self.executor, rollout.task, rollout.parsed))
        for rollout, future in zip(answers, futures, strict=True):
            rollout.verdict = future.result() if future is not None else None

    def update(self, trained: Sequence[Rollout]) -> dict[str, float]:
        """One policy update on every trained rollout; then the rollout backend gets the new weights."""
        sequences = training_sequences(trained, [self._trained_tokens(rollout) for rollout in trained])
        if self.world.size > 1:
            announce_update(self.world, sequences)
        self.backend.sleep()
        result = policy_update(
            self.policy,
            self.optimizer,
            sequences,
            self.config.optim,
            reference_model=self.reference_model,
            world=self.world,
        )
        for rollout, advantage in zip(trained, result.advantages, strict=True):
            rollout.advantage = advantage
        self.backend.update_weights(self.policy.model)
        return result.metrics

    def _trained_tokens(self, rollout: Rollout) -> list[bool] | None:
        """Which of a rollout's response tokens the loss counts (`optim.mask_unchecked_outputs`)."""
        if not self.config.optim.mask_unchecked_outputs:
            return None
        template = self.task_types[rollout.task_type].template(rollout.role)
        decode = self.policy.tokenizer.decode
        ids = rollout.completion.response_ids
        spans = self.fmt.unchecked_spans(template, decode(ids, skip_special_tokens=True))
        return response_token_mask(lambda prefix: decode(prefix, skip_special_tokens=True), ids, spans)

    def record(
        self,
        proposals: Sequence[Rollout],
        solutions: Sequence[Rollout],
        added: dict[str, int],
        update_metrics: dict[str, float],
        timings: dict[str, float],
    ) -> dict[str, Any]:
        """The step's metrics; its samples go to samples/step_N.jsonl."""
        metrics: dict[str, Any] = {**mean_rewards([*proposals, *solutions])}
        accs = [p.solve_rate for p in proposals if p.valid]
        for name in self.task_types:
            metrics.update(self._type_metrics(name, proposals, solutions, added.get(name, 0)))
        metrics.update(update_metrics)
        generated = [*proposals, *solutions, *(s for p in proposals for s in p.learnability if not s.trained)]
        metrics["tokens/generated"] = sum(len(r.completion.response_ids) for r in generated)
        metrics["tokens_per_s/generation"] = metrics["tokens/generated"] / max(
            timings.get("time/propose", 0.0) + timings["time/solve"], 1e-9
        )
        metrics.update(timings)
        metrics["time/step"] = sum(timings.values())
        metrics.update(self._screen(proposals, solutions))
        self.metrics.histogram(self.step, "learnability/acc", accs)
        self.run.write_samples(self.step, self._samples([*proposals, *solutions]))
        return metrics

    def _screen(self, proposals: Sequence[Rollout], solutions: Sequence[Rollout]) -> dict[str, float]:
        """Screen every response of the step (learnability samples too) and every program the sandbox
        stopped. A step over `safety.max_flag_rate` is still recorded and checkpointed, then the run stops."""
        answers = [*solutions, *(s for p in proposals for s in p.learnability if not s.trained)]
        for rollout in [*proposals, *answers]:
            task_id = rollout.task.task_id if rollout.task is not None else None
            self.safety.screen(self.step, rollout.task_type, rollout.role, rollout.completion.text, task_id)
        for proposal in proposals:
            if proposal.is_parsed and not proposal.valid:
                status, _, error = proposal.validation.reason.partition(": ")
                program = proposal.parsed.program
                self.safety.screen_execution(self.step, proposal.task_type, "propose", status, error, program)
        for answer in answers:
            if answer.verdict is not None and not answer.correct:
                verdict, task_id = answer.verdict, answer.task.task_id
                self.safety.screen_execution(
                    self.step,
                    answer.task_type,
                    "solve",
                    verdict.status,
                    verdict.error,
                    answer.parsed,
                    task_id,
                )
        try:
            return self.safety.end_step(self.step)
        except SafetyStop as stop:
            self.safety_stop = stop
            return stop.metrics

    def _type_metrics(
        self, name: str, proposals: Sequence[Rollout], solutions: Sequence[Rollout], added: int
    ) -> dict[str, Any]:
        own_proposals = [p for p in proposals if p.task_type == name]
        own_solutions = [s for s in solutions if s.task_type == name]
        solver = {
            f"solve_rate/{name}": sum(s.correct for s in own_solutions) / len(own_solutions),
            f"buffer/{name}": len(self.buffers[name]),
        }
        if not own_proposals:  # solver-only: no proposer metrics
            return solver
        accs = [p.solve_rate for p in own_proposals if p.valid]
        reasons = Counter(p.validation.reason.split(":")[0].replace(" ", "_") for p in own_proposals)
        return {
            **solver,
            f"valid_rate/{name}": sum(p.valid for p in own_proposals) / len(own_proposals),
            f"learnability/{name}": sum(accs) / len(accs) if accs else None,
            f"solver_fresh/{name}": sum(
                s.task is not None and s.task.step == self.step for s in own_solutions
            ),
            f"buffer_added/{name}": added,
            f"held_out/{name}": sum(p.held_out for p in own_proposals),
            f"program_copies/{name}": sum(p.program_copy for p in own_proposals),
            **{f"proposals/{name}/{reason}": count for reason, count in reasons.items()},
        }

    def _samples(self, rollouts: Sequence[Rollout]) -> list[dict[str, Any]]:
        """Up to `logging.samples_per_step` rows per (type, role) group."""
        per_group: dict[str, int] = defaultdict(int)
        rows = []
        for rollout in rollouts:
            if per_group[rollout.group] < self.config.logging.samples_per_step:
                per_group[rollout.group] += 1
                rows.append(sample_row(rollout, self.step))
        return rows

    # prompts and generation

    def _generate(self, rollouts: Sequence[Rollout], call: int) -> None:
        """Sample every rollout's completion in one backend call."""
        if not rollouts:
            return
        params = [self._params(self.task_types[r.task_type], r.role) for r in rollouts]
        completions: list[Completion] = self.backend.generate(
            [r.prompt for r in rollouts], params, seed=step_seed(self.config.seed, self.step, call)
        )
        for rollout, completion in zip(rollouts, completions, strict=True):
            rollout.completion = completion

    def _params(self, task_type: TaskType, role: str) -> SamplingParams:
        gen = self.config.generation
        budget = gen.propose_max_new_tokens if role == "propose" else gen.solve_max_new_tokens
        return SamplingParams(
            temperature=gen.temperature,
            top_p=gen.top_p,
            max_new_tokens=budget,
            stop=tuple(task_type.stop(self.fmt, role)),
        )

    def _prompt_tokens(self, text: str) -> int:
        return len(self.policy.tokenizer(text)["input_ids"])

    def _proposer_prompt(
        self, task_type: TaskType, references: Sequence[Task] | None = None
    ) -> ProposerPrompt:
        """The given references, else K drawn as the task type says; while the prompt is over
        `max_prompt_tokens`, one fewer is shown (never fewer than the type's `min_references`)."""
        if references is None:
            references = task_type.proposer_references(
                self.buffers, self.rng, self.config.selfplay.references
            )
        prompt = task_type.proposer_prompt(self.fmt, references)
        while (
            len(references) > task_type.min_references
            and self._prompt_tokens(prompt.text) > self.config.selfplay.max_prompt_tokens
        ):
            references = references[:-1]
            prompt = task_type.proposer_prompt(self.fmt, references)
        return prompt

    def _shared_solver_examples(self, task_type: TaskType) -> list[Task] | None:
        """With `shared_solver_examples`, the one draw of solver examples for this type's prompts of the
        step (one spare, for a task that is among them); else None: each prompt draws its own."""
        if not self.config.selfplay.shared_solver_examples:
            return None
        return self.buffers[task_type.name].sample_references(
            self.rng, self.config.selfplay.solver_examples + 1
        )

    def _solver_prompt(self, task_type: TaskType, task: Task, drawn: Sequence[Task] | None = None) -> str:
        """The question, after up to `solver_examples` solved buffer tasks that fit in `max_prompt_tokens`:
        from `drawn` when given, else drawn for this prompt."""
        wanted = self.config.selfplay.solver_examples
        if drawn is None:
            drawn = self.buffers[task_type.name].sample_references(self.rng, wanted + 1)
        examples = [example for example in drawn if example.program != task.program][:wanted]
        prompt = task_type.solver_prompt(self.fmt, task, examples)
        while examples and self._prompt_tokens(prompt) > self.config.selfplay.max_prompt_tokens:
            examples = examples[:-1]
            prompt = task_type.solver_prompt(self.fmt, task, examples)
        return prompt

    # setup

    def _fill_initial_buffers(self) -> None:
        """Self-play: identity seed task per type, then (optionally) a seed file. Solver-only: the training
        split alone. Either file is re-validated in our sandbox."""
        cfg = self.config.selfplay
        solver_only = cfg.mode == "solver-only"
        spec = cfg.train_tasks if solver_only else cfg.seed_file
        for name, task_type in self.task_types.items():
            buffer = self.buffers[name]
            if not solver_only:
                buffer.add(task_type.seed_tasks())
            if not spec:
                continue
            path = task_file_path(spec, task_type)
            tasks = [task for task in load_seed_tasks(path) if task_type.accepts(task)]
            if solver_only:  # the control's split is the other side of the probe's: a leak voids the control
                try:
                    check_no_probe_tasks(tasks, f"selfplay.train_tasks {path}")
                except ProbeLeakError as error:
                    raise ConfigError(str(error)) from error
            else:
                trainable = without_probe_tasks(tasks)
                if len(trainable) < len(tasks):
                    log.warning(
                        "%s: %d %s task(s) on a held-out probe program left out",
                        path,
                        len(tasks) - len(trainable),
                        name,
                    )
                tasks = trainable
            valid = validate_seed_tasks(task_type, self.executor, tasks)
            if solver_only and not valid:
                raise ConfigError(f"selfplay.train_tasks {path}: no valid {name} task")
            # A refill (a resume before the first checkpoint) finds the split stored already.
            if solver_only and len({task_key(t) for t in [*buffer.tasks, *valid]}) > buffer.cap:
                raise ConfigError(
                    f"selfplay.train_tasks {path}: {len(valid)} {name} tasks do not fit in "
                    f"selfplay.buffer_cap ({buffer.cap}), and the split must not lose any"
                )
            added = buffer.add(valid)
            log.info("%s: %d of %d %s tasks valid and new", path, added, len(tasks), name)

    def _seed_phase(self) -> None:
        """Before step 1, grow each buffer to `seed_buffer_size` with the policy's proposals, no updates."""
        cfg = self.config.selfplay

        def generate(prompts: list[str], request: GenerationRequest) -> list[str]:
            params = self._params(self.task_types[request.task_type], request.role)
            return [c.text for c in self.backend.generate(prompts, params, seed=self.rng.randrange(2**62))]

        for name, task_type in self.task_types.items():
            buffer = self.buffers[name]
            if len(buffer) >= cfg.seed_buffer_size:
                continue
            result = grow_seed_tasks(
                task_type,
                self.fmt,
                self.executor,
                generate,
                buffer.tasks,
                cfg.seed_buffer_size,
                self.rng,
                other_pools={other: pool for other, pool in self.buffers.items() if other != name},
                references=cfg.references,
                batch_size=self.config.generation.max_batch_size,
                max_proposals=cfg.seed_max_proposals or None,
                keep=self._seed_filter(buffer.tasks),
            )
            buffer.add(result.tasks)
            log.log(
                logging.INFO if result.reached else logging.WARNING,
                "seeding %s: %d tasks (target %d) from %d proposals, %d valid",
                name,
                len(buffer),
                cfg.seed_buffer_size,
                result.proposals,
                result.valid,
            )

    def _seed_filter(self, initial: Sequence[Task]) -> Callable[[Task], bool]:
        """Which valid seed-phase tasks to keep: none on a probe program and, with
        `selfplay.distinct_programs`, none on a program already kept (the initial tasks' included)."""
        if not self.config.selfplay.distinct_programs:
            return lambda task: not in_probe(task)
        kept = {program_key(task.program) for task in initial}

        def keep(task: Task) -> bool:
            key = program_key(task.program)
            if in_probe(task) or key in kept:
                return False
            kept.add(key)
            return True

        return keep

    def _restore(self, checkpoint: tuple[int, Path] | None) -> None:
        """Return to the last complete checkpoint: weights, optimizer, RNG, step, and buffers as they were."""
        self.run.remove_incomplete_checkpoints()
        if checkpoint is None:
            log.info("no complete checkpoint in %s: starting again from step 0", self.run.root)
            for buffer in self.buffers.values():
                buffer.remove_after(0)
            # Filling is idempotent (the buffer deduplicates), so a kill midway through it is harmless.
            self._fill_initial_buffers()
            self.run.trim_metrics(0)
            self.safety.trim_after(0)
            return
        step, folder = checkpoint
        state = torch.load(folder / "trainer_state.pt", weights_only=False)
        restore_optimizer(self.optimizer, folder / "optimizer.pt")
        self.rng.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]
        removed = sum(buffer.remove_after(step) for buffer in self.buffers.values())
        self.run.trim_metrics(step)
        self.safety.trim_after(step)
        log.info("resumed at step %d (dropped %d tasks added after it)", step, removed)

    def save_checkpoint(self) -> Path:
        if is_sharded(self.policy.model):
            announce_checkpoint(self.world)
        model_state, optimizer_state = full_state_dicts(self.policy.model, self.optimizer, keep=True)

        def write(folder: Path) -> None:
            save_policy_weights(self.policy, folder / "model", model_state)
            torch.save(optimizer_state, folder / "optimizer.pt")
            torch.save(
                {"step": self.step, "python_rng": self.rng.getstate(), "torch_rng": torch.get_rng_state()},
                folder / "trainer_state.pt",
            )

        return self.run.save_checkpoint(self.step, write, keep_last=self.config.checkpoint.keep_last)

    def validate(self) -> dict[str, float]:
        """In-training validation on a benchmark subset, with the training backend and sandbox: a score per
        benchmark (and per probe benchmark's shortcut-proof subset); its records go to `eval/step_N.jsonl`."""
        from azr.evaluation.runner import evaluate
        from azr.probe import shortcut_proof_scores

        report = evaluate(
            self.backend,
            self.executor,
            self.config.eval.benchmarks,
            limit=self.config.eval.limit,
            max_new_tokens=self.config.eval.max_new_tokens,
            prompt_style=self.config.eval.prompt_style,
            seed=self.config.seed,
        )
        self.run.write_eval_records(self.step, report.records)
        scores = {**report.scores, **shortcut_proof_scores(report.records)}
        return {f"eval/{name}": score for name, score in scores.items()}

    def close(self) -> None:
        self.executor.close()
        self.metrics.close()


def summary_table(
    records: Sequence[dict[str, Any]], task_types: Sequence[str] = ("deduction", "abduction", "induction")
):
    """A rich table, one row per step: rewards, valid-proposal and solve rates per task type, loss, time."""
    from rich.table import Table

    initials = "/".join(name[:3] for name in task_types)
    table = Table(title=f"self-play metrics per step (each cell: {initials})")
    for column in (
        "step",
        "propose reward",
        "solve reward",
        "valid proposals",
        "solve rate",
        "loss",
        "s/step",
    ):
        table.add_column(column, justify="right")

    def cell(record: dict[str, Any], pattern: str) -> str:
        values = [record.get(pattern.format(name)) for name in task_types]
        return " ".join("-" if v is None or v != v else f"{v:.2f}" for v in values)

    for record in records:
        table.add_row(
            str(record["step"]),
            cell(record, "reward/{}/propose"),
            cell(record, "reward/{}/solve"),
            cell(record, "valid_rate/{}"),
            cell(record, "solve_rate/{}"),
            f"{record.get('update/loss', float('nan')):.4f}",
            f"{record.get('time/step', float('nan')):.0f}",
        )
    return table


def run_training(
    config: TrainConfig, run: RunDir, *, resume: bool, console=None, world: World = SINGLE_PROCESS
) -> list[dict[str, Any]]:
    """Train until `config.steps`, checkpointing as configured; returns the metrics of every step.
    In a data-parallel job, rank 0 runs this and the other ranks `azr.data_parallel.follow`."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = console or Console(stderr=True)
    transformers_logging.disable_progress_bar()
    log_handler = attach_file_log(run)
    trainer = Trainer(config, run, resume=resume, world=world)
    try:
        if trainer.step >= config.steps:
            console.print(f"run already at step {trainer.step} of {config.steps}: nothing to do")
        with Progress(
            TextColumn("[bold]step {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as progress:
            bar = progress.add_task("starting", total=config.steps, completed=trainer.step)
            while trainer.step < config.steps:
                metrics = trainer.train_step(on_phase=lambda phase: progress.update(bar, description=phase))
                if config.eval.every_steps and trainer.step % config.eval.every_steps == 0:
                    progress.update(bar, description="validation")
                    metrics.update(trainer.validate())
                trainer.metrics.write(trainer.step, metrics)
                stopping = trainer.safety_stop is not None
                if (
                    stopping
                    or trainer.step % config.checkpoint.every_steps == 0
                    or trainer.step == config.steps
                ):
                    progress.update(bar, description="checkpoint")
                    trainer.save_checkpoint()
                rewards = "  ".join(
                    f"{key.removeprefix('reward/')}={value:.2f}"
                    for key, value in metrics.items()
                    if key.startswith("reward/")
                )
                progress.console.print(f"step {trainer.step}: {rewards}  ({metrics['time/step']:.0f}s)")
                log.info("step %d: %s", trainer.step, rewards)
                progress.update(bar, completed=trainer.step, description="")
                if trainer.safety_stop is not None:
                    raise trainer.safety_stop
        # Only on success: after a failure the other ranks may be inside another collective, and
        # rank 0's non-zero exit makes the launcher stop them.
        release_followers(world)
    finally:
        trainer.close()
        logging.getLogger("azr").removeHandler(log_handler)
    return run.read_metrics()
