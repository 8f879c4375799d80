from pathlib import Path

import pytest

from azr.config import ConfigError, TrainConfig, available_presets, dump_config, load_config, parse_override


def test_presets_load_and_match_their_purpose():
    assert {"tiny-cpu", "single-gpu", *PAPER_PRESETS} <= set(available_presets())
    tiny = load_config("tiny-cpu")
    assert tiny.model.path == "embedded"
    assert tiny.selfplay.prompt_format == "completion"
    paper = load_config("paper-7b-coder")
    assert paper.selfplay.batch_size == 64
    assert paper.selfplay.references == 6
    assert paper.selfplay.induction_inputs == 10
    assert paper.selfplay.learnability_samples == 8
    assert paper.selfplay.seed_buffer_size == 256
    assert paper.optim.lr == 1e-6
    assert paper.optim.clip_ratio == 0.2
    assert paper.executor.timeout_s == 10.0
    assert paper.selfplay.prompt_format == "r1"


PAPER_PRESETS = ("paper-3b-coder", "paper-7b-coder", "paper-14b-coder", "paper-llama-8b")


@pytest.mark.parametrize("name", [*PAPER_PRESETS, "single-gpu", "tiny-cpu"])
def test_every_preset_loads_and_validates(name):
    config = load_config(name)
    assert config.distributed.world_size == 1
    if name in PAPER_PRESETS:  # SPEC section 7
        assert (config.selfplay.batch_size, config.selfplay.references) == (64, 6)
        assert (config.selfplay.induction_inputs, config.selfplay.learnability_samples) == (10, 8)
        assert config.optim.lr == 1e-6 and config.model.dtype == "bfloat16"
        assert config.model.gradient_checkpointing and not config.model.lora.enabled
    if name == "single-gpu":
        assert config.model.lora.enabled and config.device == "cuda"


def test_overrides_keep_their_yaml_types():
    config = load_config("tiny-cpu", ["selfplay.batch_size=8", "optim.lr=3e-6", "model.lora.enabled=true"])
    assert config.selfplay.batch_size == 8
    assert config.optim.lr == pytest.approx(3e-6)
    assert config.model.lora.enabled is True
    assert parse_override("selfplay.task_types=[deduction]") == ("selfplay.task_types", ["deduction"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("selfplay.batchsize=8", "selfplay.batchsize: unknown key"),
        ("selfplay.batch_size=0", "selfplay.batch_size"),
        ("generation.top_p=2", "generation.top_p"),
        ("selfplay.task_types=[sorting]", "selfplay.task_types"),
        ("optim=3", "optim"),
    ],
)
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config("tiny-cpu", [override])


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="tiny-cpu"):
        load_config("no-such-preset")


