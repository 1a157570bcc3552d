"""Throughput benchmark: a fixed, named workload through the real runtime, timed by phase.

    .venv/bin/python benchmarks/throughput.py --workload small --json throughput.json

Reports, as medians over the measured steps after ``--warmup`` steps:

- ``tokens_per_s``: prompt + response tokens of the step's batch per second of the whole step;
- ``generated_tokens_per_s``: response tokens per second of the generation phase;
- ``trained_tokens_per_s``: prompt + response tokens per second of the update phase;
- the step time by controller phase (generation, reward, logprobs = old log-probs ∥ reference ∥
  values, advantages, update, weight_sync) and the compute time by phase measured inside the
  actors (``compute/<phase>_s``: generation, reward, old_logprob, reference, values, advantages,
  update, weight_gather, weight_load);
- ``overhead_frac``: orchestration overhead over step time, the overhead being the step's wall time
  minus, stage by stage, the busiest actor's compute (``timing/overhead_s``): what scheduling,
  object transfers, (de)serialization and the controller cost;
- ``weight_sync_over_memcpy``: the whole weight-sync phase (gather on the learner, object store,
  load into vLLM) against one in-memory copy of the same bytes (the weights in
  ``rollout.sync_dtype``), and ``weight_sync_transfer_over_memcpy``: the part of it outside the two
  actors' compute, i.e. the object-store transfer alone;
- vLLM against Hugging Face ``generate`` on the same prompts, samples and lengths (tokens/s).

``--modes`` instead runs the workload three times and compares throughput: ``sync`` (every role
uses all cores in its turn, the local default), ``sync_pinned`` and ``async`` (the rollout engine
pinned to the first half of the cores, the learner, reference and critic to the other half), and
reports ``async_over_sync`` and ``async_over_sync_pinned``. The ``balanced`` workload is sized so
that generation and training take about the same time.

The model is the tiny builder's architecture at the workload's size, untrained (no warm start),
and every response runs to ``max_new_tokens`` (``rollout.ignore_eos=true``): each step does the
same work, so runs compare by step time as well as by tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from distrl.config import compose_config
from distrl.models.flat import FlatWeights
from distrl.models.prepare import prepare_policy
from distrl.roles.rollout import ENGINES, EngineSettings
from distrl.trainer import Trainer

PHASES = ("generation_wait", "generation", "reward", "logprobs", "advantages", "update", "weight_sync")
COMPUTE = (
    "generation",
    "reward",
    "old_logprob",
    "reference",
    "values",
    "advantages",
    "update",
    "critic_update",
    "weight_gather",
    "weight_load",
)


@dataclass(frozen=True)
class Workload:
    """Everything that determines the work of one step."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    prompts: int
    samples: int
    max_new_tokens: int
    epochs: int = 1
    micro_batch_tokens: int = 4096
    algorithm: tuple[str, ...] = ()
    """Extra ``algorithm.*`` overrides (the default is GRPO with its KL term)."""

    def overrides(self) -> list[str]:
        return [
            f"model.hidden_size={self.hidden_size}",
            f"model.num_layers={self.num_layers}",
            f"model.num_heads={self.num_heads}",
            f"model.intermediate_size={self.intermediate_size}",
            "model.warm_start_steps=0",
            "rollout.ignore_eos=true",
            f"data.train_batch_size={self.prompts}",
            f"rollout.n={self.samples}",
            f"rollout.max_new_tokens={self.max_new_tokens}",
            f"learner.epochs={self.epochs}",
            f"learner.micro_batch_tokens={self.micro_batch_tokens}",
            *self.algorithm,
        ]


WORKLOADS = {
    "quick": Workload(64, 2, 2, 128, prompts=2, samples=2, max_new_tokens=8),
    "tiny": Workload(256, 4, 4, 1024, prompts=16, samples=8, max_new_tokens=16),
    "small": Workload(512, 8, 8, 2048, prompts=8, samples=8, max_new_tokens=128),
    "balanced": Workload(256, 4, 4, 1024, prompts=4, samples=8, max_new_tokens=128, algorithm=("algorithm.kl.coef=0",)),
}


def make_config(workload: Workload, out: Path, extra: list[str]):
    return compose_config(
        [
            *workload.overrides(),
            f"trainer.output_dir={out}",
            f"model.cache_dir={out / 'models'}",
            "trainer.loggers=[jsonl]",
            "data.val_size=0",  # throughput of training steps: no held-out evaluation
            *extra,
        ]
    )


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r.get(key, 0.0) for r in rows)


def measure_steps(trainer: Trainer, warmup: int, steps: int) -> list[dict[str, float]]:
    rows = []
    for step in range(warmup + steps):
        metrics = trainer.step(step)
        metrics["tokens/step"] = metrics["throughput/tokens_per_s"] * metrics["timing/step_s"]
        metrics["tokens/generated"] = metrics["throughput/generated_tokens_per_s"] * metrics["timing/generation_s"]
        if step >= warmup:
            rows.append(metrics)
    return rows


