"""Checkpoints: ``<output_dir>/checkpoints/step_<k>/``, a Hugging Face folder that transformers and
vLLM load as it is (weights, config, tokenizer), plus ``optimizer.pt``, ``critic/`` when a critic
runs, and ``trainer_state.json`` (step, data position, KL coefficient, PVPO values, the initial
model). A checkpoint is written under a temporary name and renamed when complete, so a crash
never leaves a half checkpoint that ``resume=auto`` would pick.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step}"


def staging_dir(output_dir: str | Path, step: int) -> Path:
    """Where a checkpoint is written before it is complete."""
    path = Path(output_dir) / "checkpoints" / f".step_{step}.tmp"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def finish(staging: Path, state: dict[str, Any]) -> Path:
    """Write the trainer state and move the staged folder into place."""
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
    final = staging.parent / staging.name.removeprefix(".").removesuffix(".tmp")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


def latest(output_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = [p for p in (Path(output_dir) / "checkpoints").glob("step_*") if (p / STATE_FILE).exists()]
    return max(found, key=lambda p: int(p.name.removeprefix("step_")), default=None)


def resolve(resume: str, output_dir: str | Path) -> Path | None:
    """The checkpoint ``trainer.resume`` asks for: ``none``, ``auto`` (latest, if any) or a folder."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest(output_dir)
    path = Path(resume)
    if not (path / STATE_FILE).exists():
        raise FileNotFoundError(
            f"trainer.resume={resume!r} is not a distrl checkpoint (no {STATE_FILE}); use auto, none, "
            f"or a folder such as {checkpoint_dir(output_dir, 10)}"
        )
    return path


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_FILE).read_text())
