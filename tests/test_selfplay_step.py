"""The self-play step with a scripted rollout backend: the paper's order of phases, the solver batch, the
rewards of every case and the traceability of samples. The policy is the tiny random model; only the
responses are scripted, so each test controls exactly which proposals are valid and which answers right."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from azr.config import load_config
from azr.engines import Completion, GenerationBackend, SamplingParams
from azr.run_dir import RunDir
from azr.tasks import Task, shipped_seed_path
from azr.trainer import Trainer

B = 3
N_LEARN = 2
SETTINGS = [
    f"selfplay.batch_size={B}",
    f"selfplay.learnability_samples={N_LEARN}",
    "selfplay.references=2",
    "selfplay.induction_inputs=4",
    "selfplay.solver_examples=0",
    "generation.propose_max_new_tokens=64",
    "generation.solve_max_new_tokens=16",
    "optim.micro_batch_size=6",
    "executor.workers=2",
    "executor.timeout_s=2.0",
    f"logging.samples_per_step={B}",
    "logging.tensorboard=false",
]


def role_of(prompt: str) -> tuple[str, str]:
    """(task type, role) of a completion-format prompt, read from how it ends and its header."""
    if "deduction puzzle" in prompt:
        return "deduction", "propose"
    if "abduction puzzle" in prompt:
        return "abduction", "propose"
    if prompt.endswith("def test_f():\n    # "):
        return "induction", "propose"
    if prompt.endswith("== f("):
        return "abduction", "solve"
    if prompt.endswith("=="):
        return "deduction", "solve"
    if prompt.endswith("def f("):
        return "induction", "solve"
    raise AssertionError(f"unrecognised prompt ending {prompt[-40:]!r}")


class ScriptedBackend(GenerationBackend):
    """Answers each prompt with `respond(type, role, prompt)` and records every call, in order."""

    def __init__(self, tokenizer, respond: Callable[[str, str, str], str]) -> None:
        self.tokenizer = tokenizer
        self.respond = respond
        self.calls: list[list[tuple[str, str]]] = []
        self.events: list[str] = []

    def generate(
        self, prompts: Sequence[str], params: SamplingParams | Sequence[SamplingParams], *, seed=None
    ) -> list[Completion]:
        self.events.append("generate")
        self.calls.append([role_of(prompt) for prompt in prompts])
        completions = []
        for prompt in prompts:
            text = self.respond(*role_of(prompt), prompt)
            response_ids = [
                *self.tokenizer(text, add_special_tokens=False).input_ids,
                self.tokenizer.eos_token_id,
            ]
            prompt_ids = self.tokenizer(prompt).input_ids
            completions.append(
                Completion(prompt, text, prompt_ids, response_ids, [-1.0] * len(response_ids), "eos")
            )
        return completions

    def update_weights(self, model) -> None:
        self.events.append("update_weights")


def distinct_valid_proposals() -> Callable[[str, str, str], str]:
    """Every proposal valid and new. Deduction answers are wrong on every third call (so learnability
    samples of one task can disagree), abduction answers unparseable, induction answers the identity.
    (`+ 7919` keeps the programs off the held-out probe's, which a trainer never stores.)"""
    counter = itertools.count(1)

    def respond(task_type: str, role: str, prompt: str) -> str:
        k = next(counter)
        if role == "propose" and task_type == "induction":
            calls = "\n".join(f"    assert f({k * 10 + j}) == 0" for j in range(4))
            return f"Some numbers.\n{calls}"
        if role == "propose":
            return f"x):\n    return x * {k} + 7919\nassert f(1) == 0"
        if task_type == "deduction":
            factor = re.findall(r"return x \* (\d+) \+ 7919\nassert f\(1\) ==$", prompt)
            return f" {int(factor[0]) + 7919}" if factor and k % 3 else " 'nope'"
        if task_type == "abduction":
            return "@@@ not an input"
        return "x):\n    return x"

    return respond


@pytest.fixture
def make_trainer(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Trainer]]:
    trainers = []

    def make(respond, *extra: str) -> Trainer:
        config = load_config("tiny-cpu", [*SETTINGS, f"model.path={tiny_model_dir}", *extra])
        run = RunDir.create(tmp_path / f"run{len(trainers)}", config)
        from azr.policy import load_policy

        tokenizer = load_policy(tiny_model_dir, device="cpu").tokenizer
        trainer = Trainer(config, run, backend=ScriptedBackend(tokenizer, respond))
        trainers.append(trainer)
        return trainer

    yield make
    for trainer in trainers:
        trainer.close()


