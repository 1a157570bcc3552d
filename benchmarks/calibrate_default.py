"""Calibrate the default job: run settings x seeds and record held-out accuracy before and after RL.

Each run is ``python -m distrl.train trainer.seed=S trainer.output_dir=<work>/<setting>_s<S>
model.cache_dir=<work>/cache <setting's overrides>`` (``--backend inline``: every role in one process, for
speed while exploring; ``--backend ray``: the real default job). One run at a time (a 2-core machine).
For each run it records the warm start's stop step and its probe greedy accuracy and pass@8 (the
warm-started folder's ``warm_start.json``), ``eval/greedy_acc``, ``eval/pass@1`` and ``eval/pass@k`` on the
held-out problems at step 0 and after the last step (``metrics.jsonl``), and the wall time of the whole
command (model build and warm start included when the cache does not hold them). A run whose folder
already holds a finished result (``result.json``) is read back, not run again.

Run from the repository root::

    .venv/bin/python benchmarks/calibrate_default.py --settings default --backend ray --fresh-cache
    .venv/bin/python benchmarks/calibrate_default.py --settings clean-teacher problems256 --seeds 0 --backend inline

It writes ``<work>/<setting>_s<seed>/{train.log,result.json}`` and merges every result into
``benchmarks/results/default-job-calibration/calibration.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks/results/default-job-calibration/calibration.json"

#: The earlier default warm start (the decay-0.1 calibration of results.md).
DECAY_01 = ["model.warm_start_weight_decay=0.1", "model.warm_start_stop_pass_at_k=0.875"]

#: The settings tried, as overrides of the defaults (a careless teacher, error 0.7, drawn 8 times per
#: problem; warm start at lr 1e-3 with weight decay 1.0, 64 pairs per step, at most 2400 steps, stopped at
#: the first pass@8 >= 0.8 on 128 probe-split problems, checked every 100; 4096 RL problems, 32 per step,
#: 150 steps).
SETTINGS: dict[str, list[str]] = {
    "default": [],
    "clean-teacher": ["model.warm_start_teacher_error=0"],
    "problems256": ["data.num_problems=256"],
    "no-stop-rule": ["model.warm_start_check_every=0"],
    "no-weight-decay": ["model.warm_start_weight_decay=0"],
    "decay0.1": [*DECAY_01, "trainer.total_steps=200"],
    "decay0.1-batch32": [*DECAY_01, "model.warm_start_batch_size=32", "model.warm_start_steps=2000"],
    "kl0": ["algorithm.kl.coef=0"],
    "lr1e-3": ["learner.lr=1e-3"],
    "lr5e-4": ["learner.lr=5e-4"],
    "batch16": ["data.train_batch_size=16"],
    "dynamic-sampling": ["algorithm.dynamic_sampling=true"],
    "n16": ["rollout.n=16"],
}

STOP_LINE = re.compile(r"warm start stopped at step (\d+)/(\d+): probe greedy accuracy ([\d.]+), pass@(\d+) ([\d.]+)")


def evals(metrics: Path) -> dict[int, dict[str, float]]:
    """``eval/*`` metrics by step from a run's ``metrics.jsonl``."""
    out: dict[int, dict[str, float]] = {}
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        found = {k: v for k, v in row.items() if k.startswith("eval/") and isinstance(v, int | float)}
        if found:
            out.setdefault(int(row["step"]), {}).update(found)
    return out


def run_one(name: str, overrides: list[str], seed: int, work: Path, backend: str, fresh_cache: bool) -> dict:
    """Run (or read back) one setting at one seed; the result row."""
    folder = work / f"{name}_s{seed}"
    if (folder / "result.json").exists():
        return json.loads((folder / "result.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    cache = work / (f"cache-{name}-s{seed}" if fresh_cache else "cache")
    command = [sys.executable, "-m", "distrl.train", f"trainer.seed={seed}", f"trainer.output_dir={folder / 'run'}"]
    command += [f"model.cache_dir={cache}", "trainer.overwrite=true", *overrides]
    if backend == "inline":
        command.append("cluster.backend=inline")
    start = time.monotonic()
    with (folder / "train.log").open("w") as log:
        rc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    wall = time.monotonic() - start
    text = (folder / "train.log").read_text()
    stop = STOP_LINE.search(text)
    by_step = evals(folder / "run" / "metrics.jsonl") if rc == 0 else {}
    first, last = (by_step[min(by_step)], by_step[max(by_step)]) if by_step else ({}, {})
    row = {
        "setting": name,
        "overrides": overrides,
        "backend": backend,
        "seed": seed,
        "returncode": rc,
        "wall_s": round(wall, 1),
        "empty_cache": fresh_cache,
        "warm_start_stopped_at": int(stop.group(1)) if stop else None,
        "warm_start_probe_greedy_acc": float(stop.group(3)) if stop else None,
        "warm_start_probe_pass@8": float(stop.group(5)) if stop else None,
        "step0_greedy_acc": first.get("eval/greedy_acc"),
        "final_greedy_acc": last.get("eval/greedy_acc"),
        "step0_pass@8": first.get("eval/pass@k"),
        "final_pass@8": last.get("eval/pass@k"),
        "step0_pass@1": first.get("eval/pass@1"),
        "final_pass@1": last.get("eval/pass@1"),
        "final_step": max(by_step) if by_step else None,
    }
    (folder / "result.json").write_text(json.dumps(row, indent=1))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["default"], choices=sorted(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--backend", choices=["inline", "ray"], default="inline")
    parser.add_argument("--work", type=Path, default=Path("/tmp/distrl-calibration"), help="run folders and caches")
    parser.add_argument("--fresh-cache", action="store_true", help="an empty model cache per run (timing)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else []
    for name in args.settings:
        for seed in args.seeds:
            row = run_one(name, SETTINGS[name], seed, args.work, args.backend, args.fresh_cache)
            results = [
                r for r in results if (r["setting"], r["seed"], r["backend"]) != (row["setting"], seed, row["backend"])
            ]
            results.append(row)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            print(json.dumps(row))


if __name__ == "__main__":
    main()
