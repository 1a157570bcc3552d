"""Checkpoints: ``<output_dir>/checkpoints/step_<k>/``, a Hugging Face folder that transformers and
vLLM load as it is (weights, config, tokenizer), plus ``optimizer.pt``, ``critic/`` when a critic
runs, and ``trainer_state.json`` (step, data position, KL coefficient, PVPO values, the initial
model). A checkpoint is written under a temporary name and renamed when complete, so a crash
never leaves a half checkpoint that ``resume=auto`` would pick.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path
from typing import IO, Any

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


LOCK_FILE = ".distrl.lock"


class OutputDirError(RuntimeError):
    """``trainer.output_dir`` is in use by a live job, or holds a run that would be overwritten."""


def claim_output_dir(output_dir: str | Path, *, resume: str, overwrite: bool) -> IO[str]:
    """Take ``output_dir`` for this job: an exclusive lock held while the returned file stays open
    (the OS drops it when the process ends, however it ends; ``flock`` is per host, so two jobs on
    different nodes sharing a network filesystem are not caught). With ``resume=none`` a folder
    holding an earlier run's checkpoints or metrics is refused unless ``overwrite``, which then
    removes them, so ``resume=auto`` can never pick the older run's step afterwards."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lock = (folder / LOCK_FILE).open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        lock.close()
        raise OutputDirError(
            f"another distrl job is writing to trainer.output_dir={str(folder)!r}; two jobs there would corrupt "
            "each other's metrics and checkpoints. Wait for it, stop it, or use another trainer.output_dir"
        ) from err
    earlier = [p for p in (folder / "checkpoints", folder / "metrics.jsonl") if p.exists()]
    if resume == "none" and earlier:
        if not overwrite:
            lock.close()
            raise OutputDirError(
                f"trainer.output_dir={str(folder)!r} holds an earlier run ({', '.join(p.name for p in earlier)}); "
                "trainer.resume=auto continues it, trainer.overwrite=true replaces it, or use another "
                "trainer.output_dir"
            )
        for path in earlier:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return lock
