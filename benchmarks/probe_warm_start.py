"""Probe a warm start of the default job's tiny model: its stop rule's probe and the held-out set, side by side.

RL with the verifier can lift held-out greedy accuracy by at most what the warm start leaves among its
samples (pass@8) over what it answers greedily; on this task the gap sits on the problems with a carry,
where the careless teacher's answer competes with the right one. This script warm-starts the tiny model
as ``distrl.models.prepare`` does (the careless teacher's pairs, ``draws`` per problem), without stopping
by default, and every ``--check-every`` steps measures greedy accuracy and pass@8 on the stop rule's probe
(``probe_problems``) and on the job's own held-out set (``load_eval_prompts``, as ``watch``), so one can
read which probe threshold stops where held-out pass@8 is. At the end it prints greedy accuracy and
pass@8 on the held-out carry and no-carry problems and how often the greedy answer to a carry problem is
the careless one.

Run from the repository root (one at a time on a 2-core machine, about 4 minutes per 2400 steps)::

    .venv/bin/python benchmarks/probe_warm_start.py --seed 1 --steps 2400
    .venv/bin/python benchmarks/probe_warm_start.py --seed 2 --steps 2400 --weight-decay 0
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from distrl.config import compose_config
from distrl.data.arithmetic import careless_sum
from distrl.models.prepare import (
    DEMOS_PER_PROBLEM,
    prepare_policy,
    probe_problems,
    supervised_target,
    teacher_pairs,
    warm_start_problems,
)
from distrl.models.warm_start import StopRule, probe, warm_start
from distrl.trainer import load_eval_prompts, load_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="trainer.seed: warm-start problems, teacher and order")
    parser.add_argument("--model-seed", type=int, help="seed of the tiny model's initial weights (default --seed)")
    parser.add_argument("--steps", type=int, default=2400, help="warm-start steps (the lr decays to 0 at the last)")
    parser.add_argument("--lr", type=float, help="model.warm_start_lr (default: the job's)")
    parser.add_argument("--weight-decay", type=float, help="model.warm_start_weight_decay (default: the job's)")
    parser.add_argument("--teacher-error", type=float, help="model.warm_start_teacher_error (default: the job's)")
    parser.add_argument("--draws", type=int, default=DEMOS_PER_PROBLEM, help="teacher demonstrations per problem")
    parser.add_argument("--batch-size", type=int, help="model.warm_start_batch_size (default: the job's)")
    parser.add_argument("--check-every", type=int, default=100)
    parser.add_argument("--stop-pass-at-k", type=float, default=2.0, help="the stop rule's threshold (2: never)")
    parser.add_argument("--probe-size", type=int, help="model.warm_start_probe_size (default: the job's)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "distrl-probe-warm-start")
    args = parser.parse_args()
    model_seed = args.seed if args.model_seed is None else args.model_seed
    base = prepare_policy(compose_config([f"model.cache_dir={args.work}", f"trainer.seed={model_seed}",
                                          "model.warm_start_steps=0"]))  # fmt: skip
    overrides = [f"trainer.seed={args.seed}"]
    if args.probe_size is not None:
        overrides.append(f"model.warm_start_probe_size={args.probe_size}")
    cfg = compose_config(overrides)
    m = cfg.model
    args.lr = m.warm_start_lr if args.lr is None else args.lr
    args.batch_size = m.warm_start_batch_size if args.batch_size is None else args.batch_size
    args.weight_decay = m.warm_start_weight_decay if args.weight_decay is None else args.weight_decay
    args.teacher_error = m.warm_start_teacher_error if args.teacher_error is None else args.teacher_error
    pairs = teacher_pairs(warm_start_problems(cfg), args.teacher_error, seed=args.seed, per_problem=args.draws)
    held = load_eval_prompts(cfg, load_prompts(cfg))
    start = time.monotonic()
    folder = warm_start(base, pairs, args.work / "warm_start", steps=args.steps, lr=args.lr, seed=args.seed,
                        batch_size=args.batch_size, weight_decay=args.weight_decay,
                        probe_pairs=[(r.prompt, supervised_target(r)) for r in probe_problems(cfg)],
                        rule=StopRule(check_every=args.check_every, stop_pass_at_k=args.stop_pass_at_k, probe_k=8),
                        watch_pairs=[(r.prompt, supervised_target(r)) for r in held])  # fmt: skip
    seconds = time.monotonic() - start
    record = json.loads((folder / "warm_start.json").read_text())
    print(f"{vars(args)} ({seconds:.0f} s, probes included; stopped at {record['stopped_at']})")
    print("step: probe greedy / pass@8 | held-out greedy / pass@8")
    for c in record["checks"]:
        print(f"{c['step']}: {c['greedy_acc']:.3f} / {c['pass@8']:.3f} | "
              f"{c['watch_greedy_acc']:.3f} / {c['watch_pass@8']:.3f}")  # fmt: skip
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    careless = {r.prompt: str(careless_sum(r.extra_info["a"], r.extra_info["b"])) for r in held}
    carry = [r for r in held if careless[r.prompt] != r.ground_truth]
    for name, group in (("carry", carry), ("no carry", [r for r in held if careless[r.prompt] == r.ground_truth])):
        greedy, pass_k = probe(model, tokenizer, [(r.prompt, r.ground_truth) for r in group], k=8, seed=1)
        print(f"held-out {name} ({len(group)}): greedy {greedy:.2f}, pass@8 {pass_k:.2f}")
    careless_greedy, _ = probe(model, tokenizer, [(r.prompt, careless[r.prompt]) for r in carry], k=1, seed=1)
    print(f"held-out carry problems whose greedy answer is the careless one: {careless_greedy:.2f}")


if __name__ == "__main__":
    main()
