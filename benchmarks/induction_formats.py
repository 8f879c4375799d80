"""Compare completion-style layouts of the induction proposer prompt on one model, side by side.

Every layout gets the same targets (programs from the shipped deduction/abduction seed set, as the trainer
samples them) and the same worked examples (shipped induction seeds), is sampled once per prompt at
`--temperature`, parsed with the completion parser and validated with the real executor: a proposal is
valid when at least N distinct inputs run, exactly as in training. The `shipped` row is the product's own
prompt (`Induction.proposer_prompt`, newest completion version: since v3 a test function whose first line
is the message); the others are the alternatives tried on the way, `v2` among them.

    .venv/bin/python benchmarks/induction_formats.py --samples 24 --inputs 3
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from azr.config import GenerationConfig
from azr.engines import SamplingParams, make_backend
from azr.executor import Executor, ExecutorConfig
from azr.models import MODELS
from azr.parsing import BadFormat, normalize_arguments, one_line
from azr.policy import load_policy
from azr.prompts import get_format
from azr.prompts.formats import inputs_and_message_of
from azr.seeding import validate_seed_tasks
from azr.tasks import Induction, Task, get_task_type, load_seed_tasks
from azr.tasks.base import Proposal
from azr.tasks.induction import distinct, one_line_message
from azr.tasks.seeds import shipped_seed_path

BLANK_LINE_STOP = ("\n\n", "\ndef ")


def asserts(task: Task, count: int) -> str:
    return "\n".join(
        f"assert f({one_line(i)}) == {one_line(o)}"
        for i, o in zip(task.inputs[:count], task.outputs[:count], strict=True)
    )


def calls(task: Task, count: int) -> str:
    return "\n".join(f"f({one_line(i)})" for i in task.inputs[:count])


def later_asserts(task: Task, count: int) -> str:
    """The asserts after the first one, up to `count` of them."""
    return "\n".join(asserts(task, count + 1).split("\n")[1:])


def later_calls(task: Task, count: int) -> str:
    return "\n".join(calls(task, count + 1).split("\n")[1:])


def comment(task: Task) -> str:
    return "# " + one_line_message(task.message)


def test_function_after_known(task: Task, count: int) -> str:
    """The first assert outside, then a test function with the message and the next `count` asserts."""
    lines = [comment(task), *later_asserts(task, count).split("\n")]
    return f"{asserts(task, 1)}\n\ndef test_f():\n" + "\n".join(f"    {line}" for line in lines)


def known_assert(task: Task) -> str:
    return f"assert f({one_line(task.input)}) == {one_line(task.output)}"


@dataclass(frozen=True)
class Layout:
    """A hand-written prompt layout: instruction line, how an example is shown, how the prompt ends."""

    name: str
    instruction: str
    example: Callable[[Task, int], str]
    ending: Callable[[Task], str]
    stop: tuple[str, ...] = BLANK_LINE_STOP
    shows_target_input: bool = False
    message_stage: bool = False
    """Two generation calls: the inputs first (stopped before any comment), then the message, asked for by
    appending a forced `# ` line to the first answer."""

    def prompt(self, target: Task, examples: list[Task], n_inputs: int) -> str:
        shown = "\n\n".join(self.example(example, n_inputs) for example in examples)
        return f"{self.instruction.format(n=n_inputs)}\n\n{shown}\n\n{self.ending(target)}"


V2 = Layout(
    "v2: asserts with outputs, message last",
    "# Python functions. After each function: {n} asserts that call it with different inputs, then a "
    "comment that says what it does.",
    lambda t, n: f"{t.program}\n{asserts(t, n)}\n{comment(t)}",
    lambda t: f"{t.program}\nassert f(",
)
ASSERTS_AFTER_KNOWN = Layout(
    "asserts after the target's known input",
    "# Python functions. After each function: one assert that calls it, then {n} more asserts with other "
    "inputs of the same kind, then a comment that says what it does.",
    lambda t, n: f"{t.program}\n{asserts(t, n + 1)}\n{comment(t)}",
    lambda t: f"{t.program}\n{known_assert(t)}\nassert f(",
    shows_target_input=True,
)
# The message asked for in a second call: the first stops before any comment line.
TWO_STAGE = {"stop": (*BLANK_LINE_STOP, "\n#"), "message_stage": True}

LAYOUTS = [
    Layout(
        "calls, message last",
        "# Python functions. After each function: {n} calls with different inputs, then a comment that says "
        "what it does.",
        lambda t, n: f"{t.program}\n{calls(t, n)}\n{comment(t)}",
        lambda t: f"{t.program}\nf(",
    ),
    Layout(
        "calls, message last, no blank-line stop",
        "# Python functions. After each function: {n} calls with different inputs, then a comment that says "
        "what it does.",
        lambda t, n: f"{t.program}\n{calls(t, n)}\n{comment(t)}",
        lambda t: f"{t.program}\nf(",
        stop=("\ndef ",),
    ),
    Layout(
        "message first, then calls",
        "# Python functions. After each function: a comment that says what it does, then {n} calls with "
        "different inputs.",
        lambda t, n: f"{t.program}\n{comment(t)}\n{calls(t, n)}",
        lambda t: f"{t.program}\n# ",
    ),
    ASSERTS_AFTER_KNOWN,
    Layout(
        "known assert, then message, then asserts",
        "# Python functions. After each function: one assert that calls it, a comment that says what it "
        "does, then {n} more asserts with other inputs of the same kind.",
        lambda t, n: f"{t.program}\n{asserts(t, 1)}\n{comment(t)}\n{later_asserts(t, n)}",
        lambda t: f"{t.program}\nassert f({one_line(t.input)}) == {one_line(t.output)}\n# ",
        shows_target_input=True,
    ),
    Layout(
        "known call, then message, then calls",
        "# Python functions. After each function: one call of it, a comment that says what it does, then "
        "{n} more calls with other inputs of the same kind.",
        lambda t, n: f"{t.program}\n{calls(t, 1)}\n{comment(t)}\n{later_calls(t, n)}",
        lambda t: f"{t.program}\nf({one_line(t.input)})\n# ",
        stop=("\ndef ", "\n\n\n"),
        shows_target_input=True,
    ),
    V2,
    Layout(
        "known assert, then test function: message first, then asserts",
        "# Python functions, each followed by one assert, then a test function: a comment that says what the "
        "function does, then {n} asserts with other inputs of the same types.",
        lambda t, n: f"{t.program}\n{test_function_after_known(t, n)}",
        lambda t: f"{t.program}\n{known_assert(t)}\n\ndef test_f():\n    # ",
        shows_target_input=True,
    ),
    replace(V2, name="two stages: asserts, then forced `# ` message", **TWO_STAGE),
    replace(
        ASSERTS_AFTER_KNOWN, name="two stages: known assert, asserts, then forced `# ` message", **TWO_STAGE
    ),
    Layout(
        "one print line of calls",
        "# Python functions. After each function: one line that prints {n} calls with different inputs, then "
        "a comment that says what the function does.",
        lambda t, n: (
            f"{t.program}\nprint({', '.join(f'f({one_line(i)})' for i in t.inputs[:n])})\n{comment(t)}"
        ),
        lambda t: f"{t.program}\nprint(f(",
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=24, help="proposals per layout")
    parser.add_argument("--inputs", type=int, default=3, help="N: distinct valid inputs a proposal needs")
    parser.add_argument("--examples", type=int, default=2, help="worked induction examples per prompt")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=120)
    parser.add_argument(
        "--model",
        help=f"a named model ({', '.join(MODELS)}), a model directory or .gguf (default: embedded)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--backend",
        default="transformers",
        choices=["transformers", "transformers-bf16", "transformers-int8"],
        help="rollout backend (the trainer's; cpu-coder uses transformers-int8)",
    )
    parser.add_argument("--layouts", help="comma-separated words: only layouts whose name has one of them")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    fmt = get_format("completion")
    induction = Induction(n_inputs=args.inputs)
    policy = load_policy(args.model)
    backend = make_backend(GenerationConfig(backend=args.backend, max_batch_size=16), policy)
    rows = []
    with Executor(ExecutorConfig(workers=0, timeout_s=5.0)) as executor:
        targets_pool = validate_seed_tasks(
            get_task_type("deduction"), executor, load_seed_tasks(shipped_seed_path("io"))
        )
        examples_pool = validate_seed_tasks(
            induction, executor, load_seed_tasks(shipped_seed_path("induction"))
        )
        rng = random.Random(args.seed)
        draws = [
            (rng.choice(targets_pool), rng.sample(examples_pool, args.examples)) for _ in range(args.samples)
        ]
        shipped_stop = tuple(induction.stop(fmt, "propose"))
        shipped_prefix = fmt.prefix(induction.template("propose"))
        shipped = Layout(f"shipped (completion {fmt.version})", "", asserts, str, shipped_stop)
        candidates: list[tuple[Layout, list[str], str]] = [
            (shipped, [induction.proposer_prompt(fmt, [t, *ex]).text for t, ex in draws], shipped_prefix)
        ]
        for layout in LAYOUTS:
            prompts = [layout.prompt(t, ex, args.inputs) for t, ex in draws]
            prefix = prompts[0][prompts[0].rindex("\n") + 1 :]
            candidates.append((layout, prompts, prefix))

        wanted = args.layouts.split(",") if args.layouts else None
        for layout, prompts, prefix in candidates:
            if wanted and not any(word in layout.name for word in wanted):
                continue
            started = time.time()
            params = SamplingParams(
                temperature=args.temperature, max_new_tokens=args.max_new_tokens, stop=layout.stop
            )
            texts = [c.text for c in backend.generate(prompts, params, seed=args.seed)]
            if layout.message_stage:
                texts = [text.rstrip("\n") + "\n# " for text in texts]
                message_params = SamplingParams(temperature=args.temperature, max_new_tokens=40, stop=("\n",))
                messages = backend.generate(
                    [p + t for p, t in zip(prompts, texts, strict=True)], message_params, seed=args.seed + 1
                )
                texts = [t + m.text for t, m in zip(texts, messages, strict=True)]
            failures: Counter[str] = Counter()
            parsed = valid = inputs_run = 0
            for (target, _), text in zip(draws, texts, strict=True):
                read = inputs_and_message_of(prefix + text)
                if isinstance(read, BadFormat):
                    failures[read.reason] += 1
                    continue
                parsed += 1
                inputs, message = read
                if layout.shows_target_input:
                    # The shown call is not the proposer's own input.
                    known = normalize_arguments(one_line(target.input))
                    inputs = [i for i in inputs if normalize_arguments(i) != known]
                proposal = Proposal(
                    target.program, inputs=tuple(distinct(inputs)[: 2 * args.inputs]), message=message
                )
                validation = induction.validate(executor, proposal).result()
                ran = sum(
                    r.ok
                    for r in (f.result() for f in executor.validate_inputs(target.program, proposal.inputs))
                )
                inputs_run += ran
                if validation.valid:
                    valid += 1
                else:
                    failures[f"fewer than {args.inputs} inputs run"] += 1
            top = ", ".join(f"{reason} ({count})" for reason, count in failures.most_common(2))
            rows.append((layout.name, parsed, valid, inputs_run, time.time() - started, top))
            print(*rows[-1], sep=" | ", flush=True)

    print(
        f"\ninduction proposals, N = {args.inputs}, {args.samples} samples per layout, "
        f"temperature {args.temperature}, seed {args.seed}"
    )
    print("| layout | parsed | valid | inputs that ran | seconds | main failures |")
    print("|---|---|---|---|---|---|")
    n = args.samples
    for name, parsed, valid, inputs_run, seconds, top in rows:
        print(f"| {name} | {parsed}/{n} | {valid}/{n} | {inputs_run} | {seconds:.0f} | {top} |")


if __name__ == "__main__":
    main()
