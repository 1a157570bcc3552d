"""Probe a warm start of the default job's tiny model on held-out problems, split by whether they carry.

RL with the verifier can lift held-out greedy accuracy by at most what the warm start leaves among its
samples (pass@8) over what it answers greedily; on this task the gap sits on the problems with a carry,
where the careless teacher's answer competes with the right one. This script warm-starts the tiny model
as ``distrl.models.prepare`` does (the careless teacher's pairs, ``draws`` per problem), without the stop
rule, checks 256 held-out problems every 200 steps (greedy accuracy / pass@8) and prints, at the end,
greedy accuracy and pass@8 on the carry and no-carry problems and how often the greedy answer to a carry
problem is the careless one.

Run from the repository root (one at a time on a 2-core machine, about 3 minutes per 1200 steps)::

    .venv/bin/python benchmarks/probe_warm_start.py --seed 1 --steps 1200 --draws 8
    .venv/bin/python benchmarks/probe_warm_start.py --seed 2 --steps 2400 --draws 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from distrl.config import compose_config
from distrl.data.arithmetic import careless_sum, make_heldout
from distrl.models.prepare import prepare_policy, teacher_pairs, warm_start_problems
from distrl.models.warm_start import StopRule, probe, warm_start

#: Seed offset of the probe's held-out problems (any fixed value: they come from the ``heldout`` split).
PROBE_SEED_OFFSET = 99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="trainer.seed: warm-start problems, teacher and order")
    parser.add_argument("--model-seed", type=int, help="seed of the tiny model's initial weights (default --seed)")
    parser.add_argument("--steps", type=int, default=1200, help="warm-start steps (the lr decays to 0 at the last)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--teacher-error", type=float, default=0.7)
    parser.add_argument("--draws", type=int, default=8, help="teacher demonstrations per problem")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "distrl-probe-warm-start")
    args = parser.parse_args()
    model_seed = args.seed if args.model_seed is None else args.model_seed
    base = prepare_policy(compose_config([f"model.cache_dir={args.work}", f"trainer.seed={model_seed}",
                                          "model.warm_start_steps=0"]))  # fmt: skip
    cfg = compose_config([f"trainer.seed={args.seed}"])
    pairs = teacher_pairs(warm_start_problems(cfg), args.teacher_error, seed=args.seed, per_problem=args.draws)
    held = make_heldout(256, digits=cfg.data.task_digits, seed=args.seed + PROBE_SEED_OFFSET, exclude=set(),
                        split="heldout")  # fmt: skip
    start = time.monotonic()
    folder = warm_start(base, pairs, args.work / "warm_start", steps=args.steps, lr=args.lr, seed=args.seed,
                        probe_pairs=[(r.prompt, r.ground_truth) for r in held],
                        rule=StopRule(check_every=200, stop_pass_at_k=2.0, probe_k=8))  # fmt: skip
    seconds = time.monotonic() - start
    checks = json.loads((folder / "warm_start.json").read_text())["checks"]
    print(f"{vars(args)} ({seconds:.0f} s, probes included)")
    print(
        "held-out greedy / pass@8 by step:",
        " ".join(f"{c['step']}:{c['greedy_acc']:.2f}/{c['pass@8']:.2f}" for c in checks),
    )
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    careless = {r.prompt: str(careless_sum(r.extra_info["a"], r.extra_info["b"])) for r in held}
    carry = [r for r in held if careless[r.prompt] != r.ground_truth]
    for name, group in (("carry", carry), ("no carry", [r for r in held if careless[r.prompt] == r.ground_truth])):
        greedy, pass_k = probe(model, tokenizer, [(r.prompt, r.ground_truth) for r in group], k=8, seed=1)
        print(f"{name} ({len(group)}): greedy {greedy:.2f}, pass@8 {pass_k:.2f}")
    careless_greedy, _ = probe(model, tokenizer, [(r.prompt, careless[r.prompt]) for r in carry], k=1, seed=1)
    print(f"carry problems whose greedy answer is the careless one: {careless_greedy:.2f}")


if __name__ == "__main__":
    main()
