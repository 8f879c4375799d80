"""Both installs of README "Install" resolve with pip from this pyproject.toml, each in a fresh venv:
the CPU one (the local torch 2.13.0 CPU wheel, nothing CUDA) and the GPU extra (vLLM with its own torch).

pip's resolver only (`--dry-run`): nothing is downloaded beyond metadata. Needs PyPI and ~30 s, so these
run under `make check-install` (and CI), not `make test` (marker `install`, deselected by default).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parents[1]
CUDA_PACKAGES = re.compile(r"^(nvidia-|cuda-|triton|cupy)")


def pinned(*extras: str) -> dict[str, str]:
    """{name: version} of the `name==version` pins of pyproject.toml's base and `extras` lists."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]
    return dict(requirement.lower().split("==") for requirement in requirements)


def resolve(tmp_path: Path, *requirements: str) -> dict[str, str]:
    """{name: version} of what `pip install requirements` would install into a fresh venv."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    command += ["--dry-run", "--quiet", "--report", str(report), *requirements]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"pip could not resolve {requirements}:\n{result.stderr[-4000:]}"
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}


def test_the_cpu_install_takes_the_local_cpu_torch_and_nothing_cuda(tmp_path: Path) -> None:
    resolved = resolve(tmp_path, "torch==2.13.0", "-e", ".[train,eval,dev]")  # as `make setup` does
    assert resolved["torch"] == "2.13.0+cpu"
    assert not sorted(filter(CUDA_PACKAGES.match, resolved))
    for name, version in pinned("train", "eval", "dev").items():
        assert resolved[name] == version, name


def test_the_gpu_extra_resolves_with_vllms_own_torch(tmp_path: Path) -> None:
    resolved = resolve(tmp_path, "-e", ".[train,eval,gpu]")
    for name, version in pinned("train", "eval", "gpu").items():
        assert resolved[name] == version, name
    assert not resolved["torch"].endswith("+cpu"), "vLLM's CUDA build of torch"
