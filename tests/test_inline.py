"""The inline backend: the whole job in this process, no Ray; a breakpoint in a role stops here."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import TINY

from distrl.config import ConfigError
from distrl.metrics import read_metrics
from distrl.trainer import Trainer, TrainingError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.vllm
def test_inline_trains_in_this_process_and_a_breakpoint_in_a_role_stops_here(tiny_config, monkeypatch):
    import ray  # a core dependency: installed, and must stay unstarted

    assert not ray.is_initialized()
    calls = []
    monkeypatch.setenv("PYTHONBREAKPOINT", "")  # honour sys.breakpointhook even if the user's env disables it
    monkeypatch.setattr(sys, "breakpointhook", lambda *a, **k: calls.append((os.getpid(), threading.get_ident())))
    cfg = tiny_config(
        "cluster.backend=inline",
        f"reward.function={ROOT / 'tests/fixtures/coin_reward.py'}:calls_breakpoint",
        "data.val_size=0",  # the training samples' calls only
    )
    trainer = Trainer(cfg)
    try:
        trainer.fit()
    finally:
        trainer.shutdown()
    assert not ray.is_initialized()
    samples = cfg.trainer.total_steps * cfg.data.train_batch_size * cfg.rollout.n
    assert calls == [(os.getpid(), threading.get_ident())] * samples  # every scoring call ran in this thread
    metrics = read_metrics(Path(cfg.trainer.output_dir) / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert metrics[-1]["rollout/policy_version"] == 1.0
    assert (Path(cfg.trainer.output_dir) / "checkpoints" / "step_2" / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.mode=async"], r"trainer.mode=async .* cluster.backend=inline .* use trainer.mode=sync"),
        (["cluster.learners=2"], r"one learner rank, one critic rank and one rollout engine .* cluster.learners=2"),
        (["cluster.critics=2"], r"one critic rank .* cluster.critics=2"),
        (["cluster.learner.cores=[0]"], r"cluster.learner.cores=\[0\] pins a Ray actor"),
    ],
)
def test_inline_refuses_what_needs_several_processes(overrides, message, tiny_config):
    with pytest.raises(ConfigError, match=message):
        tiny_config("cluster.backend=inline", *overrides)


@pytest.mark.subprocess
def test_inline_with_the_hf_engine_runs_where_neither_ray_nor_vllm_is_installed(model_cache, tmp_path):
    out = tmp_path / "run"
    overrides = [*TINY, f"model.cache_dir={model_cache}", f"trainer.output_dir={out}",
                 "cluster.backend=inline", "rollout=hf", "trainer.total_steps=1"]  # fmt: skip
    script = f"""
import sys
sys.modules["ray"] = None  # `import ray` now raises ImportError, as on a machine without Ray
sys.modules["vllm"] = None
from distrl.config import compose_config
from distrl.trainer import Trainer, TrainingError
trainer = Trainer(compose_config({overrides!r}))
try:
    trainer.fit()
finally:
    trainer.shutdown()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1]
    assert metrics[0]["rollout/logprob_diff"] < 1e-3  # HF engine and learner: the same float32 weights


def recording(calls: list, name: str, method):
    """``method``, appending ``(name, its wake tags)`` to ``calls`` at each call."""

    def spy(*args, **kwargs):
        calls.append((name, args[0] if name == "wake" else None))
        return method(*args, **kwargs)

    return spy


@pytest.mark.vllm
def test_colocated_engines_sleep_after_generating_and_wake_around_the_weight_load(tiny_config):
    """cluster.colocate: the role's calls in order (on CPU the engine skips the memory moves themselves)."""
    cfg = tiny_config("cluster.backend=inline", "cluster.colocate=true", "trainer.total_steps=2",
                      "data.val_size=0")  # fmt: skip
    trainer = Trainer(cfg)
    calls: list = []
    try:
        engine = trainer.rollout.members[0].engine
        for name in ("generate", "sleep", "wake", "load_weights"):
            setattr(engine, name, recording(calls, name, getattr(engine, name)))
        trainer.fit()
    finally:
        trainer.shutdown()
    one_step = [("generate", None), ("sleep", None), ("wake", ["weights"]), ("load_weights", None),
                ("wake", ["kv_cache"])]  # fmt: skip
    assert calls == one_step * 2


@pytest.mark.vllm
def test_an_engine_that_missed_the_weight_sync_stops_the_run_at_the_check(tiny_config):
    spread = f"reward.function={ROOT / 'tests/fixtures/coin_reward.py'}:odd_length"  # gradients every step
    cfg = tiny_config("cluster.backend=inline", "cluster.sync_check_every=1", "learner.lr=0.05", spread,
                      "trainer.total_steps=3", "algorithm.kl.coef=0")  # fmt: skip
    trainer = Trainer(cfg)
    try:
        step = trainer.step(0)
        assert step["weight_sync/max_logprob_diff"] < 0.05  # a sound sync: bf16 rounding only
        trainer.rollout.members[0].engine.load_weights = lambda weights: None  # the engine keeps stale weights
        with pytest.raises(TrainingError, match=r"rollout engine 0's log-probs differ .* does not hold the learner's"):
            trainer.step(1)
    finally:
        trainer.shutdown()
