"""A hand-built classic-BPF seccomp filter that stops process creation, networking and signalling.

The host builds the filter bytes once (here) and hands them to every worker, which loads them with
`prctl(PR_SET_SECCOMP)` in each per-job child just before running untrusted code. Denied calls fail
with EPERM, so Python raises a clean `PermissionError` instead of the process being killed; `clone3`
fails with ENOSYS so that glibc falls back to `clone`, which is then refused.
"""

from __future__ import annotations

import errno
import platform
import struct

# <linux/audit.h>
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# <linux/filter.h> opcodes
_LD_W_ABS = 0x20
_JMP_JEQ_K = 0x15
_JMP_JGE_K = 0x35
_RET_K = 0x06
# <linux/seccomp.h> return actions and the offsets inside struct seccomp_data
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_OFFSET_NR = 0
_OFFSET_ARCH = 4
_X32_SYSCALL_BIT = 0x40000000

# Syscalls refused inside the sandbox, by name. Process creation and program loading, sockets, signals
# to any process, debugging other processes, namespaces and mounts, raising resource limits, and
# kernel interfaces with a history of exploits.
DENIED_SYSCALLS: tuple[str, ...] = (
    "fork",
    "vfork",
    "clone",
    "execve",
    "execveat",
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "kill",
    "tkill",
    "tgkill",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "pidfd_open",
    "pidfd_send_signal",
    "pidfd_getfd",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "setrlimit",
    "prlimit64",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "reboot",
)
# clone3 answers ENOSYS ("not implemented"), which makes glibc retry with clone (denied above).
ENOSYS_SYSCALLS: tuple[str, ...] = ("clone3",)

# Numbers from the kernel's syscall tables (arch/x86/entry/syscalls/syscall_64.tbl and the generic
# table used by arm64). aarch64 has no fork or vfork: everything goes through clone there.
# fmt: off
_SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {
        "fork": 57, "vfork": 58, "clone": 56, "clone3": 435, "execve": 59, "execveat": 322, "socket": 41,
        "socketpair": 53, "connect": 42, "bind": 49, "listen": 50, "accept": 43, "accept4": 288, "kill": 62,
        "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "pidfd_open": 434,
        "pidfd_send_signal": 424, "pidfd_getfd": 438, "ptrace": 101, "process_vm_readv": 310,
        "process_vm_writev": 311, "unshare": 272, "setns": 308, "mount": 165, "umount2": 166,
        "pivot_root": 155, "chroot": 161, "setrlimit": 160, "prlimit64": 302, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250, "add_key": 248, "request_key": 249,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "init_module": 175,
        "finit_module": 313, "delete_module": 176, "kexec_load": 246, "reboot": 169,
    },
    "aarch64": {
        "clone": 220, "clone3": 435, "execve": 221, "execveat": 281, "socket": 198, "socketpair": 199,
        "connect": 203, "bind": 200, "listen": 201, "accept": 202, "accept4": 242, "kill": 129,
        "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "pidfd_open": 434,
        "pidfd_send_signal": 424, "pidfd_getfd": 438, "ptrace": 117, "process_vm_readv": 270,
        "process_vm_writev": 271, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41,
        "chroot": 51, "setrlimit": 164, "prlimit64": 261, "bpf": 280, "perf_event_open": 241,
        "userfaultfd": 282, "keyctl": 219, "add_key": 217, "request_key": 218, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "init_module": 105, "finit_module": 273,
        "delete_module": 106, "kexec_load": 104, "reboot": 142,
    },
}
# fmt: on


class SeccompUnsupportedError(RuntimeError):
    """The machine's architecture has no syscall table here, so no filter can be built."""


def _instruction(code: int, jump_true: int, jump_false: int, k: int) -> bytes:
    # struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; }
    return struct.pack("=HBBI", code, jump_true, jump_false, k)


def build_filter(machine: str | None = None) -> bytes:
    """Return the filter as packed `struct sock_filter` entries for `machine` (default: this one)."""
    machine = machine or platform.machine()
    if machine not in _SYSCALL_NUMBERS:
        raise SeccompUnsupportedError(f"no seccomp syscall table for architecture {machine!r}")
    numbers = _SYSCALL_NUMBERS[machine]
    program = [
        # A filter built for one ABI must not be bypassed through another (e.g. 32-bit syscalls).
        _instruction(_LD_W_ABS, 0, 0, _OFFSET_ARCH),
        _instruction(_JMP_JEQ_K, 1, 0, _AUDIT_ARCH[machine]),
        _instruction(_RET_K, 0, 0, _RET_KILL_PROCESS),
        _instruction(_LD_W_ABS, 0, 0, _OFFSET_NR),
    ]
    if machine == "x86_64":
        # x32 syscalls share the x86_64 audit arch but carry this bit; refuse them all.
        program += [
            _instruction(_JMP_JGE_K, 0, 1, _X32_SYSCALL_BIT),
            _instruction(_RET_K, 0, 0, _RET_ERRNO | errno.EPERM),
        ]
    refusals = [(name, errno.EPERM) for name in DENIED_SYSCALLS] + [
        (name, errno.ENOSYS) for name in ENOSYS_SYSCALLS
    ]
    for name, error_number in refusals:
        if name not in numbers:  # e.g. aarch64 has no fork/vfork: nothing to refuse
            continue
        program += [
            _instruction(_JMP_JEQ_K, 0, 1, numbers[name]),
            _instruction(_RET_K, 0, 0, _RET_ERRNO | error_number),
        ]
    program.append(_instruction(_RET_K, 0, 0, _RET_ALLOW))
    return b"".join(program)