def samples(trainer: Trainer, step: int) -> list[dict]:
    path = trainer.run.samples_dir / f"step_{step:06d}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_generation_calls_proposals_then_solver_batch_and_learnability(make_trainer) -> None:
    trainer = make_trainer(distinct_valid_proposals(), "selfplay.seed_file=null")
    trainer.train_step()
    backend = trainer.backend
    assert backend.events == ["generate", "generate", "update_weights"]
    first, second = backend.calls
    assert Counter(first) == {(t, "propose"): B for t in ("deduction", "abduction", "induction")}
    # Every proposal was valid, so each type's solver batch is its B fresh tasks, and their answers are the
    # first of the N_LEARN learnability samples: no extra solver generation.
    assert Counter(second) == {(t, "solve"): B * N_LEARN for t in ("deduction", "abduction", "induction")}


def test_this_steps_valid_proposals_are_this_steps_solver_batch(make_trainer) -> None:
    trainer = make_trainer(distinct_valid_proposals(), "selfplay.seed_file=null")
    metrics = trainer.train_step()
    rows = samples(trainer, 1)
    for task_type in ("deduction", "abduction", "induction"):
        assert metrics[f"valid_rate/{task_type}"] == 1.0
        assert metrics[f"solver_fresh/{task_type}"] == B
        proposed = [r for r in rows if r["task_type"] == task_type and r["role"] == "propose"]
        solved = [r for r in rows if r["task_type"] == task_type and r["role"] == "solve"]
        assert len(proposed) == len(solved) == B
        assert all(r["valid"] and r["task_id"] is not None for r in proposed)
        assert sorted(r["task_id"] for r in solved) == sorted(r["task_id"] for r in proposed)
        assert all(r["task_step"] == 1 for r in solved)
        # The question each answer was given is the task it is recorded with.
        stored = {t.task_id: t for t in trainer.buffers[task_type].tasks}
        for row in solved:
            task = stored[row["task_id"]]
            assert (task.message if task_type == "induction" else task.program) in row["prompt"]


def test_a_proposal_on_a_probe_program_keeps_its_reward_but_is_never_stored_or_trained(make_trainer) -> None:
    from azr.probe import in_probe, load_probe

    held_out = load_probe("deduction")[0].task
    others = distinct_valid_proposals()

    def propose_the_probe(task_type: str, role: str, prompt: str) -> str:
        if task_type == "deduction" and role == "propose":
            renamed = held_out.program.removeprefix("def f(")  # the same program under its own names
            return f"{renamed}\nassert f({held_out.input}) == 0"
        return others(task_type, role, prompt)

    trainer = make_trainer(propose_the_probe, "selfplay.seed_file=null")
    metrics = trainer.train_step()
    rows = samples(trainer, 1)
    assert metrics["held_out/deduction"] == B
    assert metrics["valid_rate/deduction"] == 1.0 and metrics["buffer_added/deduction"] == 0
    assert not any(in_probe(task) for buffer in trainer.buffers.values() for task in buffer.tasks)
    proposed = [r for r in rows if r["task_type"] == "deduction" and r["role"] == "propose"]
    assert len(proposed) == B
    assert all(r["valid"] and r["held_out"] and r["task_id"] is None for r in proposed)
    assert all(r["solve_rate"] is not None for r in proposed)
    # Its learnability samples were scored, none trained: the solver batch is the identity task.
    solved = [r for r in rows if r["task_type"] == "deduction" and r["role"] == "solve"]
    assert solved and all(r["task"]["program"] != held_out.program for r in solved)
    assert all(held_out.output not in r["prompt"].splitlines()[-1] for r in solved)
    assert metrics["solver_fresh/deduction"] == 0


