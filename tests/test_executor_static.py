"""The executor's static layers: the AST ban check and the seccomp filter bytes (no sandbox needed)."""

from __future__ import annotations

import struct

import pytest

from azr.executor import DEFAULT_BANNED_MODULES, DEFAULT_BANNED_NAMES, SandboxUnavailableError, sandbox
from azr.executor.ast_check import (
    BannedCodeError,
    MalformedCodeError,
    RejectedCodeError,
    check_expression,
    check_program,
)
from azr.executor.seccomp import DENIED_SYSCALLS, SeccompUnsupportedError, build_filter


def check(program: str) -> None:
    check_program(program, DEFAULT_BANNED_MODULES, DEFAULT_BANNED_NAMES)


@pytest.mark.parametrize(
    "program",
    [
        "def f(a):\n    return a",
        "import re, math\nfrom collections import Counter\ndef f(s, k=2):\n    return Counter(s)[k]",
        "def f(*args):\n    return len(args)",
        "def f(input, time=3):\n    return input * time",  # parameters may shadow module names
        "class Box:\n    def __init__(self, v):\n        self.v = v\ndef f(x):\n    return Box(x).v",
    ],
)
def test_accepts_ordinary_programs(program: str) -> None:
    check(program)


@pytest.mark.parametrize(
    ("program", "reason"),
    [
        ("def f(a) return a", "does not parse"),
        ("def g(a):\n    return a", "no top-level function `f`"),
        ("def f():\n    return 1", "no positional parameter"),
        ("import os\ndef f(a):\n    return a", "banned module 'os'"),
        ("import os.path\ndef f(a):\n    return a", "banned module 'os.path'"),
        ("from random import choice\ndef f(a):\n    return choice(a)", "banned module 'random'"),
        ("def f(a):\n    import subprocess\n    return a", "banned module 'subprocess'"),
        ("def f(a):\n    return __import__('os').getpid()", "'__import__'"),
        ("def f(a):\n    return eval(a)", "'eval'"),
        ("def f(a):\n    return open(a).read()", "'open'"),
        ("def f(a):\n    return getattr(a, 'x')", "'getattr'"),
        ("def f(a):\n    return ().__class__.__base__.__subclasses__()", "banned attribute"),
        ("def f(a):\n    return __builtins__", "'__builtins__'"),
        ("def f(a):\n    return f.__globals__", "'__globals__'"),
        ("from operator import attrgetter\ndef f(a):\n    return attrgetter('x')(a)", "'attrgetter'"),
        ("def f(a):\n    return (lambda: 0).__code__", "'__code__'"),
    ],
)
def test_rejects(program: str, reason: str) -> None:
    with pytest.raises(RejectedCodeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        check(program)


def test_ban_list_is_configurable() -> None:
    check_program("import os\ndef f(a):\n    return a", banned_modules=(), banned_names=())
    with pytest.raises(BannedCodeError):
        check_program("import re\ndef f(a):\n    return a", banned_modules=("re",), banned_names=())


def test_input_expressions_are_checked_too() -> None:
    check_expression("'Lab', 'retest', 3", DEFAULT_BANNED_MODULES, DEFAULT_BANNED_NAMES)
    with pytest.raises(BannedCodeError, match="__import__"):
        check_expression("__import__('os').system('id')", DEFAULT_BANNED_MODULES, DEFAULT_BANNED_NAMES)
    with pytest.raises(MalformedCodeError, match="does not parse"):
        check_expression("1); import os; (2", DEFAULT_BANNED_MODULES, DEFAULT_BANNED_NAMES)


def test_reference_ban_list_is_included() -> None:
    reference = {"logging", "random", "multiprocessing", "pebble", "subprocess", "threading", "datetime"}
    reference |= {"time", "hashlib", "hmac", "bcrypt", "calendar", "os", "sys"}
    assert reference <= set(DEFAULT_BANNED_MODULES)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_seccomp_filter_is_well_formed(machine: str) -> None:
    program = build_filter(machine)
    assert len(program) % 8 == 0
    instructions = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    assert len(instructions) < 4096  # BPF_MAXINSNS
    assert instructions[-1] == (0x06, 0, 0, 0x7FFF0000)  # the default is to allow
    assert instructions[2] == (0x06, 0, 0, 0x80000000)  # a foreign architecture is killed
    # Every refusal is a compare-and-return pair; count them against the tables.
    refused = [k for code, _, _, k in instructions if code == 0x15][1:]
    assert len(refused) >= len(DENIED_SYSCALLS) - 2  # aarch64 has no fork/vfork


def test_seccomp_rejects_unknown_architecture() -> None:
    with pytest.raises(SeccompUnsupportedError):
        build_filter("mips")


def test_a_machine_without_a_seccomp_table_warns_or_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported() -> bytes:
        raise SeccompUnsupportedError("no seccomp syscall table for architecture 'mips'")

    monkeypatch.setattr(sandbox, "build_filter", unsupported)
    assert sandbox.seccomp_filter(require_sandbox=False) == b""
    with pytest.raises(SandboxUnavailableError, match="mips"):
        sandbox.seccomp_filter(require_sandbox=True)
