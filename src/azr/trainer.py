"""The self-play trainer (SPEC 3): one loop you can read top to bottom.

A step, for all task types at once:
  1. propose + solve   one batched generation: B proposer prompts and B solver prompts per type
  2. validate + judge  proposals and answers go to the sandboxed executor as futures
  3. learnability      n solver samples per valid proposal, generated while the executor judges step 2
  4. rewards           solver 0/1, proposer 1 - acc (learnability), format penalties
  5. update            TRR++ advantages over the six (type, role) groups, one PPO-clip step
  6. record            buffers grow, metrics and samples are written, a checkpoint is saved

The rollout backend sits behind `GenerationBackend`, so a vLLM backend drops in without touching the loop.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from azr.advantages import policy_loss, token_advantages, trr_advantages
from azr.buffer import open_buffers
from azr.config import TrainConfig
from azr.executor import Executor, Verdict
from azr.generation import Completion, SamplingParams, TransformersBackend
from azr.metrics import MetricsWriter
from azr.parsing import BadFormat
from azr.policy import (
    LoraSettings,
    Policy,
    load_policy,
    pack_sequences,
    save_policy_weights,
    sequence_logprobs,
)
from azr.prompts import get_format
from azr.rewards import proposer_reward, solver_reward
from azr.run_dir import RunDir, attach_file_log
from azr.seeding import GenerationRequest, grow_seed_tasks, validate_seed_tasks
from azr.tasks import Proposal, ProposerPrompt, Task, TaskType, Validation, get_task_type, load_seed_tasks
from azr.tasks.seeds import shipped_seed_path

log = logging.getLogger(__name__)

StepCallback = Callable[[str], None]


@dataclass
class Rollout:
    """One trained sequence: a response, the (type, role) group it belongs to, and its reward."""

    task_type: str
    role: str
    completion: Completion
    reward: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        return f"{self.task_type}/{self.role}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def step_seed(base_seed: int, step: int, call: int) -> int:
    """A distinct, reproducible sampling seed per (step, generation call): a resumed step samples the same."""
    return (base_seed * 1_000_003 + step * 101 + call) % (2**62)


class Trainer:
    """Owns the policy, backend, executor, buffers and optimizer of one run."""

    def __init__(self, config: TrainConfig, run: RunDir, *, resume: bool = False):
        self.config = config
        self.run = run
        self.step = 0
        seed_everything(config.seed)
        self.rng = random.Random(config.seed)
        self.fmt = get_format(config.selfplay.prompt_format)
        self.task_types: dict[str, TaskType] = {
            name: get_task_type(
                name, **({"n_inputs": config.selfplay.induction_inputs} if name == "induction" else {})
            )
            for name in config.selfplay.task_types
        }
        checkpoint = run.latest_checkpoint() if resume else None
        self.policy = self._load_policy(checkpoint[1] / "model" if checkpoint else None)
        self.backend = TransformersBackend.from_policy(
            self.policy, max_batch_size=config.generation.max_batch_size
        )
        self.optimizer = torch.optim.AdamW(
            self.policy.trainable_parameters(),
            lr=config.optim.lr,
            betas=config.optim.betas,
            weight_decay=config.optim.weight_decay,
        )
        self.reference_model = self._frozen_reference() if config.optim.kl_coef > 0 else None
        self.executor = Executor(config.executor)
        self.buffers = open_buffers(run.buffer_path, self.task_types, cap=config.selfplay.buffer_cap)
        if resume:
            self._restore(checkpoint)
        else:
            self._fill_initial_buffers()
        if self.step == 0 and config.selfplay.seed_buffer_size:
            self._seed_phase()
        self.metrics = MetricsWriter(run, config, resume_step=self.step)

    # setup

    def _load_policy(self, checkpoint_model: Path | None) -> Policy:
        model_cfg = self.config.model
        lora = (
            LoraSettings(
                r=model_cfg.lora.r,
                alpha=model_cfg.lora.alpha,
                dropout=model_cfg.lora.dropout,
                **(
                    {"target_modules": tuple(model_cfg.lora.target_modules)}
                    if model_cfg.lora.target_modules
                    else {}
                ),
            )
            if model_cfg.lora.enabled
            else None
        )
        return load_policy(
            checkpoint_model if checkpoint_model is not None else model_cfg.path,
            dtype=model_cfg.dtype,
            lora=lora,
            gradient_checkpointing=model_cfg.gradient_checkpointing,
            device=None if self.config.device == "auto" else self.config.device,
        )

    def _frozen_reference(self) -> torch.nn.Module:
        reference = load_policy(self.config.model.path, dtype=self.config.model.dtype).model
        reference.requires_grad_(False)
        return reference.eval()

    def _fill_initial_buffers(self) -> None:
        """Identity seed task per type, then (optionally) a seed file, re-validated in our sandbox."""
        seed_file = self.config.selfplay.seed_file
        for name, task_type in self.task_types.items():
            self.buffers[name].add(task_type.seed_tasks())
            if seed_file:
                path = (
                    shipped_seed_path("induction" if name == "induction" else "io")
                    if seed_file == "builtin"
                    else Path(seed_file)
                )
                tasks = [t for t in load_seed_tasks(path) if bool(t.inputs) == (name == "induction")]
                added = self.buffers[name].add(validate_seed_tasks(task_type, self.executor, tasks))
                log.info("seed file %s: %d of %d %s tasks valid and new", path, added, len(tasks), name)

    def _seed_phase(self) -> None:
        """SPEC 7: grow each buffer to `seed_buffer_size` with the policy's proposals, before any update."""
        cfg = self.config.selfplay
        io_types = [name for name in ("deduction", "abduction") if name in self.task_types]

        def generate(prompts: list[str], request: GenerationRequest) -> list[str]:
            params = self._params(self.task_types[request.task_type], request.role)
            return [c.text for c in self.backend.generate(prompts, params, seed=self.rng.randrange(2**62))]

        for name, task_type in self.task_types.items():
            buffer = self.buffers[name]
            if len(buffer) >= cfg.seed_buffer_size:
                continue
            programs = (
                [task for io in io_types for task in self.buffers[io].tasks] if name == "induction" else []
            )
            result = grow_seed_tasks(
                task_type,
                self.fmt,
                self.executor,
                generate,
                buffer.tasks,
                cfg.seed_buffer_size,
                self.rng,
                programs=programs,
                references=cfg.references,
                batch_size=self.config.generation.max_batch_size,
                max_proposals=cfg.seed_max_proposals or None,
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
            return
        step, folder = checkpoint
        state = torch.load(folder / "trainer_state.pt", weights_only=False)
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        self.rng.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]
        removed = sum(buffer.remove_after(step) for buffer in self.buffers.values())
        self.run.trim_metrics(step)
        log.info("resumed at step %d (dropped %d tasks added after it)", step, removed)

    # checkpoints

    def save_checkpoint(self) -> Path:
        def write(folder: Path) -> None:
            save_policy_weights(self.policy, folder / "model")
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
            torch.save(
                {"step": self.step, "python_rng": self.rng.getstate(), "torch_rng": torch.get_rng_state()},
                folder / "trainer_state.pt",
            )

        return self.run.save_checkpoint(self.step, write, keep_last=self.config.checkpoint.keep_last)

    # generation helpers

    def _params(self, task_type: TaskType, role: str) -> SamplingParams:
        gen = self.config.generation
        budget = gen.propose_max_new_tokens if role == "propose" else gen.solve_max_new_tokens
        return SamplingParams(
            temperature=gen.temperature,
            top_p=gen.top_p,
            max_new_tokens=budget,
            stop=tuple(task_type.stop(self.fmt, role)),
        )

    def _generate(self, requests: Sequence[tuple[str, SamplingParams]], call: int) -> list[Completion]:
        if not requests:
            return []
        prompts, params = zip(*requests, strict=True)
        return self.backend.generate(
            list(prompts), list(params), seed=step_seed(self.config.seed, self.step, call)
        )

    def _prompt_tokens(self, text: str) -> int:
        return len(self.policy.tokenizer(text)["input_ids"])

    def _proposer_prompt(self, name: str, task_type: TaskType) -> ProposerPrompt:
        """K references from the buffer; while the prompt is over `max_prompt_tokens`, one fewer is shown.
        Induction prompts are about one program drawn from the deduction/abduction buffers."""
        k = self.config.selfplay.references
        if name == "induction":
            program_source = self.rng.choice(
                [t for t in ("deduction", "abduction") if t in self.task_types] or [name]
            )
            references = self.buffers[program_source].sample_references(self.rng, 1)
            references += self.buffers[name].sample_references(self.rng, max(k - 1, 0))
            keep_at_least = 1
        else:
            references = self.buffers[name].sample_references(self.rng, k)
            keep_at_least = 0
        prompt = task_type.proposer_prompt(self.fmt, references)
        while (
            len(references) > keep_at_least
            and self._prompt_tokens(prompt.text) > self.config.selfplay.max_prompt_tokens
        ):
            references = references[:-1]
            prompt = task_type.proposer_prompt(self.fmt, references)
        return prompt

    def _solver_prompt(self, name: str, task_type: TaskType, task: Task) -> str:
        """The question, after up to `solver_examples` solved buffer tasks that fit in `max_prompt_tokens`."""
        examples = [
            example
            for example in self.buffers[name].sample_references(
                self.rng, self.config.selfplay.solver_examples + 1
            )
            if example.program != task.program
        ][: self.config.selfplay.solver_examples]
        prompt = task_type.solver_prompt(self.fmt, task, examples)
        while examples and self._prompt_tokens(prompt) > self.config.selfplay.max_prompt_tokens:
            examples = examples[:-1]
            prompt = task_type.solver_prompt(self.fmt, task, examples)
        return prompt

    # the step

    def train_step(self, on_phase: StepCallback = lambda phase: None) -> dict[str, Any]:
        """One self-play step over every task type; returns its metrics."""
        self.step += 1
        cfg = self.config.selfplay
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(phase: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[f"time/{phase}"] = now - clock
            clock = now

        # 1. propose + solve: one generation call for all types and both roles.
        on_phase("propose+solve")
        proposer_prompts = {
            name: [self._proposer_prompt(name, tt) for _ in range(cfg.batch_size)]
            for name, tt in self.task_types.items()
        }
        solver_tasks = {
            name: self.buffers[name].sample_solver_batch(self.rng, cfg.batch_size) for name in self.task_types
        }
        requests: list[tuple[str, SamplingParams]] = []
        for name, tt in self.task_types.items():
            requests += [(p.text, self._params(tt, "propose")) for p in proposer_prompts[name]]
            requests += [
                (self._solver_prompt(name, tt, task), self._params(tt, "solve"))
                for task in solver_tasks[name]
            ]
        completions = iter(self._generate(requests, call=0))
        proposals: dict[str, list[Completion]] = {}
        solutions: dict[str, list[Completion]] = {}
        for name in self.task_types:  # the order `requests` was built in
            proposals[name] = [next(completions) for _ in range(cfg.batch_size)]
            solutions[name] = [next(completions) for _ in range(cfg.batch_size)]
        generated_tokens = sum(
            len(c.response_ids) for group in (proposals, solutions) for cs in group.values() for c in cs
        )
        lap("generate")

        # 2. validate proposals and judge answers in the sandbox, in the background.
        on_phase("validate")
        parsed_proposals = {
            name: [
                tt.parse_proposal(self.fmt, prompt, c.text)
                for prompt, c in zip(proposer_prompts[name], proposals[name], strict=True)
            ]
            for name, tt in self.task_types.items()
        }
        validation_futures = {
            name: tt.validate_batch(self.executor, parsed_proposals[name], step=self.step)
            for name, tt in self.task_types.items()
        }
        parsed_answers = {
            name: [tt.parse_answer(self.fmt, c.text) for c in solutions[name]]
            for name, tt in self.task_types.items()
        }
        verdict_futures = {
            name: tt.judge_batch(self.executor, solver_tasks[name], parsed_answers[name])
            for name, tt in self.task_types.items()
        }
        validations = {name: [f.result() for f in futures] for name, futures in validation_futures.items()}
        lap("validate")

        # 3. learnability: n sampled answers for every valid proposal (scored, not trained on).
        on_phase("learnability")
        learn_requests: list[tuple[str, SamplingParams]] = []
        learn_index: list[tuple[str, int]] = []
        for name, tt in self.task_types.items():
            for i, validation in enumerate(validations[name]):
                if validation.task is not None:
                    prompt = self._solver_prompt(name, tt, validation.task)
                    learn_requests += [(prompt, self._params(tt, "solve"))] * cfg.learnability_samples
                    learn_index += [(name, i)] * cfg.learnability_samples
        learn_completions = self._generate(learn_requests, call=1)
        generated_tokens += sum(len(c.response_ids) for c in learn_completions)
        lap("learnability_generate")
        learn_futures: list[Future[Verdict] | None] = []
        for (name, i), completion in zip(learn_index, learn_completions, strict=True):
            tt, task = self.task_types[name], validations[name][i].task
            answer = tt.parse_answer(self.fmt, completion.text)
            learn_futures.append(
                None if isinstance(answer, BadFormat) else tt.judge(self.executor, task, answer)
            )
        solve_counts: dict[tuple[str, int], int] = Counter()
        for key, future in zip(learn_index, learn_futures, strict=True):
            solve_counts[key] += int(future is not None and future.result().correct)
        verdicts = {
            name: [f.result() if f is not None else None for f in futures]
            for name, futures in verdict_futures.items()
        }
        lap("judge")

        # 4. rewards.
        rollouts: list[Rollout] = []
        metrics: dict[str, Any] = {}
        learnability_accs: list[float] = []
        for name in self.task_types:
            accs = []
            reasons: Counter[str] = Counter()
            for i, (completion, parsed, validation) in enumerate(
                zip(proposals[name], parsed_proposals[name], validations[name], strict=True)
            ):
                acc = (
                    solve_counts[(name, i)] / cfg.learnability_samples
                    if validation.task is not None
                    else None
                )
                rollouts.append(self._proposer_rollout(name, completion, parsed, validation, acc))
                reasons[validation.reason.split(":")[0]] += 1
                if acc is not None:
                    accs.append(acc)
            learnability_accs += accs
            for task, completion, answer, verdict in zip(
                solver_tasks[name], solutions[name], parsed_answers[name], verdicts[name], strict=True
            ):
                rollouts.append(self._solver_rollout(name, task, completion, answer, verdict))
            valid = [v.task for v in validations[name] if v.task is not None]
            metrics[f"valid_rate/{name}"] = len(valid) / cfg.batch_size
            metrics[f"solve_rate/{name}"] = (
                sum(bool(v and v.correct) for v in verdicts[name]) / cfg.batch_size
            )
            metrics[f"learnability/{name}"] = sum(accs) / len(accs) if accs else None
            for reason, count in reasons.items():
                metrics[f"proposals/{name}/{reason.replace(' ', '_')}"] = count
            # 6a. grow the buffer with this step's valid tasks (deduplicated by the buffer).
            metrics[f"buffer_added/{name}"] = self.buffers[name].add(valid)
        for group in sorted({r.group for r in rollouts}):
            rewards = [r.reward for r in rollouts if r.group == group]
            metrics[f"reward/{group}"] = sum(rewards) / len(rewards)
        lap("rewards")

        # 5. update.
        on_phase("update")
        metrics.update(self.policy_update(rollouts))
        lap("update")

        # 6. record.
        for name in self.task_types:
            metrics[f"buffer/{name}"] = len(self.buffers[name])
        metrics["tokens/generated"] = generated_tokens
        generate_seconds = timings["time/generate"] + timings["time/learnability_generate"]
        metrics["tokens_per_s/generation"] = generated_tokens / max(generate_seconds, 1e-9)
        metrics.update(timings)
        metrics["time/step"] = sum(timings.values())
        self.metrics.histogram(self.step, "learnability/acc", learnability_accs)
        self.run.write_samples(self.step, self._samples(rollouts))
        return metrics

    # rewards and samples

    def _proposer_rollout(
        self,
        name: str,
        completion: Completion,
        parsed: Proposal | BadFormat,
        validation: Validation,
        acc: float | None,
    ) -> Rollout:
        is_parsed = not isinstance(parsed, BadFormat)
        reward = proposer_reward(is_parsed, validation.valid, acc, self.config.rewards)
        details = {"valid": validation.valid, "reason": validation.reason, "solve_rate": acc}
        if validation.task is not None:
            details["task"] = validation.task.__dict__
        return Rollout(name, "propose", completion, reward, details)

    def _solver_rollout(
        self, name: str, task: Task, completion: Completion, answer: str | BadFormat, verdict: Verdict | None
    ) -> Rollout:
        is_parsed = not isinstance(answer, BadFormat)
        correct = bool(verdict is not None and verdict.correct)
        reward = solver_reward(is_parsed, correct, self.config.rewards)
        details = {
            "task": task.__dict__,
            "answer": answer if is_parsed else None,
            "format_error": None if is_parsed else answer.reason,
            "correct": correct,
            "status": str(verdict.status.value) if verdict is not None else None,
        }
        return Rollout(name, "solve", completion, reward, details)

    def _samples(self, rollouts: Sequence[Rollout]) -> list[dict[str, Any]]:
        per_group: dict[str, int] = defaultdict(int)
        samples = []
        for rollout in rollouts:
            if per_group[rollout.group] >= self.config.logging.samples_per_step:
                continue
            per_group[rollout.group] += 1
            samples.append(
                {
                    "step": self.step,
                    "task_type": rollout.task_type,
                    "role": rollout.role,
                    "prompt": rollout.completion.prompt,
                    "response": rollout.completion.text,
                    "finish_reason": rollout.completion.finish_reason,
                    "reward": rollout.reward,
                    **rollout.details,
                }
            )
        return samples

    # update

    def policy_update(self, rollouts: Sequence[Rollout]) -> dict[str, float]:
        """One PPO-clip step on all rollouts, with TRR++ advantages per (type, role) group.

        The loss is the mean over every response token of the step, whatever the micro-batching.
        """
        optim = self.config.optim
        model = self.policy.model
        rewards = torch.tensor([r.reward for r in rollouts], dtype=torch.float32)
        advantages = trr_advantages(rewards, [r.group for r in rollouts], eps=optim.advantage_eps)
        total_tokens = sum(len(r.completion.response_ids) for r in rollouts)
        pad_id = self.backend.pad_token_id
        # Similar lengths together keep padding, and so wasted compute, small.
        order = sorted(
            range(len(rollouts)),
            key=lambda i: len(rollouts[i].completion.prompt_ids) + len(rollouts[i].completion.response_ids),
        )
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = defaultdict(float)
        started = time.perf_counter()
        for start in range(0, len(order), optim.micro_batch_size):
            batch = [rollouts[i] for i in order[start : start + optim.micro_batch_size]]
            packed = pack_sequences(
                [r.completion.prompt_ids for r in batch], [r.completion.response_ids for r in batch], pad_id
            )
            device = self.policy.device
            mask = packed.response_mask.to(device)
            old_logprobs = torch.zeros(mask.shape, dtype=torch.float32)
            for row, rollout in enumerate(batch):
                old_logprobs[row, : len(rollout.completion.logprobs)] = torch.tensor(
                    rollout.completion.logprobs
                )
            batch_advantages = token_advantages(
                advantages[[order[start + j] for j in range(len(batch))]], mask.cpu()
            )
            with self.policy.autocast():
                logprobs, entropy = sequence_logprobs(
                    model,
                    packed.input_ids.to(device),
                    packed.attention_mask.to(device),
                    mask,
                    chunk_size=optim.logprob_chunk_size,
                )
                reference_logprobs = None
                if self.reference_model is not None:
                    with torch.no_grad():
                        reference_logprobs, _ = sequence_logprobs(
                            self.reference_model,
                            packed.input_ids.to(device),
                            packed.attention_mask.to(device),
                            mask,
                            chunk_size=optim.logprob_chunk_size,
                        )
            result = policy_loss(
                logprobs,
                old_logprobs.to(device),
                batch_advantages.to(device),
                mask,
                clip=optim.clip_ratio,
                entropy=entropy,
                entropy_coef=optim.entropy_coef,
                ref_logprobs=reference_logprobs,
                kl_coef=optim.kl_coef,
            )
            # policy_loss is a token mean within the micro-batch; weighting by its share of the step's
            # tokens makes the accumulated gradient that of one token mean over the whole step.
            share = int(mask.sum()) / total_tokens
            (result.loss * share).backward()
            for key in ("loss", "policy", "entropy", "kl", "clip_fraction", "ratio"):
                totals[key] += float(getattr(result, key).detach()) * share
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.trainable_parameters(), optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        metrics = {f"update/{key}": value for key, value in totals.items()}
        metrics["update/grad_norm"] = float(grad_norm)
        metrics["update/tokens"] = total_tokens
        metrics["tokens_per_s/update"] = sum(
            len(r.completion.prompt_ids) + len(r.completion.response_ids) for r in rollouts
        ) / max(seconds, 1e-9)
        return metrics

    def validate(self) -> dict[str, float]:
        """In-training validation on a benchmark subset, with the training backend and sandbox."""
        from azr.evaluation.runner import evaluate

        report = evaluate(
            self.backend,
            self.executor,
            self.config.eval.benchmarks,
            limit=self.config.eval.limit,
            max_new_tokens=self.config.eval.max_new_tokens,
            prompt_style=self.config.eval.prompt_style,
            seed=self.config.seed,
        )
        return {f"eval/{name}": score for name, score in report.scores.items()}

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


def run_training(config: TrainConfig, run: RunDir, *, resume: bool, console=None) -> list[dict[str, Any]]:
    """Train until `config.steps`, checkpointing as configured; returns the metrics of every step."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = console or Console(stderr=True)
    transformers_logging.disable_progress_bar()
    log_handler = attach_file_log(run)
    trainer = Trainer(config, run, resume=resume)
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
                if trainer.step % config.checkpoint.every_steps == 0 or trainer.step == config.steps:
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
    finally:
        trainer.close()
        logging.getLogger("azr").removeHandler(log_handler)
    return run.read_metrics()