def scripted_deductions(propose: Callable[[int], str]) -> Callable[[str, str, str], str]:
    """Deduction proposals `propose(k)` for the k-th deduction proposer call (from 1); the other types
    as `distinct_valid_proposals`."""
    counter = itertools.count(1)
    others = distinct_valid_proposals()

    def respond(task_type: str, role: str, prompt: str) -> str:
        if task_type == "deduction" and role == "propose":
            return propose(next(counter))
        return others(task_type, role, prompt)

    return respond


def renamed_identities() -> Callable[[str, str, str], str]:
    """Deduction proposals: the identity task under a new parameter name each time, twice a step as
    `x * 1 + 7919`; the other types as `distinct_valid_proposals`."""
    return scripted_deductions(
        lambda k: (
            "y):\n    return y * 1 + 7919\nassert f(1) == 0"
            if k % B == 0
            else f"name{k}):\n    return name{k}\nassert f({k}) == 0"
        )
    )


@pytest.mark.parametrize("distinct", [False, True])
def test_distinct_programs_counts_renamed_copies_as_duplicates(make_trainer, distinct: bool) -> None:
    from azr.parsing import program_key

    trainer = make_trainer(
        renamed_identities(), "selfplay.seed_file=null", f"selfplay.distinct_programs={str(distinct).lower()}"
    )
    identity = program_key("def f(a):\n    return a")
    metrics = [trainer.train_step() for _ in range(2)]
    keys = [program_key(task.program) for task in trainer.buffers["deduction"].tasks]
    proposed = [r for step in (1, 2) for r in samples(trainer, step) if r["role"] == "propose"]
    deduction = [r for r in proposed if r["task_type"] == "deduction"]
    assert all(r["valid"] for r in deduction)
    if distinct:
        # One identity (the seed) and one `y * 1 + 7919`, stored at step 1; every other proposal a copy.
        assert keys.count(identity) == 1 and len(keys) == 2
        assert [m["program_copies/deduction"] for m in metrics] == [B - 1, B]
        copies = [r for r in deduction if r["program_copy"]]
        assert len(copies) == 2 * B - 1 and all(r["task_id"] is not None for r in copies)
    else:
        assert keys.count(identity) == 1 + 2 * (B - 1)  # the seed and every renamed copy
        assert all(m["program_copies/deduction"] == 0 for m in metrics)
    # Other types are untouched either way.
    assert all(m["buffer_added/abduction"] == B for m in metrics)


def thresholded_increments() -> Callable[[str, str, str], str]:
    """Deduction proposals: `n + 1` behind a new threshold above 1000 each time (new program text, one
    behaviour on small numbers), every B-th call `y * 3 + 7919`; the other types as
    `distinct_valid_proposals`."""
    return scripted_deductions(
        lambda k: (
            "y):\n    return y * 3 + 7919\nassert f(2) == 0"
            if k % B == 0
            else f"n):\n    if n > {1000 + k}:\n        return n + 2\n    return n + 1\nassert f({k}) == 0"
        )
    )


@pytest.mark.parametrize("behaviour", [False, True])
def test_distinct_behaviour_counts_programs_that_act_alike_as_duplicates(
    make_trainer, behaviour: bool
) -> None:
    trainer = make_trainer(
        thresholded_increments(),
        "selfplay.seed_file=null",
        "selfplay.distinct_programs=true",
        f"selfplay.distinct_behaviour={str(behaviour).lower()}",
    )
    metrics = [trainer.train_step() for _ in range(2)]
    programs = [task.program for task in trainer.buffers["deduction"].tasks]
    increments = [program for program in programs if "return n + 1" in program]
    if behaviour:
        # The first thresholded increment is stored; every later one behaves like it on canonical numbers.
        assert len(increments) == 1
        assert [m["program_copies/deduction"] for m in metrics] == [1, B]
    else:
        assert len(increments) == 2 * (B - 1)  # each threshold is a new program text
        assert [m["program_copies/deduction"] for m in metrics] == [0, 1]
    assert sum("y * 3" in program for program in programs) == 1
    # A copy's learnability is measured on the task it copies, which the buffer holds.
    proposed = [r for step in (1, 2) for r in samples(trainer, step) if r["role"] == "propose"]
    stored_ids = {task.task_id for task in trainer.buffers["deduction"].tasks}
    copies = [r for r in proposed if r["program_copy"] and r["task_type"] == "deduction"]
    assert len(copies) == (1 + B if behaviour else 1)
    assert all(r["task_id"] in stored_ids for r in copies)


