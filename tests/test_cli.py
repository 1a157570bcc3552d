"""The packaged command line: ``pip install .`` then ``distrl-train`` from anywhere, ``--help``, and
multirun folders."""

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT, TINY

from distrl.cli_help import first_sentence, help_text
from distrl.config import compose_config

pytestmark = [pytest.mark.subprocess]


def test_help_lists_the_groups_and_every_key_with_its_doc():
    text = help_text()
    assert "algorithm: clip_cov, dapo," in text and "grpo*" in text and "cluster: gpu," in text
    assert "  data.train_files=[]  JSONL or Parquet files in verl's layout" in text
    assert "  trainer.total_steps=150" in text and "  model.warm_start_teacher_error=0.7  Fraction of" in text
    doc = "GRPO: divide by the group std (Dr. GRPO: no). More."
    assert first_sentence(doc) == "GRPO: divide by the group std (Dr. GRPO: no)."
    shown = subprocess.run([sys.executable, "-m", "distrl.train", "-h"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout.strip() == text.strip()


def test_pip_install_then_distrl_train_from_another_directory(tmp_path: Path):
    """A non-editable install of this source tree into a fresh venv finds its config from any directory.

    The venv reaches this environment's dependencies through a ``.pth`` file (nothing is downloaded);
    distrl itself is built and installed from a copy of the tree, so the checkout is not on its path."""
    venv, build, elsewhere = tmp_path / "venv", tmp_path / "src", tmp_path / "elsewhere"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([python, "-c", purelib], capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # the venv's bundled setuptools predates the built-in bdist_wheel: build with this environment's
    subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=True, timeout=300)
    build.mkdir()
    for name in ("distrl", "pyproject.toml", "README.md"):
        subprocess.run(["cp", "-r", str(ROOT / name), str(build)], check=True)
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(build)]
    install = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed copy alone
    command = [str(venv / "bin" / "distrl-train"), "--cfg", "job", "algorithm=gspo"]
    job = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "policy_loss: gspo" in job.stdout
    where = subprocess.run([python, "-c", "import distrl; print(distrl.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert where.startswith(str(site))  # the installed copy, not the checkout


def test_multirun_writes_one_folder_per_run(tmp_path: Path, model_cache: Path):
    command = [sys.executable, "-m", "distrl.train", "-m", *TINY, f"model.cache_dir={model_cache}",
               "cluster.backend=inline", "rollout=hf", "trainer.total_steps=1", "trainer.seed=0,1"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (sweep,) = (tmp_path / "runs" / "multirun").iterdir()
    for number in ("0", "1"):
        rows = [json.loads(line) for line in (sweep / number / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1]
    assert not (tmp_path / "runs" / "default").exists()


def test_the_readme_translation_of_a_verl_command_is_a_valid_distrl_config():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Coming from verl or TRL") :]
    block = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    command = block[block.index("distrl-train") :].replace("\\\n", " ").replace("$HOME", "/home/user")
    overrides = shlex.split(command)[1:]
    cfg = compose_config(overrides)  # validated
    assert cfg.data.train_files == ["/home/user/data/gsm8k/train.parquet"] and cfg.rollout.n == 5
    assert cfg.learner.mini_batches == 4 and cfg.algorithm.kl.coef == 0.001 and cfg.trainer.total_steps == 105
