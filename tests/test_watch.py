"""Runs you can watch: start-up stages, s/step and ETA, samples, the end summary, and distrl-plot."""

import json
import subprocess
import sys

from conftest import train_inline

from distrl.metrics import format_duration


def test_durations_read_as_hours_minutes_seconds():
    assert [format_duration(s) for s in (7.4, 125, 3725)] == ["7s", "2m05s", "1h02m"]


def test_a_short_run_shows_its_stages_pace_samples_and_summary_and_plots(tiny_config, tmp_path, capsys):
    cfg = tiny_config("cluster.backend=inline", "rollout=hf", "trainer.total_steps=3", "trainer.log_samples_every=2",
                      "trainer.loggers=[console,jsonl]", "trainer.eval_before_train=true")  # fmt: skip
    train_inline(cfg)
    out = capsys.readouterr().out
    for stage in ("distrl: data: 32 training prompts, 4 held-out", "distrl: policy ready:", "distrl: starting roles",
                  "distrl: roles ready; each engine may use"):  # fmt: skip
        assert stage in out, stage
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["0/3", "1/3", "2/3", "3/3"]
    assert all(" s/step  eta " in line for line in steps[1:]) and "eval " in steps[-1]
    assert "samples at step 2:" in out and "    response: " in out and "samples at step 1:" not in out
    run = tmp_path / "run"
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and {s["step"] for s in samples} == {2}
    assert {"prompt", "response", "ground_truth", "score"} <= samples[0].keys()
    assert "best held-out greedy accuracy:" in out and f"checkpoint: {run / 'checkpoints' / 'step_3'}" in out
    plotted = subprocess.run([sys.executable, "-m", "distrl.plot", str(run)], capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert plotted.returncode == 0, plotted.stderr
    pngs = sorted(p.name for p in (run / "plots").glob("*.png"))
    assert "reward__mean.png" in pngs and "eval__greedy_acc.png" in pngs
    assert all((run / "plots" / p).stat().st_size > 1000 for p in pngs)
    missing = subprocess.run([sys.executable, "-m", "distrl.plot", str(tmp_path / "nowhere")], capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert missing.returncode == 2 and "metrics.jsonl" in missing.stderr