def memcpy_seconds(weights: FlatWeights, repeats: int = 5) -> float:
    """Median time of one in-memory copy of the weights' bytes."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        copy = weights.buffer.copy()
        times.append(time.perf_counter() - start)
        del copy
    return statistics.median(times)


def engine_tokens_per_s(engine_name: str, model_path: str, cfg, prompts: list[list[int]]) -> float:
    """Generated tokens/s of one engine, in this process, after one warm-up call."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    engine = ENGINES[engine_name](model_path, cfg.rollout, EngineSettings(max_model_len=512, seed=0))
    engine.generate(prompts[:1], n=cfg.rollout.n, seed=0)  # the workload's rollout.*: every response runs to the end
    start = time.perf_counter()
    out = engine.generate(prompts, n=cfg.rollout.n, seed=1)
    elapsed = time.perf_counter() - start
    return sum(len(g.token_ids) for group in out for g in group) / elapsed


def run(workload_name: str, warmup: int, steps: int, extra: list[str], compare_engines: bool) -> dict:
    workload = WORKLOADS[workload_name]
    out = Path(tempfile.mkdtemp(prefix=f"distrl-throughput-{workload_name}-"))
    cfg = make_config(workload, out, extra)
    model_path = prepare_policy(cfg)
    trainer = Trainer(cfg)
    try:
        rows = measure_steps(trainer, warmup, steps)
        weights = trainer.get(trainer.learner.call_rank(0, "state_dict", cfg.rollout.sync_dtype), "learner")
        params = sum(int(np.prod(shape)) for name, shape in zip(weights.names, weights.shapes, strict=True)
                     if name != "lm_head.weight")  # fmt: skip
        copy_s = memcpy_seconds(weights)
        sync_bytes = weights.nbytes
        del weights
    finally:
        trainer.metrics.close()
        trainer.shutdown()
    step_s = median(rows, "timing/step_s")
    phases = {p: median(rows, f"timing/{p}_s") for p in PHASES}
    compute = {p: median(rows, f"compute/{p}_s") for p in COMPUTE if any(f"compute/{p}_s" in r for r in rows)}
    overhead = median(rows, "timing/overhead_s")
    transfer = statistics.median(
        r["timing/weight_sync_s"] - r.get("compute/weight_gather_s", 0.0) - r.get("compute/weight_load_s", 0.0)
        for r in rows
    )
    result = {
        "workload": workload_name,
        "settings": asdict(workload),
        "overrides": extra,
        "parameters": params,
        "steps_measured": len(rows),
        "step_s": step_s,
        "tokens_per_s": median(rows, "tokens/step") / step_s,
        "generated_tokens_per_s": median(rows, "throughput/generated_tokens_per_s"),
        "trained_tokens_per_s": median(rows, "tokens/step") / phases["update"],
        "phases_s": phases,
        "compute_s": compute,
        "overhead_s": overhead,
        "overhead_frac": overhead / step_s,
        "weight_buffer_bytes": sync_bytes,
        "weight_sync_bytes": median(rows, "weight_sync/bytes"),
        "weight_sync_s": phases["weight_sync"],
        "weight_sync_transfer_s": transfer,
        "memcpy_s": copy_s,
        "weight_sync_over_memcpy": phases["weight_sync"] / copy_s,
        "weight_sync_transfer_over_memcpy": transfer / copy_s,
    }
    if compare_engines:
        tokenizer_prompts = [[4 + (i % 10), 75, 4 + (i % 7), 83] for i in range(workload.prompts)]
        result["engines_tokens_per_s"] = {
            name: engine_tokens_per_s(name, model_path, cfg, tokenizer_prompts) for name in ("vllm", "hf")
        }
    return result


