"""Build the held-out probe and the control's training split (`azr/data/probe/`) from a seed.

The base model proposes tasks as self-play does, with the sampling settings of a preset (`cpu-coder`:
Qwen2.5-Coder-0.5B, the int8 rollout copy, temperature 1, completion prompts, K = 3 references, N = 3
induction inputs):

1. Deduction and abduction proposals, B prompts a round, each showing K references drawn from a pool that
   starts as self-play's buffer does (the identity task and the shipped seed programs, re-validated) and
   grows with every valid proposal. Every proposal is validated in the sandbox, which computes the output.
2. Cleaning: tasks whose program (after `normalize_program`) is one of a training seed (the shipped seed
   files, the identity seeds) are dropped, then repeated programs (the first proposal kept).
3. The split, by program: each type's tasks in a seeded shuffle fill the probe up to `--probe-size`, the
   rest go to the training split; a program already placed follows its placement, so no program is on
   both sides.
4. Induction proposals, one stream per side: the program to write inputs for comes from that side's
   deduction/abduction tasks (each in turn), the worked examples from a pool that starts with the identity
   and shipped induction seeds. Cleaned the same way, one task per program.
5. Every kept task is validated again in a fresh run; one whose outputs differ is dropped.
6. Each probe task gets its solver prompt's worked example (`solver_examples` of the preset), drawn with a
   seeded generator from the training split of its kind, and dropped while the prompt is over the
   preset's `max_prompt_tokens`, as the trainer does.
7. `shortcuts.json`: the probe tasks that an answer never reading the program solves (`azr.tasks`
   `shortcut_answers`), judged in the sandbox; `azr compare` reports the probe on the others as well.
   `--shortcuts-only` rewrites it for the probe in `--out-dir` without the model.

The base model's answers are never looked at: no task is chosen by whether the model solves it.

Every generated round is appended to `--work-dir/rounds.jsonl` (responses and validations); a rerun
replays the log (checking that each round's prompts are the same) and generates only what is missing, so a
killed build loses at most one round, and raising a budget extends the streams.

    .venv/bin/python benchmarks/build_probe.py --work-dir runs/probe-build
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import random
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from azr.buffer import TaskBuffer, task_key
from azr.parsing import program_key
from azr.probe import (
    PROBE_TYPES,
    PROMPT_FORMAT,
    PROMPT_VERSION,
    PROVENANCE,
    SHORTCUTS,
    TRAIN_SPLIT,
    ProbeTask,
    probe_row,
    seed_row,
    task_of_row,
    write_shortcuts,
)
from azr.seeding import proposal_of, validate_seed_tasks
from azr.tasks import Task, TaskPool, TaskType, get_task_type, load_seed_tasks, shipped_seed_path

IO_TYPES = ("deduction", "abduction")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "azr" / "data" / "probe"


@dataclass
class Outcome:
    """One proposal: its validated task, or why it was not valid."""

    task: Task | None
    reason: str


@dataclass
class StreamLog:
    """What one stream of proposals produced, and what it cost."""

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    prompt_tokens: int = 0
    response_tokens: int = 0

    @property
    def valid(self) -> list[Task]:
        return [outcome.task for outcome in self.outcomes if outcome.task is not None]


class RoundLog:
    """The append-only record of generated rounds, keyed by (stream, round)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rounds: dict[tuple[str, int], dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text("utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.rounds[(entry["stream"], entry["round"])] = entry

    def append(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")
        self.rounds[(entry["stream"], entry["round"])] = entry


class ProgramCycle:
    """A pool that hands out its tasks in turn, so induction proposals cover every program of a side."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        if not tasks:
            raise ValueError("no programs to write induction inputs for")
        self.tasks = list(tasks)
        self.next = 0

    def sample_references(self, rng: random.Random, k: int) -> list[Task]:
        taken = [self.tasks[(self.next + i) % len(self.tasks)] for i in range(k)]
        self.next += k
        return taken


def digest(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()


def round_seed(seed: int, stream: str, number: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{stream}/{number}".encode()).digest()[:8], "big") >> 2


Generate = Callable[[list[str], TaskType, int], tuple[list[str], int, int]]
"""(prompts, task type, seed) -> (responses, prompt tokens, response tokens)."""


def run_stream(
    stream: str,
    task_type: TaskType,
    fmt: Any,
    executor: Any,
    pools: Mapping[str, TaskPool],
    own: TaskBuffer,
    *,
    proposals: int,
    batch_size: int,
    references: int,
    seed: int,
    generate: Generate,
    log: RoundLog,
    progress: Callable[[str], None] = lambda line: None,
) -> StreamLog:
    """`proposals` proposals of one type, `batch_size` a round, as `azr.seeding.grow_seed_tasks` makes
    them (references drawn by the task type from `pools`, the valid ones added to `own`), replaying the
    rounds already in `log`."""
    rng = random.Random(f"{seed}/{stream}")
    result = StreamLog()
    number = 0
    while len(result.outcomes) < proposals:
        count = min(batch_size, proposals - len(result.outcomes))
        prompts = [
            task_type.proposer_prompt(fmt, task_type.proposer_references(pools, rng, references))
            for _ in range(count)
        ]
        texts = [prompt.text for prompt in prompts]
        entry = log.rounds.get((stream, number))
        if entry is not None:
            if entry["prompts"] != digest(texts):
                raise SystemExit(
                    f"{log.path}: round {number} of {stream} was made from other prompts (another seed, "
                    "preset or code version): use a fresh --work-dir"
                )
        else:
            started = time.monotonic()
            responses, prompt_tokens, response_tokens = generate(
                texts, task_type, round_seed(seed, stream, number)
            )
            parsed = [
                task_type.parse_proposal(fmt, prompt, response)
                for prompt, response in zip(prompts, responses, strict=True)
            ]
            validations = [future.result() for future in task_type.validate_batch(executor, parsed)]
            entry = {
                "stream": stream,
                "round": number,
                "prompts": digest(texts),
                "responses": responses,
                "outcomes": [
                    {"task": seed_row(v.task)} if v.task is not None else {"reason": v.reason}
                    for v in validations
                ],
                "seconds": time.monotonic() - started,
                "prompt_tokens": prompt_tokens,
                "response_tokens": response_tokens,
            }
            log.append(entry)
        outcomes = [
            Outcome(task_of_row(o["task"]), "ok") if "task" in o else Outcome(None, o["reason"])
            for o in entry["outcomes"]
        ]
        own.add(outcome.task for outcome in outcomes if outcome.task is not None)
        result.outcomes += outcomes
        result.seconds += entry["seconds"]
        result.prompt_tokens += entry["prompt_tokens"]
        result.response_tokens += entry["response_tokens"]
        number += 1
        progress(
            f"{stream}: {len(result.outcomes)}/{proposals} proposals, {len(result.valid)} valid, "
            f"{result.seconds:.0f} s generating"
        )
    return result


@dataclass(frozen=True)
class Cleaned:
    tasks: list[Task]
    seed_copies: int
    duplicates: int


def clean(tasks: Sequence[Task], seed_programs: frozenset[str]) -> Cleaned:
    """Tasks without those on a training seed's program and without repeated programs (first kept)."""
    kept: dict[str, Task] = {}
    seed_copies = duplicates = 0
    for task in tasks:
        key = program_key(task.program)
        if key in seed_programs:
            seed_copies += 1
        elif key in kept:
            duplicates += 1
        else:
            kept[key] = task
    return Cleaned(list(kept.values()), seed_copies, duplicates)


def split_by_program(
    tasks_by_type: Mapping[str, Sequence[Task]], probe_size: int, seed: int
) -> tuple[dict[str, list[Task]], dict[str, list[Task]]]:
    """(probe, train) per type: a seeded shuffle of each type's tasks fills the probe up to `probe_size`,
    the rest is training; a program placed on one side keeps every later task with it on that side (or
    drops the task when that side is the full probe), so the sides share no program."""
    side_of: dict[str, str] = {}
    probe: dict[str, list[Task]] = {name: [] for name in tasks_by_type}
    train: dict[str, list[Task]] = {name: [] for name in tasks_by_type}
    for name, tasks in tasks_by_type.items():
        order = list(tasks)
        random.Random(f"{seed}/split/{name}").shuffle(order)
        for task in order:
            key = program_key(task.program)
            side = side_of.get(key)
            if side is None:
                side = "probe" if len(probe[name]) < probe_size else "train"
                side_of[key] = side
            if side == "train":
                train[name].append(task)
            elif len(probe[name]) < probe_size:
                probe[name].append(task)
    return probe, train


def revalidate(task_type: TaskType, executor: Any, tasks: Sequence[Task]) -> list[Task]:
    """The tasks whose outputs a fresh sandbox run reproduces exactly."""
    futures = task_type.validate_batch(executor, [proposal_of(task) for task in tasks])
    return [
        task
        for task, future in zip(tasks, futures, strict=True)
        if (again := future.result().task) is not None
        and (again.output, again.inputs, again.outputs) == (task.output, task.inputs, task.outputs)
    ]


def pick_examples(
    task_type: TaskType,
    fmt: Any,
    task: Task,
    pool: Sequence[Task],
    rng: random.Random,
    wanted: int,
    fits: Callable[[str], bool],
) -> tuple[Task, ...]:
    """The solved examples a trainer's solver prompt for `task` would show (`Trainer._solver_prompt`):
    `wanted` draws from `pool` on another program, fewer while the prompt does not fit."""
    drawn = rng.sample(list(pool), min(wanted + 1, len(pool)))
    examples = [example for example in drawn if example.program != task.program][:wanted]
    while examples and not fits(task_type.solver_prompt(fmt, task, examples)):
        examples = examples[:-1]
    return tuple(examples)


def seed_exclusions(task_types: Mapping[str, TaskType]) -> frozenset[str]:
    """Program keys of every training seed: both shipped seed files (as written) and the identity seeds."""
    seeds = [task for kind in ("io", "induction") for task in load_seed_tasks(shipped_seed_path(kind))]
    seeds += [task for task_type in task_types.values() for task in task_type.seed_tasks()]
    return frozenset(program_key(task.program) for task in seeds)


def initial_pool(task_type: TaskType, executor: Any, references: str) -> TaskBuffer:
    """Self-play's starting buffer: the identity task, and with `builtin` the shipped seeds of the type
    re-validated in our sandbox (`seed_file: builtin`)."""
    pool = TaskBuffer(":memory:", task_type.name, cap=1_000_000)
    pool.add(task_type.seed_tasks())
    if references == "builtin":
        shipped = [t for t in load_seed_tasks(shipped_seed_path(task_type.seed_set)) if task_type.accepts(t)]
        pool.add(validate_seed_tasks(task_type, executor, shipped))
    return pool


def stream_stats(log: StreamLog, cleaned: Cleaned | None) -> dict[str, Any]:
    reasons = Counter(o.reason.split(":")[0] for o in log.outcomes if o.task is None)
    proposals = len(log.outcomes)
    stats: dict[str, Any] = {
        "proposals": proposals,
        "valid": len(log.valid),
        "valid_rate": len(log.valid) / proposals if proposals else 0.0,
        "parsed": proposals - reasons.get("bad format", 0),
        "invalid_reasons": dict(reasons.most_common()),
        "generation_s": round(log.seconds, 1),
        "prompt_tokens": log.prompt_tokens,
        "generated_tokens": log.response_tokens,
        "generated_tokens_per_s": round(log.response_tokens / log.seconds, 2) if log.seconds else 0.0,
    }
    if cleaned is not None:
        stats |= {
            "seed_copies": cleaned.seed_copies,
            "repeated_programs": cleaned.duplicates,
            "distinct": len(cleaned.tasks),
        }
    return stats


def shortcut_counts(solvable: Mapping[str, Sequence[str]]) -> dict[str, int]:
    return {name: len(ids) for name, ids in solvable.items()}


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config", default="cpu-coder", help="Preset whose model and sampling are used.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--io-proposals", type=int, default=1280, help="Proposals per io type.")
    parser.add_argument("--induction-probe-proposals", type=int, default=640)
    parser.add_argument("--induction-train-proposals", type=int, default=384)
    parser.add_argument("--probe-size", type=int, default=250, help="Probe tasks per type.")
    parser.add_argument(
        "--references",
        choices=("identity", "builtin"),
        default="identity",
        help="What the proposer pools start from: the identity task alone (self-play with seeds grown by "
        "the model) or with the shipped seed programs too (seed_file: builtin).",
    )
    parser.add_argument("--work-dir", type=Path, default=Path("runs/probe-build"))
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--generate-only", action="store_true", help="Generate the io streams, print their rates, stop."
    )
    parser.add_argument(
        "--shortcuts-only",
        action="store_true",
        help=f"Judge the probe in --out-dir for shortcut answers, write its {SHORTCUTS}, stop (no model).",
    )
    args = parser.parse_args()

    from azr.config import load_config
    from azr.engines import SamplingParams, make_backend
    from azr.executor import Executor
    from azr.policy import load_policy
    from azr.prompts import get_format

    console = Console()
    config = load_config(args.config)
    if args.shortcuts_only:
        with Executor(config.executor) as executor:
            solvable = write_shortcuts(executor, args.out_dir)
        provenance_path = args.out_dir / PROVENANCE
        provenance = json.loads(provenance_path.read_text("utf-8"))
        provenance["shortcut_solvable"] = shortcut_counts(solvable)
        provenance_path.write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
        console.print(f"shortcut-solvable probe tasks: {shortcut_counts(solvable)}, in {args.out_dir}")
        return
    gen, selfplay = config.generation, config.selfplay
    if (selfplay.prompt_format, selfplay.prompt_version) != (PROMPT_FORMAT, PROMPT_VERSION):
        raise SystemExit(
            f"{args.config} proposes in {selfplay.prompt_format} {selfplay.prompt_version}, the probe is "
            f"asked in {PROMPT_FORMAT} {PROMPT_VERSION} (azr.probe.PROMPT_VERSION)"
        )
    fmt = get_format(PROMPT_FORMAT, PROMPT_VERSION)
    task_types = {name: get_task_type(name, selfplay) for name in PROBE_TYPES}
    policy = load_policy(config.model.path)
    backend = make_backend(gen, policy, seed=args.seed)
    log = RoundLog(args.work_dir / "rounds.jsonl")

    def generate(prompts: list[str], task_type: TaskType, seed: int) -> tuple[list[str], int, int]:
        params = SamplingParams(
            temperature=gen.temperature,
            top_p=gen.top_p,
            max_new_tokens=gen.propose_max_new_tokens,
            stop=tuple(task_type.stop(fmt, "propose")),
        )
        completions = backend.generate(prompts, params, seed=seed)
        return (
            [c.text for c in completions],
            sum(len(c.prompt_ids) for c in completions),
            sum(len(c.response_ids) for c in completions),
        )

    def fits(prompt: str) -> bool:
        return len(policy.tokenizer(prompt)["input_ids"]) <= selfplay.max_prompt_tokens

    started = time.monotonic()
    with Executor(config.executor) as executor:
        seed_programs = seed_exclusions(task_types)

        def stream(name: str, task_type: TaskType, pools: dict[str, TaskPool], own: TaskBuffer, n: int):
            return run_stream(
                name,
                task_type,
                fmt,
                executor,
                {**pools, task_type.name: own},
                own,
                proposals=n,
                batch_size=gen.max_batch_size,
                references=selfplay.references,
                seed=args.seed,
                generate=generate,
                log=log,
                progress=lambda line: console.print(line, highlight=False),
            )

        io_logs = {
            name: stream(
                name,
                task_types[name],
                {},
                initial_pool(task_types[name], executor, args.references),
                args.io_proposals,
            )
            for name in IO_TYPES
        }
        io_clean = {name: clean(io_logs[name].valid, seed_programs) for name in IO_TYPES}
        stats = {name: stream_stats(io_logs[name], io_clean[name]) for name in IO_TYPES}
        if args.generate_only:
            console.print_json(json.dumps(stats))
            return
        probe, train = split_by_program(
            {name: io_clean[name].tasks for name in IO_TYPES}, args.probe_size, args.seed
        )
        induction = task_types["induction"]
        sides = {
            side: clean([t for n in IO_TYPES for t in tasks[n]], frozenset()).tasks
            for side, tasks in (("probe", probe), ("train", train))
        }
        induction_clean = {}
        for side, targets in sides.items():
            name = f"induction-{side}"
            own = initial_pool(induction, executor, args.references)
            budget = args.induction_probe_proposals if side == "probe" else args.induction_train_proposals
            ind_log = stream(name, induction, {"deduction": ProgramCycle(targets)}, own, budget)
            induction_clean[side] = clean(ind_log.valid, seed_programs)
            stats[name] = stream_stats(ind_log, induction_clean[side])
        ordered = list(induction_clean["probe"].tasks)
        random.Random(f"{args.seed}/split/induction").shuffle(ordered)
        probe["induction"] = ordered[: args.probe_size]
        train["induction"] = induction_clean["train"].tasks

        dropped = {}
        for name, task_type in task_types.items():
            for side in (probe, train):
                before = len(side[name])
                side[name] = revalidate(task_type, executor, side[name])
                dropped[name] = dropped.get(name, 0) + before - len(side[name])
    short = {name: len(tasks) for name, tasks in probe.items() if len(tasks) < args.probe_size}
    if short:
        raise SystemExit(
            f"too few distinct tasks for a probe of {args.probe_size}: {short}; raise the budgets"
        )

    train_io: dict[str, tuple[str, Task]] = {}
    for name in IO_TYPES:
        for task in train[name]:
            train_io.setdefault(task_key(task), (name, task))
    pools = {
        "deduction": [task for _, task in train_io.values()],
        "abduction": [task for _, task in train_io.values()],
        "induction": train["induction"],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in PROBE_TYPES:
        rows = []
        for index, task in enumerate(probe[name]):
            rng = random.Random(f"{args.seed}/examples/{name}/{index}")
            examples = pick_examples(
                task_types[name], fmt, task, pools[name], rng, selfplay.solver_examples, fits
            )
            rows.append(probe_row(ProbeTask(f"{name}-{index:03d}", name, task, examples)))
        write_jsonl(args.out_dir / f"{name}.jsonl", rows)
    write_jsonl(
        args.out_dir / TRAIN_SPLIT,
        [{**seed_row(task), "proposed_as": name} for name, task in train_io.values()]
        + [{**seed_row(task), "proposed_as": "induction"} for task in train["induction"]],
    )
    with Executor(config.executor) as executor:
        solvable = write_shortcuts(executor, args.out_dir)
    provenance = {
        "built": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "git_commit": git_commit(),
        "preset": args.config,
        "model": config.model.path,
        "model_source": policy.source,
        "backend": gen.backend,
        "sampling": {
            "temperature": gen.temperature,
            "top_p": gen.top_p,
            "max_new_tokens": gen.propose_max_new_tokens,
            "batch_size": gen.max_batch_size,
        },
        "prompt_format": PROMPT_FORMAT,
        "prompt_version": PROMPT_VERSION,
        "references": selfplay.references,
        "initial_references": args.references,
        "induction_inputs": selfplay.induction_inputs,
        "solver_examples": selfplay.solver_examples,
        "max_prompt_tokens": selfplay.max_prompt_tokens,
        "executor": config.executor.model_dump(include={"timeout_s", "memory_mb", "max_output_chars"}),
        "seed": args.seed,
        "budgets": {
            "io_proposals": args.io_proposals,
            "induction_probe_proposals": args.induction_probe_proposals,
            "induction_train_proposals": args.induction_train_proposals,
            "probe_size": args.probe_size,
        },
        "streams": stats,
        "dropped_on_revalidation": dropped,
        "probe": {name: len(probe[name]) for name in PROBE_TYPES},
        "shortcut_solvable": shortcut_counts(solvable),
        "train": {
            "io": len(train_io),
            "io_proposed_as": dict(Counter(name for name, _ in train_io.values())),
            "induction": len(train["induction"]),
        },
        "wall_s": round(time.monotonic() - started, 1),
    }
    (args.out_dir / PROVENANCE).write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")

    table = Table(title=f"probe build, seed {args.seed}, {config.model.path} ({gen.backend})")
    for column in (
        "stream",
        "proposals",
        "valid",
        "valid rate",
        "seed copies",
        "repeats",
        "distinct",
        "gen s",
    ):
        table.add_column(column, justify="left" if column == "stream" else "right")
    for name, row in stats.items():
        table.add_row(
            name,
            str(row["proposals"]),
            str(row["valid"]),
            f"{100 * row['valid_rate']:.1f}%",
            str(row["seed_copies"]),
            str(row["repeated_programs"]),
            str(row["distinct"]),
            f"{row['generation_s']:.0f}",
        )
    console.print(table)
    console.print(f"probe {provenance['probe']}, training split {provenance['train']}, in {args.out_dir}")


if __name__ == "__main__":
    main()
