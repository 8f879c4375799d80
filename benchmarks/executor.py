"""Executor throughput: azr's sandboxed pool against a reference-style worker and a naive subprocess.

Workload: the 256 real programs shipped in azr/data/programs (qwen2.5-coder-7b_io.jsonl), plus one
infinite loop after every 50 of them for the "mixed" workload. Every implementation validates each
program the same way: run f(input), and when that succeeds run it a second time and compare the
outputs (the determinism check). Each run gets the same CPU budget (--cpu-budget, default 1 s).

  (a) azr        Executor: warm sandboxed workers (bubblewrap + seccomp + rlimits), fork per run.
  (b) reference  one persistent, unsandboxed worker process that `exec`s each program in turn, one at
                 a time, with a signal-based timeout: how the reference implementation runs programs
                 (it uses SIGALRM; here the profiling timer, so that the budget is CPU time for all).
  (c) subprocess a fresh `python -c` per run, killed by a timer.

Then a breakdown of where the sandbox's time goes (bubblewrap start, fork, limits, seccomp, IPC).
Run: .venv/bin/python benchmarks/executor.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from azr.executor import Executor, ExecutorConfig
from azr.executor.sandbox import PYTHON_FLAGS, base_python, bwrap_argv

INFINITE_LOOP = "def f(a):\n    while True:\n        pass"
LOOP_EVERY = 50

Program = tuple[str, str]  # (source, input expression)

# The reference-style worker: reads one JSON job per line, answers one JSON line. Unsandboxed.
REFERENCE_WORKER = r"""
import contextlib, io, json, signal, sys

def on_timer(signum, frame):
    raise TimeoutError("timeout")