def pinned_overrides() -> list[str]:
    """The rollout engine on the first half of this machine's cores, the training roles on the rest."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("--modes needs at least 2 cores to pin generation and training apart")
    half = len(cores) // 2
    rollout, training = cores[:half], cores[half:]
    return [f"cluster.rollout.cores=[{','.join(map(str, rollout))}]"] + [
        f"cluster.{role}.cores=[{','.join(map(str, training))}]" for role in ("learner", "reference", "critic")
    ]


def compare_modes(workload_name: str, warmup: int, steps: int, extra: list[str]) -> dict:
    """The workload in ``sync``, ``sync_pinned`` and ``async`` mode (see the module docstring)."""
    pinned = pinned_overrides()
    modes = {
        "sync": ["trainer.mode=sync"],
        "sync_pinned": ["trainer.mode=sync", *pinned],
        "async": ["trainer.mode=async", *pinned],
    }
    results = {name: run(workload_name, warmup, steps, [*extra, *mode], False) for name, mode in modes.items()}
    rate = {name: r["tokens_per_s"] for name, r in results.items()}
    return {
        "workload": workload_name,
        "modes": results,
        "tokens_per_s": rate,
        "async_over_sync": rate["async"] / rate["sync"],
        "async_over_sync_pinned": rate["async"] / rate["sync_pinned"],
    }


#: Weight-sync paths compared by ``--syncs``, at a real model's learning rate (1e-6), where most bf16
#: weights do not change in a step, so that the delta has something to leave out.
SYNCS = {
    "object_store": ["cluster.weight_sync=object_store"],
    "collective": ["cluster.weight_sync=collective"],
    "object_store_delta": ["cluster.weight_sync=object_store", "rollout.sync_delta=true"],
    "collective_delta": ["cluster.weight_sync=collective", "rollout.sync_delta=true"],
    "ipc": ["cluster.weight_sync=ipc"],
}


def compare_syncs(workload_name: str, warmup: int, steps: int, extra: list[str]) -> dict:
    """The workload once per weight-sync path: bytes and seconds per sync, side by side."""
    results = {name: run(workload_name, warmup, steps, ["learner.lr=1e-6", *extra, *sync], False)
               for name, sync in SYNCS.items()}  # fmt: skip
    keys = ("weight_sync_bytes", "weight_sync_s", "weight_sync_transfer_s")
    return {
        "workload": workload_name,
        "weight_buffer_bytes": results["object_store"]["weight_buffer_bytes"],
        "syncs": {name: {k: r[k] for k in keys} | {"compute_s": r["compute_s"]} for name, r in results.items()},
    }


def print_syncs(result: dict) -> None:
    print(f"\nworkload {result['workload']}: weight sync paths ({result['weight_buffer_bytes'] / 1e6:.1f} MB buffer)")
    print(f"{'path':<22}{'MB sent':>10}{'sync s':>10}{'gather s':>10}{'load s':>10}{'transfer s':>12}")
    for name, r in result["syncs"].items():
        compute = r["compute_s"]
        print(f"{name:<22}{r['weight_sync_bytes'] / 1e6:>10.3g}{r['weight_sync_s']:>10.3g}"
              f"{compute.get('weight_gather', 0.0):>10.3g}{compute.get('weight_load', 0.0):>10.3g}"
              f"{r['weight_sync_transfer_s']:>12.3g}")  # fmt: skip


def print_modes(result: dict) -> None:
    print(f"\nworkload {result['workload']}: sync vs async")
    print(f"{'mode':<14}{'step_s':>10}{'tokens/s':>12}{'generation':>12}{'update':>10}{'wait':>10}")
    for name, r in result["modes"].items():
        wait = r["phases_s"].get("generation_wait", float("nan"))
        print(
            f"{name:<14}{r['step_s']:>10.3g}{r['tokens_per_s']:>12.4g}{r['compute_s'].get('generation', 0.0):>12.3g}"
            f"{r['compute_s'].get('update', 0.0):>10.3g}{wait:>10.3g}"
        )
    print(f"async / sync throughput: {result['async_over_sync']:.2f}")
    print(f"async / sync_pinned throughput: {result['async_over_sync_pinned']:.2f}")


def print_table(result: dict) -> None:
    print(f"\nworkload {result['workload']} ({result['parameters'] / 1e6:.1f} M parameters): {result['settings']}")
    print(f"{'metric':<40}{'value':>14}")
    for key in ("step_s", "tokens_per_s", "generated_tokens_per_s", "trained_tokens_per_s", "overhead_frac"):
        print(f"{key:<40}{result[key]:>14.4g}")
    for phase, seconds in result["phases_s"].items():
        print(f"{'phase ' + phase + ' (s)':<40}{seconds:>14.4g}")
    for phase, seconds in result["compute_s"].items():
        print(f"{'compute ' + phase + ' (s)':<40}{seconds:>14.4g}")
    print(f"{'orchestration overhead (s)':<40}{result['overhead_s']:>14.4g}")
    print(f"{'weight sync MB':<40}{result['weight_sync_bytes'] / 1e6:>14.4g}")
    print(f"{'weight sync / memcpy':<40}{result['weight_sync_over_memcpy']:>14.4g}")
    print(f"{'weight sync transfer / memcpy':<40}{result['weight_sync_transfer_over_memcpy']:>14.4g}")
    for name, rate in result.get("engines_tokens_per_s", {}).items():
        print(f"{'generate tokens/s ' + name:<40}{rate:>14.4g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="small")
    parser.add_argument("--steps", type=int, default=5, help="measured steps")
    parser.add_argument("--warmup", type=int, default=2, help="steps run before measuring")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--no-engine-comparison", action="store_true", help="skip vLLM vs HF generate")
    parser.add_argument("--modes", action="store_true", help="compare sync, sync pinned and async (see above)")
    parser.add_argument("--syncs", action="store_true", help="compare the weight-sync paths (object store, "
                        "collective, each with and without deltas; ipc) at lr 1e-6")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. algorithm=gspo")
    args = parser.parse_args(argv)
    if args.modes:
        result = compare_modes(args.workload, args.warmup, args.steps, args.overrides)
        print_modes(result)
    elif args.syncs:
        result = compare_syncs(args.workload, args.warmup, args.steps, args.overrides)
        print_syncs(result)
    else:
        result = run(args.workload, args.warmup, args.steps, args.overrides, not args.no_engine_comparison)
        print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
