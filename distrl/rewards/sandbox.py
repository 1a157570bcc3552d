"""Running model-written Python programs: the built-in ``code`` verifier and its sandbox.

:func:`verify_code` scores a response against test cases in the ground truth, in the two formats
code datasets use (APPS, TACO, CodeContests, verl's ``prime_code`` data; and assert-style sets):

- ``{"inputs": [...], "outputs": [...]}``: each input is fed to the program on stdin and its stdout
  must equal the output (lines compared with trailing whitespace dropped; numbers within 1e-6);
  with ``"fn_name"``, each input is instead a list of arguments to that function (or to that
  method of a ``Solution`` class) and the output its return value (a one-element list is unwrapped).
- a list of statements (``["assert f(1) == 2", ...]``, or ``{"asserts": [...]}``): run after the
  program; they must all pass.

The program is the last fenced code block of the response (```` ```python ````), or the whole
response when it has none. The score is 1.0 when every case passes and 0.0 otherwise; cases stop
at the first failure.

Each run is :func:`run_sandboxed`: a fresh ``python -I -S`` process in a new session, with

- an empty temporary directory as its working directory, deleted afterwards;
- an environment of ``PATH`` and ``LANG`` only (no API keys, no ``PYTHONPATH``, nothing of the job's);
- limits: CPU seconds, address space, file size, open files, no core files; the whole process
  group is killed past the wall-clock deadline; output capped;
- an audit hook installed before the program runs that refuses sockets, new processes (``fork``,
  ``exec``, ``subprocess``, ``os.system``, and the unaudited ``_posixsubprocess``), signals to other
  processes, ``ctypes``, ``gc`` and frame introspection (the ways back into the hook), and any file
  opened, listed or changed outside the temporary directory and Python's standard library;
- for a user other than root, a process limit of zero, so the kernel refuses any new process;
- where the kernel lets an unprivileged process make one (``unshare --user --net``), a network
  namespace with no interface up, so the kernel itself refuses the network.

What this does not protect against: a bug in CPython or the kernel (an audit hook is no boundary
against memory corruption), timing and resource side channels, and programs that need more than the
standard library. It is meant for model-written code on your own cluster; for code from untrusted
users, run each program in a container or microVM service (gVisor, Firecracker, a SandboxFusion-style
HTTP service) called from a user reward function (``reward.function``), which ``reward.workers``
isolates in its turn.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

#: Seconds of CPU each program run may use (its wall-clock deadline is twice that, plus start-up).
CPU_SECONDS = 5
#: Address space of each program run, MiB.
MEMORY_MB = 1024
#: Largest file a program may write, and the most of its output kept, bytes.
OUTPUT_BYTES = 1 << 20
#: Test cases run per response at most (the rest are not run; the score needs all run to pass).
MAX_CASES = 32

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)

#: Runs in the sandboxed interpreter before the program: the audit hook, then the harness.
_BOOTSTRAP = r"""
import bisect, collections, dataclasses, decimal, fractions, functools, heapq, itertools, json, math, random, re
import statistics, string, types, typing  # imported before the hook: types.py reads a traceback's frame


def _install():
    import os, sys
    root = os.path.realpath(os.getcwd())
    allowed = (root, *sorted({os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}))
    denied = ("socket.", "subprocess.", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn",
              "os.system", "os.kill", "os.killpg", "ctypes.", "pty.", "gc.", "sys._current_frames", "code.__new__",
              "function.__new__")
    frames = frozenset(("tb_frame", "gi_frame", "cr_frame", "ag_frame"))  # the way back into this hook
    modules = frozenset(("_posixsubprocess", "_ctypes", "_xxsubinterpreters", "_testcapi", "_testinternalcapi"))
    paths = frozenset(("open", "os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.chmod", "os.chown",
                       "os.link", "os.symlink", "os.truncate", "os.listdir", "os.scandir", "os.chdir",
                       "os.utime", "shutil.rmtree", "os.chroot", "sqlite3.connect"))

    def inside(path):
        if isinstance(path, int):
            return True
        real = os.path.realpath(os.fsdecode(path))
        return any(real == p or real.startswith(p + os.sep) for p in allowed)

    def hook(event, args):
        if event.startswith(denied):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "object.__getattr__" and args[1] in frames:
            raise PermissionError(f"sandbox: reading {args[1]} is not allowed")
        if event == "import" and args[0] in modules:  # unaudited ways to start processes or poke memory
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event in paths:
            for path in args:
                if isinstance(path, str | bytes | os.PathLike) and not inside(path):
                    raise PermissionError(f"sandbox: {event} outside the sandbox: {path!r}")

    sys.addaudithook(hook)


_install()
del _install
exec(compile(open("harness.py").read(), "harness.py", "exec"), {"__name__": "__main__"})
"""

#: The harness: runs solution.py as __main__, then the asserts or the function calls of case.json.
_HARNESS = r"""
import json, sys
case = json.load(open("case.json"))
scope = {"__name__": "__main__"}
exec(compile(open("solution.py").read(), "solution.py", "exec"), scope)
if case["kind"] == "asserts":
    exec(compile(case["code"], "tests", "exec"), scope)
