"""The code verifier and its sandbox: right programs pass, wrong ones fail, and programs that try
to reach the network, the project's files, the job's environment or other processes, or to run
forever or eat memory, get nowhere and cost a bounded time."""

import json
import os
import time
from pathlib import Path

import pytest

from distrl.rewards import BUILTIN_VERIFIERS
from distrl.rewards.sandbox import extract_program, run_sandboxed, verify_code

ROOT = Path(__file__).resolve().parent.parent
STDIO = json.dumps({"inputs": ["1 2\n", "10 -3\n"], "outputs": ["3\n", "7\n"]})


def fenced(code: str) -> str:
    return f"Here is my solution:\n```python\n{code}\n```\nIt adds the numbers."


@pytest.mark.parametrize(
    ("response", "tests", "score"),
    [
        (fenced("a, b = map(int, input().split())\nprint(a + b)"), STDIO, 1.0),
        (fenced("a, b = map(int, input().split())\nprint(a - b)"), STDIO, 0.0),
        ("a, b = map(int, input().split())\nprint(a + b)", STDIO, 1.0),  # no fence: the whole response
        (fenced("print(0.1 + 0.2)"), {"inputs": [""], "outputs": ["0.3"]}, 1.0),  # numbers within 1e-6
        (fenced("def add(a, b):\n    return a + b"), {"fn_name": "add", "inputs": [[1, 2]], "outputs": [[3]]}, 1.0),
        (fenced("class Solution:\n    def twice(self, xs):\n        return [2 * x for x in xs]"),
         {"fn_name": "twice", "inputs": [[[1, 2]]], "outputs": [[2, 4]]}, 1.0),
        (fenced("def f(x):\n    return x * x"), ["assert f(3) == 9", "assert f(-2) == 4"], 1.0),
        (fenced("def f(x):\n    return x + x"), ["assert f(3) == 9"], 0.0),
        (fenced("import sys\nsys.exit(0)"), STDIO, 0.0),  # exits before printing
    ],
)  # fmt: skip
def test_code_verifier_scores_programs_by_their_tests(response, tests, score):
    assert verify_code(response, tests) == score


def test_verl_code_data_sources_use_the_code_verifier():
    assert all(BUILTIN_VERIFIERS[s] is verify_code for s in ("code", "codecontests", "apps", "codeforces", "taco"))


def test_the_last_python_block_is_the_program():
    assert extract_program("```text\nx\n```\n```python\nprint(1)\n```\n```python\nprint(2)\n```") == "print(2)\n"


@pytest.mark.parametrize(
    ("program", "refused"),
    [
        ("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)", "socket"),
        ("import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)", "socket"),
        (f"print(open({str(ROOT / 'pyproject.toml')!r}).read())", "outside the sandbox"),
        ("print(open('/etc/hostname').read())", "outside the sandbox"),
        ("import os\nprint(os.listdir('/'))", "outside the sandbox"),
        ("open('/tmp/distrl-sandbox-escape', 'w').write('x')", "outside the sandbox"),
        ("import subprocess\nsubprocess.run(['ls'])", "subprocess"),
        ("import os\nos.system('ls')", "os.system"),
        ("import os\nos.kill(1, 9)", "os.kill"),
        ("import ctypes\nctypes.CDLL(None)", "ctypes"),
        ("import gc\ngc.get_objects()", "gc."),
        ("import _posixsubprocess", "_posixsubprocess"),  # fork_exec raises no audit event of its own
        ("try:\n    open('/etc/hostname')\nexcept OSError as e:\n    e.__traceback__.tb_next.tb_frame", "tb_frame"),
        ("import os\nopen('a', 'w').write('x')\nos.rename('a', '/tmp/distrl-sandbox-escape')", "outside the sandbox"),
        ("import sqlite3\nsqlite3.connect('/tmp/distrl-sandbox-escape')", "outside the sandbox"),
    ],
)  # fmt: skip
def test_the_sandbox_refuses_the_network_files_processes_and_ctypes(program, refused):
    run = run_sandboxed(program)
    assert run.returncode != 0 and not run.timed_out
    assert "PermissionError" in run.stderr and refused in run.stderr
    assert not Path("/tmp/distrl-sandbox-escape").exists()


def test_the_sandbox_shows_no_environment_and_writes_only_its_own_folder(monkeypatch):
    monkeypatch.setenv("DISTRL_SECRET_KEY", "hunter2")
    run = run_sandboxed("import os\nopen('scratch.txt', 'w').write('ok')\nprint(sorted(os.environ), os.getcwd())")
    assert run.returncode == 0, run.stderr
    assert "DISTRL_SECRET_KEY" not in run.stdout and "hunter2" not in run.stdout
    folder = run.stdout.split()[-1]
    assert "distrl-sandbox-" in folder and not os.path.exists(folder)  # removed afterwards


def test_a_program_that_spins_or_eats_memory_is_stopped_in_bounded_time():
    started = time.monotonic()
    spin = run_sandboxed("while True:\n    pass", cpu_s=1)
    assert spin.returncode != 0
    hog = run_sandboxed("x = bytearray(4 << 30)", memory_mb=256)
    assert hog.returncode != 0 and "MemoryError" in hog.stderr
    sleeper = run_sandboxed("import time\ntime.sleep(60)", cpu_s=1)
    assert sleeper.timed_out
    assert time.monotonic() - started < 20
