"""The README's "your own task" example runs as written (with the test suite's tiny-model overrides)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY

pytestmark = [pytest.mark.subprocess]


def readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_jsonl_and_reward_function_train_with_overrides_alone(tmp_path: Path, model_cache: Path):
    script = readme_block("## Your own task").replace(".venv/bin/python", sys.executable)
    extra = [o for o in TINY if not o.startswith(("data.train_batch_size", "trainer.total_steps"))]
    script = script.rstrip() + " " + " ".join([*extra, f"model.cache_dir={model_cache}"]) + "\n"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "runs" / "default" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    samples = 3 * 4  # the README's 3 prompts × TINY's rollout.n=4, scored 0 or 1 each
    for row in rows:
        assert row["reward/errors"] == 0
        assert (row["reward/mean"] * samples) == pytest.approx(round(row["reward/mean"] * samples))
