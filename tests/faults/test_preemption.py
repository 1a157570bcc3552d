"""SIGTERM to the driver mid-run (a preemption): the step in flight finishes, a checkpoint is
written, the process exits, and the run resumes from there."""

import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TINY

from distrl.config import compose_config
from distrl.trainer import Trainer


@pytest.mark.subprocess
def test_sigterm_saves_after_the_step_in_flight_and_the_run_resumes_there(model_cache, tmp_path):
    out = tmp_path / "run"
    overrides = [*TINY, f"model.cache_dir={model_cache}", f"trainer.output_dir={out}", "cluster.backend=inline",
                 "rollout=hf", "trainer.total_steps=200", "trainer.loggers=[jsonl]"]  # fmt: skip
    job = subprocess.Popen([sys.executable, "-m", "distrl.train", *overrides], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 1, stderr[-2000:]
    done = len(metrics.read_text().splitlines())
    assert f"stopped by SIGTERM after step {done}; saved {out / 'checkpoints' / f'step_{done}'}" in stderr
    assert 1 <= done < 200
    state = json.loads((out / "checkpoints" / f"step_{done}" / "trainer_state.json").read_text())
    assert state["step"] == done

    resumed = Trainer(compose_config([*overrides[:-2], f"trainer.total_steps={done + 1}", "trainer.resume=auto"]))
    try:
        assert resumed.start_step == done
        resumed.fit()
    finally:
        resumed.shutdown()
    assert len(metrics.read_text().splitlines()) == done + 1