elif case["kind"] == "call":
    fn = scope.get(case["fn_name"])
    if fn is None and "Solution" in scope:
        fn = getattr(scope["Solution"](), case["fn_name"])
    result = fn(*case["args"])
    sys.__stdout__.write("\n" + json.dumps({"result": result}, default=repr))
"""


@dataclass
class RunResult:
    """What one sandboxed run did."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool


@functools.cache
def _net_isolation() -> list[str]:
    """``unshare`` arguments that give the program a network namespace with no interface up, or
    none where the kernel refuses an unprivileged namespace."""
    command = ["unshare", "--user", "--map-root-user", "--net", "true"]
    if shutil.which("unshare") is None:
        return []
    try:
        ok = subprocess.run(command, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return command[:-1] if ok else []


def _limits(cpu_s: int, memory_mb: int) -> None:
    """In the child between fork and exec (nothing here may import or take a lock)."""
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_BYTES, OUTPUT_BYTES))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.getuid() != 0:  # no new process at all (root is exempt from this limit)
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def run_sandboxed(
    program: str, stdin: str = "", case: dict[str, Any] | None = None, *,
    cpu_s: int = CPU_SECONDS, memory_mb: int = MEMORY_MB,
) -> RunResult:  # fmt: skip
    """Run ``program`` (as ``solution.py``) in the sandbox the module describes, ``stdin`` on its
    standard input and ``case`` (asserts or a function call) after it; never raises for what the
    program does."""
    folder = tempfile.mkdtemp(prefix="distrl-sandbox-")
    try:
        for name, text in (("solution.py", program), ("harness.py", _HARNESS),
                           ("case.json", json.dumps(case or {"kind": "stdio"}))):  # fmt: skip
            with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
                f.write(text)
        python = os.path.realpath(sys.executable)
        command = [*_net_isolation(), python, "-I", "-S", "-c", _BOOTSTRAP]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, preexec_fn=functools.partial(_limits, cpu_s, memory_mb),
        )  # fmt: skip
        try:
            out, err = process.communicate(stdin.encode(), timeout=2 * cpu_s + 5)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            timed_out = True
        decode = functools.partial(str, encoding="utf-8", errors="replace")
        return RunResult(process.returncode, decode(out[:OUTPUT_BYTES]), decode(err[-4000:]), timed_out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def extract_program(response: str) -> str:
    """The last fenced code block of ``response`` (a python-tagged one if any), or the whole response."""
    blocks = _FENCE.findall(response)
    tagged = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3")]
    return (tagged or [code for _, code in blocks] or [response])[-1]


def _same_output(got: str, expected: str) -> bool:
    """Line by line with trailing whitespace and trailing blank lines dropped; tokens that are
    both numbers match within 1e-6 (relative or absolute)."""
    lines = [[line.rstrip() for line in text.rstrip().splitlines()] for text in (got, expected)]
    if len(lines[0]) != len(lines[1]):
        return False
    for a, b in zip(*lines, strict=True):
        if a == b:
            continue
        ta, tb = a.split(), b.split()
        if len(ta) != len(tb):
            return False
        for x, y in zip(ta, tb, strict=True):
            if x == y:
                continue
            try:
                if not math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-6):
                    return False
            except ValueError:
                return False
    return True


def _cases(ground_truth: Any) -> list[tuple[str, dict[str, Any] | None, Any]]:
    """(stdin, case, expected) per test: stdio, a function call, or one block of asserts."""
    tests = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    if isinstance(tests, dict) and "asserts" in tests:
        tests = tests["asserts"]
    if isinstance(tests, list):
        return [("", {"kind": "asserts", "code": "\n".join(tests)}, None)]
    if not isinstance(tests, dict) or "inputs" not in tests or "outputs" not in tests:
        raise ValueError(
            'code ground truth must be {"inputs": [...], "outputs": [...]} (optionally with "fn_name") '
            "or a list of assert statements"
        )
    pairs = list(zip(tests["inputs"], tests["outputs"], strict=True))[:MAX_CASES]
    if tests.get("fn_name"):
        return [("", {"kind": "call", "fn_name": tests["fn_name"], "args": list(inp)}, out) for inp, out in pairs]
    return [("\n".join(inp) if isinstance(inp, list) else str(inp), None, out) for inp, out in pairs]


def verify_code(response: str, ground_truth: Any) -> float:
    """1.0 iff the response's program passes every test case of ``ground_truth`` (module doc)."""
    program = extract_program(response)
    for stdin, case, expected in _cases(ground_truth):
        run = run_sandboxed(program, stdin, case)
        if run.timed_out or run.returncode != 0:
            return 0.0
        if case is None:
            text = "\n".join(expected) if isinstance(expected, list) else str(expected)
            if not _same_output(run.stdout, text):
                return 0.0
        elif case["kind"] == "call":
            result = json.loads(run.stdout.rsplit("\n", 1)[-1])["result"]
            want = expected[0] if isinstance(expected, list) and len(expected) == 1 else expected
            if result != want and result != expected:
                return 0.0
    return 1.0