def test_malformed_yaml_is_a_config_error(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("selfplay: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(path))
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(path))


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config("tiny-cpu", ["selfplay.batch_size"])


def test_dumped_config_round_trips(tmp_path: Path):
    config = load_config("tiny-cpu", ["steps=7", "optim.betas=[0.8, 0.9]"])
    dump_config(config, tmp_path / "config.yaml")
    again = load_config(str(tmp_path / "config.yaml"))
    assert again == config
    assert isinstance(again, TrainConfig)


def _fields(model: type, prefix: str = ""):
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            yield from _fields(annotation, f"{prefix}{name}.")


def test_every_config_section_and_field_is_documented():
    undocumented = [name for name, field in _fields(TrainConfig) if not (field.description or "").strip()]
    assert undocumented == []


def test_micro_batch_bound_counts_the_task_types_trained():
    one_type = ["selfplay.task_types=[deduction]", "selfplay.batch_size=2"]
    assert load_config("tiny-cpu", [*one_type, "optim.micro_batch_size=4"]).sequences_per_step == 4
    with pytest.raises(ConfigError, match=r"micro_batch_size \(5\).*= 4"):
        load_config("tiny-cpu", [*one_type, "optim.micro_batch_size=5"])


def test_a_program_copy_reward_needs_programs_compared():
    copies = ["rewards.program_copy_reward=-0.5"]
    with pytest.raises(ConfigError, match=r"needs selfplay\.distinct_programs: true"):
        load_config("tiny-cpu", copies)
    config = load_config("tiny-cpu", [*copies, "selfplay.distinct_programs=true"])
    assert config.rewards.program_copy_reward == -0.5


def test_behaviour_keys_need_programs_compared():
    with pytest.raises(ConfigError, match=r"distinct_behaviour needs selfplay\.distinct_programs: true"):
        load_config("tiny-cpu", ["selfplay.distinct_behaviour=true"])
    config = load_config("tiny-cpu", ["selfplay.distinct_behaviour=true", "selfplay.distinct_programs=true"])
    assert config.selfplay.distinct_behaviour


def test_prompt_version_resolves_to_the_newest_and_is_recorded():
    from azr.prompts import latest_version

    config = load_config("tiny-cpu")
    assert config.selfplay.prompt_version == latest_version("completion") == "v3"
    assert load_config("tiny-cpu", ["selfplay.prompt_version=v1"]).selfplay.prompt_version == "v1"


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_resolves_to_bf16_only_where_the_device_runs_it_natively(monkeypatch, native):
    import azr.devices

    seen = []

    def bf16_is_native(device):
        seen.append(device.type)
        return native

    monkeypatch.setattr(azr.devices, "bf16_is_native", bf16_is_native)
    config = load_config("tiny-cpu", ["model.dtype=auto", "device=cpu"])
    assert config.model.dtype == ("bfloat16" if native else "float32") and seen == ["cpu"]
    # What was resolved is what config.yaml records, so a resumed run computes as the run did.
    assert load_config("tiny-cpu", ["model.dtype=float32"]).model.dtype == "float32"


def test_bf16_native_check_answers_for_this_machine():
    import torch

    from azr.devices import bf16_is_native

    assert isinstance(bf16_is_native(torch.device("cpu")), bool)
    assert not bf16_is_native(torch.device("meta"))


def test_sharding_needs_full_fine_tuning_and_a_rollout_copy():
    assert load_config("tiny-cpu").distributed.sharding == "none"
    sharded = ["distributed.sharding=fsdp2", "generation.backend=transformers-bf16"]
    assert load_config("tiny-cpu", sharded).distributed.sharding == "fsdp2"
    with pytest.raises(ConfigError, match="LoRA keeps its frozen weights whole"):
        load_config("tiny-cpu", [*sharded, "model.lora.enabled=true"])
    with pytest.raises(ConfigError, match="no rank with whole weights to sample from"):
        load_config("tiny-cpu", ["distributed.sharding=fsdp2"])
    for name in ("paper-7b-coder", "paper-llama-8b", "paper-14b-coder"):  # as the paper, full fine-tuning
        config = load_config(name)
        assert config.distributed.sharding == "fsdp2" and config.optim.recompute_logprobs
    assert load_config("paper-7b-coder", ["model.lora.enabled=true", "distributed.sharding=none"])


def test_a_resumed_run_says_which_settings_its_config_predates(tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from azr.cli import app
    from azr.config import LoraConfig, settings_missing_from

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    config_path = run_dir / "config.yaml"
    dump_config(load_config("tiny-cpu", [f"model.path={tmp_path / 'no-model'}"]), config_path)
    assert settings_missing_from(config_path) == []
    old = yaml.safe_load(config_path.read_text())
    del old["optim"]["mask_unchecked_outputs"]
    del old["model"]["lora"]["r"]
    config_path.write_text(yaml.safe_dump(old))
    assert settings_missing_from(config_path) == ["model.lora.r", "optim.mask_unchecked_outputs"]
    result = CliRunner().invoke(app, ["train", "--resume", str(run_dir)])
    output = " ".join(result.output.split())
    assert "predates 2 setting(s)" in output
    assert f"model.lora.r={LoraConfig().r}" in output
    assert "optim.mask_unchecked_outputs=True" in output
