import json
from pathlib import Path

import pytest

from azr.config import load_config
from azr.run_dir import COMPLETE_MARKER, RunDir


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    return RunDir.create(tmp_path / "run", load_config("tiny-cpu"))


def write_payload(text: str):
    def write(folder: Path) -> None:
        (folder / "payload.txt").write_text(text)

    return write


def test_checkpoints_are_published_whole_and_pruned(run: RunDir):
    for step in (1, 2, 3):
        run.save_checkpoint(step, write_payload(f"step {step}"), keep_last=2)
    assert [step for step, _ in run.completed_checkpoints()] == [2, 3]
    step, folder = run.latest_checkpoint()
    assert step == 3
    assert (folder / "payload.txt").read_text() == "step 3"
    assert (folder / COMPLETE_MARKER).is_file()


def test_a_kill_mid_save_leaves_the_previous_checkpoint_as_latest(run: RunDir):
    run.save_checkpoint(1, write_payload("good"), keep_last=2)

    def dies_midway(folder: Path) -> None:
        (folder / "payload.txt").write_text("half")
        raise KeyboardInterrupt  # stands in for SIGKILL: nothing after this line runs

    with pytest.raises(KeyboardInterrupt):
        run.save_checkpoint(2, dies_midway, keep_last=2)
    # A folder that looks like a checkpoint but lacks its marker is not one either.
    (run.checkpoints_dir / "step_000003").mkdir()
    assert run.latest_checkpoint()[0] == 1
    run.remove_incomplete_checkpoints()
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["step_000001"]


def test_metrics_are_trimmed_to_the_resumed_checkpoint_and_survive_a_torn_line(run: RunDir):
    for step in (1, 2, 3):
        run.append_metrics({"step": step, "reward/deduction/solve": step / 10})
    with open(run.metrics_path, "a") as handle:
        handle.write('{"step": 4, "rew')  # a kill in the middle of an append
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3]
    run.trim_metrics(2)
    lines = run.metrics_path.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]


def test_creating_over_an_existing_run_is_refused(run: RunDir):
    run.save_checkpoint(1, write_payload("x"), keep_last=1)
    with pytest.raises(FileExistsError, match="--resume"):
        RunDir.create(run.root, load_config("tiny-cpu"))


def test_opening_a_folder_that_is_not_a_run_says_so(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        RunDir.open(tmp_path)


def test_metrics_lines_are_strict_json(run: RunDir):
    run.append_metrics(
        {"step": 1, "update/loss": float("nan"), "learnability/induction": None, "x": float("inf")}
    )
    line = run.metrics_path.read_text().splitlines()[0]
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}")) == {
        "step": 1,
        "update/loss": None,
        "learnability/induction": None,
        "x": None,
    }
