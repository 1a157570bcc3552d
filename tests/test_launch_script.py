"""``launch/submit.sh`` against a real one-node Ray cluster started by the test.

The head runs with token authentication on, as a Ray 2.60 cluster does once ``~/.ray/auth_token``
exists, under a private ``HOME`` holding that token; the script must find the token and turn
``RAY_AUTH_MODE=token`` on by itself. Only one Ray cluster may run on a machine during this test:
``ray stop --force`` at the end stops every Ray process of this user.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SUBMIT = REPO / "launch" / "submit.sh"
RUNTIME_ENV = REPO / "launch" / "runtime_env.yaml"
BIN = Path(sys.executable).parent
RAY = BIN / "ray"


@dataclass
class Cluster:
    """A running local head: its job-server address and the environment that reaches it."""

    address: str
    env: dict[str, str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Start a token-authenticated Ray head on free ports; always stop it afterwards."""
    # under CI a missing precondition fails the run instead of skipping the cluster tests silently
    give_up = pytest.fail if os.environ.get("CI") or os.environ.get("DISTRL_REQUIRE_RAY") else pytest.skip
    if not RAY.exists():
        give_up(f"no ray CLI beside {sys.executable}")
    deadline = time.monotonic() + 60  # a Ray instance an earlier test module shut down may take a while to exit
    while any(proc.info["name"] in ("gcs_server", "raylet") for proc in psutil.process_iter(["name"])):
        if time.monotonic() > deadline:
            give_up("a Ray cluster already runs on this machine, and `ray stop --force` would stop it too")
        time.sleep(1)
    home = tmp_path_factory.mktemp("home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    dashboard_port = _free_port()
    start = [
        str(RAY),
        "start",
        "--head",
        f"--port={_free_port()}",
        f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={_free_port()}",
        "--num-cpus=2",
        "--disable-usage-stats",
    ]
    try:
        started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "Token authentication is enabled" in started.stdout + started.stderr
        yield Cluster(address=f"http://127.0.0.1:{dashboard_port}", env=env)
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=60)


def _submit(cluster: Cluster, cwd: Path, *overrides: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env, "RAY_ADDRESS": cluster.address}
    return subprocess.run(
        [str(SUBMIT), *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.ray
@pytest.mark.subprocess
def test_submit_trains_two_steps_on_the_cluster(cluster: Cluster, tmp_path: Path, model_cache: Path) -> None:
    from conftest import TINY

    out = tmp_path / "run"
    result = _submit(
        cluster, tmp_path, *TINY, f"model.cache_dir={model_cache}", f"trainer.output_dir={out}", timeout=400
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout + result.stderr
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


@pytest.mark.ray
@pytest.mark.subprocess
def test_submit_runs_the_entry_point_with_overrides(cluster: Cluster, tmp_path: Path) -> None:
    result = _submit(cluster, tmp_path, "--cfg", "job", "algorithm=gspo")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "policy_loss: gspo" in output
    assert "RAY_ADDRESS is not set" not in output


@pytest.mark.ray
@pytest.mark.subprocess
def test_submit_exits_nonzero_for_a_bad_override(cluster: Cluster, tmp_path: Path) -> None:
    result = _submit(cluster, tmp_path, "algorithm=nope")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Could not find 'algorithm/nope'" in output


@pytest.mark.ray
@pytest.mark.subprocess
def test_submit_returns_the_jobs_exit_status(cluster: Cluster, tmp_path: Path) -> None:
    result = _submit(cluster, tmp_path, "algorithm.policy_loss=nope")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "config error" in output


def test_runtime_env_keeps_the_upload_small_and_installs_nothing() -> None:
    runtime_env = yaml.safe_load(RUNTIME_ENV.read_text())
    assert runtime_env["env_vars"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert all(isinstance(value, str) for value in runtime_env["env_vars"].values())
    assert {".venv/", "runs/", "outputs/", ".git/"} <= set(runtime_env["excludes"])
    assert not {"pip", "uv", "conda", "py_modules"} & set(runtime_env)


def test_submit_script_is_executable_bash() -> None:
    assert os.access(SUBMIT, os.X_OK)
    assert SUBMIT.read_text().startswith("#!/usr/bin/env bash\n")
    assert subprocess.run(["bash", "-n", str(SUBMIT)], check=False).returncode == 0