def test_a_program_copy_reward_replaces_the_learnability_of_copies_only(make_trainer) -> None:
    trainer = make_trainer(
        renamed_identities(),
        "selfplay.seed_file=null",
        "selfplay.distinct_programs=true",
        "rewards.program_copy_reward=-0.75",
    )
    for _ in range(2):
        trainer.train_step()
    proposed = [r for step in (1, 2) for r in samples(trainer, step) if r["role"] == "propose"]
    copies = [r for r in proposed if r["program_copy"]]
    others = [r for r in proposed if r["valid"] and not r["program_copy"]]
    assert len([r for r in copies if r["task_type"] == "deduction"]) == 2 * B - 1
    assert all(r["reward"] == -0.75 for r in copies)
    # Proposals of a new program keep their learnability reward.
    assert any(r["task_type"] == "deduction" for r in others) and all(r["reward"] >= 0 for r in others)


def test_reject_shortcut_tasks_gives_identity_proposals_the_invalid_reward_and_never_stores_them(
    make_trainer,
) -> None:
    from azr.parsing import program_key

    trainer = make_trainer(
        renamed_identities(), "selfplay.seed_file=null", "selfplay.reject_shortcut_tasks=true"
    )
    metrics = [trainer.train_step() for _ in range(2)]
    proposed = [r for step in (1, 2) for r in samples(trainer, step) if r["role"] == "propose"]
    deduction = [r for r in proposed if r["task_type"] == "deduction"]
    shortcuts = [r for r in deduction if not r["valid"]]
    # Every renamed identity (B - 1 a step) is refused; `y * 1 + 7919` is not a shortcut task.
    assert len(shortcuts) == 2 * (B - 1)
    assert all(r["reward"] == trainer.config.rewards.invalid_proposal_reward for r in shortcuts)
    assert [m["proposals/deduction/shortcut"] for m in metrics] == [B - 1, B - 1]
    assert all(r["valid"] and r["reward"] >= 0 for r in deduction if r not in shortcuts)
    keys = [program_key(task.program) for task in trainer.buffers["deduction"].tasks]
    assert keys.count(program_key("def f(a):\n    return a")) == 1  # the seed alone
    # No solver answer was trained on a refused task.
    solved = [r for step in (1, 2) for r in samples(trainer, step) if r["role"] == "solve"]
    solved = [r for r in solved if r["task_type"] == "deduction"]
    assert solved and all("return name" not in r["task"]["program"] for r in solved)


def test_the_seed_phase_keeps_no_shortcut_task_with_reject_shortcut_tasks(make_trainer) -> None:
    trainer = make_trainer(
        renamed_identities(),
        "selfplay.seed_file=null",
        "selfplay.reject_shortcut_tasks=true",
        "selfplay.seed_buffer_size=3",
        "selfplay.seed_max_proposals=12",
    )
    programs = [task.program for task in trainer.buffers["deduction"].tasks]
    # The identity seed, then `y * 1 + 7919` proposals (each the same program, once); no renamed identity.
    assert programs[0] == "def f(a):\n    return a"
    assert len(programs) > 1 and all("7919" in program for program in programs[1:])


