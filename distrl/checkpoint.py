"""Checkpoints: ``<output_dir>/checkpoints/step_<k>/``, a Hugging Face folder that transformers and
vLLM load as it is (weights, config, tokenizer), plus ``optimizer.pt``, ``critic/`` when a critic
runs, ``trainer_state.json`` (step, data position, KL coefficient, prompt values, restarts, the
initial model) and ``manifest.json``.

How a step is published: each writing rank (learner and critic rank 0) writes its files into
``.step_<k>.tmp/``, flushes them to disk and returns their sizes and SHA-256 (:func:`seal`); the
driver checks that every file is there with its size on *its* view of the folder (a node writing
where the driver cannot see stops the run, naming the fix), writes the state and the manifest,
flushes them and renames the folder (:func:`finish`). A crash at any point leaves either the
previous steps or a ``.tmp`` folder, which the next job on the folder removes. ``resume=auto`` takes
the newest step whose files match its manifest, sizes and hashes (:func:`verify`), and says which
steps it passed over.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import IO, Any

STATE_FILE = "trainer_state.json"
MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written where the run expects it, or does not match its manifest."""


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step}"


def staging_dir(output_dir: str | Path, step: int) -> Path:
    """Where a checkpoint is written before it is complete."""
    path = Path(output_dir) / "checkpoints" / f".step_{step}.tmp"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal(root: str | Path, folder: str | Path) -> dict[str, list]:
    """Flush every file below ``folder`` to disk; ``{path relative to root: [bytes, sha256]}``."""
    root = Path(root)
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    for path in files:
        _fsync(path)
    return {str(p.relative_to(root)): [p.stat().st_size, _sha256(p)] for p in files}


def probe(path: str | Path) -> str:
    """Write a small file at ``path`` (on the caller's node); returns the node's name."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(socket.gethostname())
    return socket.gethostname()


def not_shared_error(role: str, node: str, path: Path) -> CheckpointError:
    return CheckpointError(
        f"{role} rank 0 on node {node!r} wrote {path}, but the driver on node {socket.gethostname()!r} does not see "
        "it: checkpoints would land where trainer.resume cannot find them. Set trainer.output_dir to a folder "
        "every node shares (NFS, a cluster filesystem), at the same path on each"
    )


def finish(staging: Path, state: dict[str, Any], written: list[tuple[str, str, dict[str, list]]]) -> Path:
    """Publish a staged checkpoint. ``written``: per writing member, its role, node and :func:`seal`
    result. :class:`CheckpointError` if a file is missing or of another size in the driver's view;
    then the state, the manifest, the rename, each flushed."""
    files: dict[str, list] = {}
    for role, node, sealed in written:
        for name, (size, digest) in sealed.items():
            path = staging / name
            if not path.exists():
                raise not_shared_error(role, node, path)
            if path.stat().st_size != size:
                raise CheckpointError(f"{path} has {path.stat().st_size} bytes here, {size} where {role} wrote it")
            files[name] = [size, digest]
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
    files |= seal(staging, staging / STATE_FILE)
    (staging / MANIFEST).write_text(json.dumps({"files": files}, indent=1))
    _fsync(staging / MANIFEST)
    final = staging.parent / staging.name.removeprefix(".").removesuffix(".tmp")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    _fsync(final.parent)
    return final


def verify(path: Path, hashes: bool = True) -> str | None:
    """What is wrong with the checkpoint at ``path`` (a file missing, of another size or, with
    ``hashes``, other content than its manifest lists), or None when it matches."""
    if not (path / MANIFEST).exists():
        return f"no {MANIFEST} (not a complete distrl checkpoint)"
    for name, (size, digest) in json.loads((path / MANIFEST).read_text())["files"].items():
        file = path / name
        if not file.exists():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {size}"
        if hashes and _sha256(file) != digest:
            return f"{name} differs from what was written (SHA-256)"
    return None


def steps(output_dir: str | Path) -> list[Path]:
    """The published checkpoints, newest first."""
    found = (Path(output_dir) / "checkpoints").glob("step_*")
    return sorted(found, key=lambda p: int(p.name.removeprefix("step_")), reverse=True)


def latest(output_dir: str | Path, log=print) -> Path | None:
    """The newest checkpoint that :func:`verify` passes, or None; each newer one passed over is
    logged with its problem."""
    for path in steps(output_dir):
        problem = verify(path)
        if problem is None:
            return path
        log(f"distrl: trainer.resume=auto passes over {path}: {problem}")
    return None


def resolve(resume: str, output_dir: str | Path, log=print) -> Path | None:
    """The checkpoint ``trainer.resume`` asks for: ``none``, ``auto`` (the newest verified one, if
    any) or a folder, which must verify."""
    if resume == "none":
        return None
    if resume == "auto":
        found = latest(output_dir, log)
        if found is not None:
            log(f"distrl: resuming from {found} (files verified against its manifest)")
        return found
    path = Path(resume)
    if not (path / STATE_FILE).exists():
        raise FileNotFoundError(
            f"trainer.resume={resume!r} is not a distrl checkpoint (no {STATE_FILE}); use auto, none, "
            f"or a folder such as {checkpoint_dir(output_dir, 10)}"
        )
    problem = verify(path)
    if problem is not None:
        raise CheckpointError(
            f"trainer.resume={resume!r} is damaged: {problem}. Use trainer.resume=auto (the newest sound "
            "checkpoint) or an earlier step's folder"
        )
    return path


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_FILE).read_text())


def prune(output_dir: str | Path, keep: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (None: keep all); the deleted folders."""
    old = steps(output_dir)[keep:] if keep else []
    for path in old:
        shutil.rmtree(path)
    return old


LOCK_FILE = ".distrl.lock"


class OutputDirError(RuntimeError):
    """``trainer.output_dir`` is in use by a live job, or holds a run that would be overwritten."""


def claim_output_dir(output_dir: str | Path, *, resume: str, overwrite: bool) -> IO[str]:
    """Take ``output_dir`` for this job: an exclusive lock held while the returned file stays open
    (the OS drops it when the process ends, however it ends; ``flock`` is per host, so two jobs on
    different nodes sharing a network filesystem are not caught). With ``resume=none`` a folder
    holding an earlier run's checkpoints or metrics is refused unless ``overwrite``, which then
    removes them, so ``resume=auto`` can never pick the older run's step afterwards. Half-written
    checkpoints (``.tmp`` folders) of a job that died while saving are removed."""
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
    for leftover in (folder / "checkpoints").glob(".step_*.tmp"):  # a save that a dead job never finished
        shutil.rmtree(leftover, ignore_errors=True)
    return lock