signal.signal(signal.SIGPROF, on_timer)
for line in sys.stdin:
    job = json.loads(line)
    signal.setitimer(signal.ITIMER_PROF, job["budget"])
    try:
        namespace = {}
        with contextlib.redirect_stdout(io.StringIO()):  # programs may print
            exec(job["program"], namespace)
            answer = {"ok": True, "output": repr(eval("f(" + job["input"] + ")", namespace))}
    except BaseException as error:
        answer = {"ok": False, "output": type(error).__name__}
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
"""

# The naive run: one fresh interpreter per run, CPU budget from a profiling timer (SIGPROF kills).
FRESH_RUN = r"""
import json, signal, sys
job = json.loads(sys.stdin.read())
signal.setitimer(signal.ITIMER_PROF, job["budget"])
namespace = {}
exec(job["program"], namespace)
print(repr(eval("f(" + job["input"] + ")", namespace)))
"""


def load_programs() -> list[Program]:
    text = resources.files("azr").joinpath("data", "programs", "qwen2.5-coder-7b_io.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [(row["snippet"], row["input"]) for row in rows]


def with_loops(programs: list[Program]) -> list[Program]:
    mixed: list[Program] = []
    for index, program in enumerate(programs, start=1):
        mixed.append(program)
        if index % LOOP_EVERY == 0:
            mixed.append((INFINITE_LOOP, "0"))
    return mixed


def cpu_seconds(pid: int) -> float:
    """CPU time of a process plus its reaped children (utime, stime, cutime, cstime from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_azr(programs: list[Program], workers: int, budget: float) -> tuple[float, int, float]:
    """Seconds to validate all programs (workers already warm), how many were valid, and the CPU
    seconds spent per program by the host process, the workers and their per-run children together
    (a measure that, unlike wall time, does not depend on what else the machine is running)."""
    with Executor(ExecutorConfig(workers=workers, timeout_s=budget)) as executor:
        # The bwrap processes' counters include the workers inside them once those are reaped, so
        # count the in-sandbox Python workers: the direct children of each sandbox's init.
        workers_pids = [pid for host_pid in executor.worker_pids() for pid in _grandchildren(host_pid)]
        cpu_before = sum(map(cpu_seconds, workers_pids)) + time.process_time()
        started = time.perf_counter()
        futures = [executor.validate(program, input_expr) for program, input_expr in programs]
        valid = sum(future.result().ok for future in futures)
        elapsed = time.perf_counter() - started
        cpu = sum(map(cpu_seconds, workers_pids)) + time.process_time() - cpu_before
        return elapsed, valid, cpu / len(programs)


def _grandchildren(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    return [grandchild for child in children.get(pid, []) for grandchild in children.get(child, [])]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_reference_style(programs: list[Program], budget: float) -> tuple[float, int, float]:
    worker = subprocess.Popen(
        [sys.executable, "-c", REFERENCE_WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert worker.stdin is not None and worker.stdout is not None

    def once(program: str, input_expr: str) -> dict:
        job = {"program": program, "input": input_expr, "budget": budget}
        worker.stdin.write(json.dumps(job) + "\n")  # type: ignore[union-attr]
        worker.stdin.flush()  # type: ignore[union-attr]
        return json.loads(worker.stdout.readline())  # type: ignore[union-attr]

    cpu_before = children_cpu_seconds() + time.process_time()
    started = time.perf_counter()
    valid = 0
    for program, input_expr in programs:
        first = once(program, input_expr)
        if first["ok"]:
            valid += once(program, input_expr) == first
    elapsed = time.perf_counter() - started
    worker.stdin.close()
    worker.wait()  # its CPU time joins RUSAGE_CHILDREN once reaped
    cpu = children_cpu_seconds() + time.process_time() - cpu_before
    return elapsed, valid, cpu / len(programs)


def run_fresh_subprocess(programs: list[Program], budget: float) -> tuple[float, int, float]:
    def once(program: str, input_expr: str) -> str | None:
        job = json.dumps({"program": program, "input": input_expr, "budget": budget})
        try:
            done = subprocess.run(
                [sys.executable, "-c", FRESH_RUN],
                input=job,
                capture_output=True,
                text=True,
                timeout=3 * budget,
            )
        except subprocess.TimeoutExpired:
            return None
        return done.stdout if done.returncode == 0 else None

    cpu_before = children_cpu_seconds() + time.process_time()
    started = time.perf_counter()
    valid = 0
    for program, input_expr in programs:
        first = once(program, input_expr)
        if first is not None:
            valid += once(program, input_expr) == first
    elapsed = time.perf_counter() - started
    cpu = children_cpu_seconds() + time.process_time() - cpu_before
    return elapsed, valid, cpu / len(programs)


def median_seconds(argv: list[str], repeats: int = 10) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, check=True, env={}, capture_output=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def sandbox_breakdown(jobs: int = 200) -> list[tuple[str, float]]:
    """Milliseconds per stage: starting a worker, and each stage of one job on a warm worker."""
    python, _ = base_python()
    plain = median_seconds([str(python), *PYTHON_FLAGS, "-c", "pass"])
    sandboxed = median_seconds(
        [*bwrap_argv(ExecutorConfig().tmp_size_mb), str(python), *PYTHON_FLAGS, "-c", "pass"]
    )
    started = time.perf_counter()
    executor = Executor(ExecutorConfig(workers=1, timeout_s=1.0))
    warm_start = time.perf_counter() - started
    identity = {"program": "def f(a):\n    return a", "input": "1", "salt": "00" * 34}
    with executor:
        for _ in range(20):  # warm-up
            executor._submit("run", **identity).result()  # raw worker answers carry the stage timings
        started = time.perf_counter()
        answers = [executor._submit("run", **identity).result() for _ in range(jobs)]
        round_trip = (time.perf_counter() - started) / jobs
    stages = ["fork_s", "limits_s", "seccomp_s", "heap_perturb_s", "run_s"]
    mean = {stage: statistics.mean(answer["timings"][stage] for answer in answers) for stage in stages}
    in_worker = statistics.mean(answer["seconds"] for answer in answers)
    rows = [
        ("python -S start, no sandbox (per worker start)", plain),
        ("bwrap + python -S start (per worker start)", sandboxed),
        ("=> bubblewrap's own cost (per worker start)", sandboxed - plain),
        ("Executor(workers=1) ready, worker warm (once)", warm_start),
        ("job round trip, host submit -> Future result", round_trip),
        ("  fork (worker fork() -> child running)", mean["fork_s"]),
        ("  rlimits, fds, chdir in the child", mean["limits_s"]),
        ("  seccomp load (prctl)", mean["seccomp_s"]),
        ("  heap perturbation (id() nondeterminism)", mean["heap_perturb_s"]),
        ("  run f(input), repr and checks", mean["run_s"]),
        ("  result pipe, child exit, reap, /tmp cleanup", in_worker - sum(mean.values())),
        ("  host <-> worker IPC and thread hand-off", round_trip - in_worker),
    ]
    return [(label, seconds * 1000) for label, seconds in rows]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-budget", type=float, default=1.0, help="CPU seconds per run, for all three.")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="azr workers (default: cores)."
    )
    args = parser.parse_args()
    benign = load_programs()
    mixed = with_loops(benign)
    print(
        f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}, budget {args.cpu_budget} s"
    )
    print(f"workload: {len(benign)} real programs; mixed adds {len(mixed) - len(benign)} infinite loops\n")

    results: list[tuple[str, str, int, float, int, str]] = []
    for name, workload in (("mixed", mixed), ("benign", benign)):
        for workers in sorted({1, args.workers}):
            seconds, valid, cpu = run_azr(workload, workers, args.cpu_budget)
            label = f"(a) azr, {workers} worker(s)"
            results.append((label, name, len(workload), seconds, valid, f"{cpu * 1000:.1f}"))
    seconds, valid, cpu = run_reference_style(mixed, args.cpu_budget)
    results.append(("(b) reference-style worker", "mixed", len(mixed), seconds, valid, f"{cpu * 1000:.1f}"))
    seconds, valid, cpu = run_fresh_subprocess(mixed, args.cpu_budget)
    results.append(("(c) fresh python -c per run", "mixed", len(mixed), seconds, valid, f"{cpu * 1000:.1f}"))

    baseline = next(r for r in results if r[0].startswith("(b)"))
    baseline_rate = baseline[2] / baseline[3]
    print("| implementation | workload | programs | valid | seconds | programs/s | vs (b) | CPU ms/program |")
    print("|---|---|---|---|---|---|---|---|")
    for label, name, count, seconds, valid, cpu_ms in results:
        rate = count / seconds
        ratio = f"{rate / baseline_rate:.2f}x" if name == "mixed" else ""
        print(f"| {label} | {name} | {count} | {valid} | {seconds:.2f} | {rate:.1f} | {ratio} | {cpu_ms} |")

    print("\nWhere the sandbox's time goes (ms):\n")
    print("| stage | ms |")
    print("|---|---|")
    for label, milliseconds in sandbox_breakdown():
        print(f"| {label} | {milliseconds:.2f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