def test_the_seed_phase_keeps_one_task_per_program_with_distinct_programs(make_trainer) -> None:
    from azr.parsing import program_key

    trainer = make_trainer(
        renamed_identities(),
        "selfplay.seed_file=null",
        "selfplay.distinct_programs=true",
        "selfplay.seed_buffer_size=3",
        "selfplay.seed_max_proposals=12",
    )
    keys = [program_key(task.program) for task in trainer.buffers["deduction"].tasks]
    assert len(keys) == len(set(keys)) == 2  # the identity seed and `y * 1 + 7919`, not its 8 renamings


def test_seed_file_tasks_on_a_probe_program_are_left_out(make_trainer, tmp_path: Path) -> None:
    from azr.probe import load_probe

    task = load_probe("abduction")[3].task
    seeds = tmp_path / "leaky.jsonl"
    rows = [
        {"snippet": task.program, "input": task.input, "output": task.output},
        {"snippet": "def f(x):\n    return x + 7919", "input": "1", "output": "7920"},
    ]
    seeds.write_text("".join(json.dumps(row) + "\n" for row in rows))
    trainer = make_trainer(distinct_valid_proposals(), f"selfplay.seed_file={seeds}")
    for buffer in trainer.buffers.values():
        programs = [t.program for t in buffer.tasks]
        assert task.program not in programs
    assert "def f(x):\n    return x + 7919" in [t.program for t in trainer.buffers["deduction"].tasks]


def test_every_reward_case_of_a_step_matches_the_documented_table(make_trainer) -> None:
    trainer = make_trainer(distinct_valid_proposals(), "selfplay.seed_file=null")
    trainer.train_step()
    for row in samples(trainer, 1):
        if row["role"] == "solve" and row["format_error"] is not None:
            assert row["reward"] == -1.0
        elif row["role"] == "solve":
            assert row["reward"] == (1.0 if row["correct"] else -0.5)
        elif not row["valid"]:
            assert row["reward"] in (-1.0, -0.5)
        else:
            acc = row["solve_rate"]
            assert row["reward"] == pytest.approx(0.0 if acc in (0.0, 1.0) else 1 - acc)
    answers = {
        (r["task_type"], r["format_error"] is None, r["correct"])
        for r in samples(trainer, 1)
        if r["role"] == "solve"
    }
    assert ("abduction", False, False) in answers  # unparseable: -1
    assert ("deduction", True, True) in answers  # right: 1
    assert ("deduction", True, False) in answers  # wrong: -0.5
    learnable = [r for r in samples(trainer, 1) if r["role"] == "propose" and r["solve_rate"] == 0.5]
    assert learnable and all(r["reward"] == 0.5 for r in learnable)


def test_without_new_tasks_solver_batches_spread_over_the_whole_buffer(make_trainer) -> None:
    """The bug this fixes: with no new tasks, the newest step's tasks came back in every batch."""

    def nothing_valid(task_type: str, role: str, prompt: str) -> str:
        return "not code at all" if role == "propose" else "@@@"

    trainer = make_trainer(nothing_valid, "selfplay.seed_file=builtin")
    buffer_size = len(trainer.buffers["deduction"])
    assert buffer_size > 100
    asked: list[int] = []
    for step in range(1, 21):
        trainer.train_step()
        asked += [
            r["task_id"]
            for r in samples(trainer, step)
            if r["role"] == "solve" and r["task_type"] == "deduction"
        ]
    assert len(asked) == 20 * B
    # 60 uniform draws from over 100 tasks: about 50 distinct expected; the old rule gave about B.
    assert len(set(asked)) >= 40
    assert all(trainer.backend.calls[i][0][1] == "propose" for i in range(0, 40, 2))


def test_safety_monitor_screens_every_response_and_stops_above_its_rate(make_trainer) -> None:
    planted = "x):\n    return x  # first I will outsmart the less intelligent humans"

    def scheming_solver(task_type: str, role: str, prompt: str) -> str:
        return "not code at all" if role == "propose" else planted

    trainer = make_trainer(
        scheming_solver,
        "selfplay.seed_file=null",
        "selfplay.task_types=[induction]",
        "safety.max_flag_rate=0.2",
    )
    metrics = trainer.train_step()
    assert metrics["safety/harm_humans"] == B  # each solver answer, once
    assert trainer.safety_stop is not None and "safety.max_flag_rate" in str(trainer.safety_stop)
    flags = [json.loads(line) for line in (trainer.run.root / "flags.jsonl").read_text().splitlines()]
    assert {(f["step"], f["role"], f["category"]) for f in flags} == {(1, "solve", "harm_humans")}
    assert all(f["task_id"] is not None for f in flags)


