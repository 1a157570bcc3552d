"""Smoke test of the throughput benchmark with its quick workload (no timing assertions)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = [pytest.mark.subprocess]


def test_throughput_benchmark_writes_its_json(tmp_path):
    out = tmp_path / "throughput.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--workload", "quick", "--steps", "1",
         "--warmup", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("tokens_per_s", "overhead_frac", "weight_sync_over_memcpy", "generated_tokens_per_s"):
        assert result[key] > 0 or key == "overhead_frac", key
    assert set(result["engines_tokens_per_s"]) == {"vllm", "hf"}
    assert "weight sync / memcpy" in done.stdout


def test_throughput_benchmark_compares_sync_and_async(tmp_path):
    out = tmp_path / "modes.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--workload", "quick", "--steps", "1",
         "--warmup", "0", "--modes", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["modes"]) == {"sync", "sync_pinned", "async"}
    assert result["async_over_sync"] > 0 and result["async_over_sync_pinned"] > 0
    assert "cluster.rollout.cores=[0]" in result["modes"]["async"]["overrides"]
    assert "async / sync throughput:" in done.stdout
