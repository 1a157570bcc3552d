"""benchmarks/gpu_check.py runs as it will on a GPU machine's image: no Ray, no vLLM, no pyarrow,
no wandb (imports of them fail here), every role in one process (on the CPU in this smoke test)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What the GPU image lacks: importing any of them raises ImportError in the check's process.
ABSENT = ("ray", "vllm", "pyarrow", "wandb", "tensorboard")


@pytest.mark.subprocess
def test_gpu_check_runs_without_ray_or_vllm_and_reports_every_figure(tmp_path):
    out = tmp_path / "gpu_check.json"
    args = ["--device", "cpu", "--tiny", "--steps", "2", "--prompts", "4", "--samples", "4",
            "--max-new-tokens", "8", "--json", str(out)]  # fmt: skip
    runner = (
        "import runpy, sys\n"
        f"sys.modules.update(dict.fromkeys({ABSENT!r}))\n"
        f"sys.argv = ['gpu_check.py', *{args!r}]\n"
        "runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", runner], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["device"] == "cpu" and [e["engine"] for e in results["engines"]] == ["hf"]
    hf = results["engines"][0]
    assert hf["changed_fraction"] > 0.9  # float32 masters: a 1e-6 AdamW step moves nearly every weight
    assert hf["max_logprob_diff"] < 0.05  # the engine holds the learner's weights after the sync
    assert {"generation", "logprobs", "update", "weight_sync"} <= set(hf["phase_s"])
    assert hf["generated_tokens_per_s"] > 0 and hf["weight_sync_s"] > 0 and hf["step_s"] > 0
    assert len(hf["reward_mean"]) == 2