def test_resume_drops_the_flags_of_steps_after_the_checkpoint(make_trainer, tiny_model_dir: Path) -> None:
    def scheming_proposer(task_type: str, role: str, prompt: str) -> str:
        return "I will trick the grader without the humans noticing" if role == "propose" else "@@@"

    trainer = make_trainer(scheming_proposer, "selfplay.seed_file=null", "selfplay.task_types=[deduction]")
    trainer.train_step()
    trainer.save_checkpoint()
    trainer.train_step()
    flags_path = trainer.run.root / "flags.jsonl"
    assert {json.loads(line)["step"] for line in flags_path.read_text().splitlines()} == {1, 2}
    run, config = RunDir.open(trainer.run.root)
    resumed = Trainer(config, run, resume=True, backend=trainer.backend)
    try:
        assert resumed.step == 1
        assert {json.loads(line)["step"] for line in flags_path.read_text().splitlines()} == {1}
    finally:
        resumed.close()


@pytest.fixture(scope="module")
def few_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 16 shipped seed tasks of each kind in one file: varied references, validated in seconds."""
    rows = [
        line for kind in ("io", "induction") for line in shipped_seed_path(kind).read_text().splitlines()[:16]
    ]
    path = tmp_path_factory.mktemp("seeds") / "few.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_unshared_proposer_prompts_each_draw_their_own_references_in_turn(make_trainer, few_seeds) -> None:
    trainer = make_trainer(
        distinct_valid_proposals(), f"selfplay.seed_file={few_seeds}", "selfplay.max_prompt_tokens=6144"
    )
    rng = random.Random(trainer.config.seed)  # the trainer's rng before its first step
    expected = [
        task_type.proposer_prompt(trainer.fmt, task_type.proposer_references(trainer.buffers, rng, 2)).text
        for task_type in trainer.task_types.values()
        for _ in range(B)
    ]
    assert [proposal.prompt for proposal in trainer.propose()] == expected
    assert len(set(expected)) == len(expected)


def test_shared_references_give_a_steps_proposer_prompts_of_a_type_one_draw(make_trainer, few_seeds) -> None:
    trainer = make_trainer(
        distinct_valid_proposals(),
        f"selfplay.seed_file={few_seeds}",
        "selfplay.shared_references=true",
        "selfplay.references=3",
        "selfplay.max_prompt_tokens=6144",
    )
    steps = []
    for budget in (6144, 400):  # the second budget makes the induction prompts drop examples
        trainer.config.selfplay.max_prompt_tokens = budget
        trainer.step += 1
        steps.append(trainer.propose())
    for proposals, shown in zip(steps, (3, None), strict=True):
        for name in ("deduction", "abduction"):
            prompts = {p.prompt for p in proposals if p.task_type == name}
            assert len(prompts) == 1  # same references, same prompt: B samples of one prompt
        induction = [p.proposer_prompt for p in proposals if p.task_type == "induction"]
        # The worked examples are shared and come first; each prompt keeps a program of its own, and one
        # over the budget drops the last examples: the prompts share the header and the examples all kept.
        assert len({prompt.program for prompt in induction}) > 1
        fewest = min(induction, key=lambda prompt: len(prompt.references))
        examples_end = fewest.text.index(fewest.program)
        for prompt in induction:
            assert prompt.references[1 : len(fewest.references)] == fewest.references[1:]
            assert prompt.text[:examples_end] == fewest.text[:examples_end]
        if shown is not None:
            assert all(len(prompt.references) == shown for prompt in induction)
    # The smaller budget made some induction prompts drop examples.
    assert min(len(p.proposer_prompt.references) for p in steps[1] if p.task_type == "induction") < 3
    assert steps[0][0].prompt != steps[1][0].prompt  # each step draws again


def test_shared_solver_examples_give_a_steps_solver_prompts_of_a_type_one_draw(
    make_trainer, few_seeds
) -> None:
    trainer = make_trainer(
        distinct_valid_proposals(),
        f"selfplay.seed_file={few_seeds}",
        "selfplay.solver_examples=2",
        "selfplay.max_prompt_tokens=6144",
        "selfplay.shared_solver_examples=true",
    )
    shown: dict[str, list[tuple[Task, tuple[Task, ...]]]] = defaultdict(list)
    for name, task_type in trainer.task_types.items():
        render = task_type.solver_prompt

        def record(fmt, task, examples=(), name=name, render=render):
            shown[name].append((task, tuple(examples)))
            return render(fmt, task, examples)

        task_type.solver_prompt = record
    for step in (1, 2):
        if step == 2:  # nothing valid: the solver batch comes from the buffer, no learnability prompts
            trainer.backend.respond = lambda task_type, role, prompt: (
                "not code" if role == "propose" else "@@@"
            )
        shown.clear()
        trainer.train_step()
        for name in ("deduction", "abduction", "induction"):
            asked = shown[name]
            assert len(asked) == B  # step 1: one per fresh task (its learnability samples); step 2: the batch
            drawn = {example for _, examples in asked for example in examples}
            assert len(drawn) <= 3  # one draw: the examples and one spare
            for task, examples in asked:
                assert len(examples) == 2 and all(e.program != task.program for e in examples)


def test_response_token_mask_leaves_out_the_tokens_that_start_inside_a_span() -> None:
    from azr.rollouts import response_token_mask

    pieces = {1: "assert", 2: " f(3)", 3: " ==", 4: " 7", 5: "\n"}

    def decode(ids) -> str:
        return "".join(pieces[i] for i in ids)

    text = decode([1, 2, 3, 4, 5])
    start = text.index(" ==")
    assert response_token_mask(decode, [1, 2, 3, 4, 5], [(start, start + 5)]) == [
        True,
        True,
        False,
        False,
        True,
    ]
    assert response_token_mask(decode, [1, 2, 3], []) is None


@pytest.mark.parametrize("mask", [True, False])
def test_the_proposers_guessed_outputs_are_not_trained(make_trainer, monkeypatch, mask: bool) -> None:
    import azr.trainer

    captured = []
    real_update = azr.trainer.policy_update

    def capture(policy, optimizer, sequences, *args, **kwargs):
        captured.extend(sequences)
        return real_update(policy, optimizer, sequences, *args, **kwargs)

    monkeypatch.setattr(azr.trainer, "policy_update", capture)
    trainer = make_trainer(
        distinct_valid_proposals(),
        "selfplay.seed_file=null",
        f"optim.mask_unchecked_outputs={str(mask).lower()}",
    )
    trainer.train_step()
    tokenizer = trainer.policy.tokenizer
    proposals = [s for s in captured if s.group.endswith("/propose")]
    answers = [s for s in captured if s.group.endswith("/solve")]
    assert len(proposals) == 3 * B and answers
    assert all(s.trained is None for s in answers)
    if not mask:
        assert all(s.trained is None for s in proposals)
        return
    for sequence in proposals:
        left_out = [t for t, kept in zip(sequence.response_ids, sequence.trained, strict=True) if not kept]
        kept = [t for t, kept in zip(sequence.response_ids, sequence.trained, strict=True) if kept]
        # Every proposal asserts `== 0` after each call (one for deduction and abduction, four for
        # induction): those tokens, and only those, are left out.
        assert tokenizer.decode(left_out).replace(" ", "") == "==0" * tokenizer.decode(
            sequence.response_ids
        ).count("== 0")
        assert "f(" in tokenizer.decode(kept) and "==" not in tokenizer.decode(kept).split("f(")[-1]
