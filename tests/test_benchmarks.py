"""Smoke test of the throughput benchmark with its quick workload (no timing assertions), and its
``--modes`` comparison's logic."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.subprocess
def test_throughput_benchmark_writes_its_json(tmp_path):
    out = tmp_path / "throughput.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--workload", "quick", "--steps", "1",
         "--warmup", "0", "--json", str(out), "cluster.backend=inline"],  # the script's code; Ray: test_runtime
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("tokens_per_s", "overhead_frac", "weight_sync_over_memcpy", "generated_tokens_per_s"):
        assert result[key] > 0 or key == "overhead_frac", key
    assert set(result["engines_tokens_per_s"]) == {"vllm", "hf"}
    assert "weight sync / memcpy" in done.stdout


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--modes pins generation and training apart")
def test_throughput_modes_run_the_workload_three_ways_and_compare_them(tmp_path, monkeypatch, capsys):
    """``--modes`` logic alone: which overrides each mode's run gets and the ratios (``run`` itself, a
    whole job, is the test above; async mode through Ray with pinned cores is tests/test_runtime.py's)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import throughput

    calls = {}
    rates = {"trainer.mode=sync": 100.0, "trainer.mode=async": 150.0}

    def fake_run(workload, warmup, steps, extra, compare_engines):
        pinned = any(o.startswith("cluster.rollout.cores=") for o in extra)
        mode = next(o for o in extra if o.startswith("trainer.mode="))
        calls[(mode, pinned)] = (workload, warmup, steps, list(extra), compare_engines)
        rate = rates[mode] * (0.8 if pinned and mode == "trainer.mode=sync" else 1.0)
        return {"step_s": 1.0, "tokens_per_s": rate, "phases_s": {}, "compute_s": {}}

    monkeypatch.setattr(throughput, "run", fake_run)
    out = tmp_path / "modes.json"
    assert throughput.main(["--workload", "quick", "--steps", "3", "--warmup", "1", "--modes", "--json", str(out),
                            "algorithm.kl.coef=0"]) == 0  # fmt: skip
    assert set(calls) == {("trainer.mode=sync", False), ("trainer.mode=sync", True), ("trainer.mode=async", True)}
    cores = sorted(os.sched_getaffinity(0))
    half = len(cores) // 2
    for (_, pinned), (workload, warmup, steps, extra, engines) in calls.items():
        assert (workload, warmup, steps, engines) == ("quick", 1, 3, False)
        assert extra[0] == "algorithm.kl.coef=0"  # the command line's overrides, then the mode's
        if pinned:
            assert f"cluster.rollout.cores=[{','.join(map(str, cores[:half]))}]" in extra
            for role in ("learner", "reference", "critic"):
                assert f"cluster.{role}.cores=[{','.join(map(str, cores[half:]))}]" in extra
    result = json.loads(out.read_text())
    assert set(result["modes"]) == {"sync", "sync_pinned", "async"}
    assert result["async_over_sync"] == pytest.approx(1.5)
    assert result["async_over_sync_pinned"] == pytest.approx(150.0 / 80.0)
    assert "async / sync throughput: 1.50" in capsys.readouterr().out
