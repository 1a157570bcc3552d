"""One-GPU check of the GPU path: every role on the GPU, a few GRPO steps, the figures that say
whether it works and what it costs.

    python benchmarks/gpu_check.py                         # ~0.36 B Qwen2, every role on cuda
    python benchmarks/gpu_check.py --json gpu_check.json   # the same, results also as JSON
    python benchmarks/gpu_check.py --device cpu --tiny     # the smoke test `make test` runs

It needs torch, transformers, hydra-core, omegaconf and rich, and neither Ray nor vLLM: the roles
run in this process (``cluster.backend=inline``) and generate with Hugging Face ``generate``. The
layout is the one-GPU colocated one (``cluster.colocate=true``): the engine releases its GPU
memory after generating (vLLM sleep mode; the HF engine moves to host memory) and takes it back
at the weight load, so the learner's peak memory is measured without the engine's.
Where vLLM is installed (``--engines hf,vllm``, the default when it imports) the same steps run a
second time with the vLLM engine. Per engine it prints:

- ``step_s`` and ``phase_s``: median seconds per step and per phase (``timing/<phase>_s``) over the
  steps after the first (the first pays for CUDA kernels' warm-up);
- ``generated_tokens_per_s``: response tokens per second of generation;
- ``weight_sync_s``: learner → engine, one flat buffer in ``rollout.sync_dtype``;
- ``max_logprob_diff``: after the last sync, the largest |engine − learner| log-prob over the
  tokens of fresh samples (the engine's at sampling time, the learner's in ``learner.precision``);
- ``peak_gib``: peak GPU memory (GiB) during each role's phases (one process: each peak includes
  every role's resident weights);
- ``changed_fraction``: the fraction of the learner's float32 weights that the first step (AdamW at
  ``learner.lr`` = 1e-6, bf16 compute) changed. Pure-bf16 weights would keep almost all of them.

The model is the tiny builder's Qwen2 architecture at 0.36 B parameters (hidden 896, 24 layers,
14 heads, MLP 4864: Qwen2.5-0.5B's shape with the character vocabulary), randomly initialized:
nothing is downloaded. Its samples are noise, so the reward is the share of digits in a response
(:func:`digit_share`), which differs between samples and gives GRPO a signal.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from distrl.config import compose_config
from distrl.models.tiny import build_tiny_model
from distrl.trainer import Trainer

#: Qwen2.5-0.5B's shape (hidden, layers, heads, MLP) over the character vocabulary: 0.36 B parameters.
FULL = {"hidden_size": 896, "num_layers": 24, "num_heads": 14, "intermediate_size": 4864}
TINY = {
    "hidden_size": 128,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 256,
}  # head size 64, as vLLM's CPU kernels need
#: The one GPU's shares (the roles are colocated in the learner's one-GPU bundle).
GPU_SHARES = {"learner": 0.5, "rollout": 0.3, "reference": 0.2}
#: Role → the phases whose peak memory is that role's.
ROLE_PHASES = {
    "rollout": ("generation", "weight_load"),
    "learner": ("old_logprob", "update", "weight_gather"),
    "reference": ("reference",),
}


def digit_share(data_source: str, solution_str: str, ground_truth: str | None, extra_info: dict | None = None) -> float:
    """The share of characters of the response that are digits (a reward a random model varies on)."""
    return sum(c.isdigit() for c in solution_str) / max(1, len(solution_str))


def workload(args: argparse.Namespace) -> list[str]:
    """Overrides for the check's job (the engine is added per run)."""
    share = GPU_SHARES if args.device == "cuda" else dict.fromkeys(GPU_SHARES, 0.0)
    return [
        "cluster.backend=inline",
        "cluster.colocate=true",
        f"cluster.weight_sync={args.weight_sync}",
        "algorithm=grpo",
        *(f"cluster.{role}.gpus={gpus}" for role, gpus in share.items()),
        "model.dtype=bfloat16",
        "learner.precision=bf16",
        "learner.lr=1e-6",
        "learner.gradient_checkpointing=true",
        f"data.train_batch_size={args.prompts}",
        f"rollout.n={args.samples}",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        f"trainer.total_steps={args.steps}",
        "trainer.loggers=[jsonl]",
        "data.val_size=0",
        f"reward.function={Path(__file__).resolve()}:digit_share",
    ]


def learner_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The learner's float32 weights (a copy)."""
    flat = trainer.get(trainer.learner.call("state_dict", "float32"), "learner")[0]
    return {name: tensor.clone() for name, tensor in flat.items()}


def changed_fraction(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    """The fraction of weight elements whose value differs."""
    changed = sum(int((before[k] != after[k]).sum()) for k in before)
    return changed / sum(t.numel() for t in before.values())


def max_logprob_diff(trainer: Trainer, seed: int) -> float:
    """Fresh samples from the engine; the largest |engine − learner| log-prob over their tokens."""
    records = trainer.records[:4]
    batch = trainer.get(
        trainer.rollout.call_rank(0, "generate", records, [str(r.index) for r in records], n=2, seed=seed), "rollout"
    )
    learner = trainer.get(trainer.learner.call("logprobs", batch), "learner")[0].float().cpu()
    mask = batch.response_mask.bool()
    return float((learner - batch.token["rollout_logprobs"]).abs()[mask].max())


def run_engine(engine: str, args: argparse.Namespace, model_path: Path, output_dir: Path) -> dict:
    """The check's steps with ``engine``; its figures."""
    cfg = compose_config(
        [*workload(args), f"rollout={engine}", f"model.path={model_path}", f"trainer.output_dir={output_dir}"]
    )
    trainer = Trainer(cfg)
    try:
        before = learner_weights(trainer)
        parameters = sum(t.numel() for t in before.values())
        steps = []
        for step in range(args.steps):
            steps.append(trainer.step(step))
            trainer.metrics.log(step + 1, steps[-1])
            if step == 0:
                changed = changed_fraction(before, learner_weights(trainer))
                del before
        measured = steps[1:] or steps
        phases = sorted({k for m in measured for k in m if k.startswith("timing/") and k != "timing/step_s"})
        peak = {
            role: max((m.get(f"memory/{p}_peak_gib", 0.0) for m in steps for p in phases_of), default=0.0)
            for role, phases_of in ROLE_PHASES.items()
        }
        return {
            "engine": engine,
            "parameters": parameters,
            "step_s": statistics.median(m["timing/step_s"] for m in measured),
            "phase_s": {k[len("timing/") : -2]: statistics.median(m[k] for m in measured) for k in phases},
            "generated_tokens_per_s": statistics.median(m["throughput/generated_tokens_per_s"] for m in measured),
            "weight_sync_s": statistics.median(m["timing/weight_sync_s"] for m in measured),
            "max_logprob_diff": max_logprob_diff(trainer, seed=args.steps),
            "peak_gib": peak if args.device == "cuda" else None,
            "changed_fraction": changed,
            "reward_mean": [round(m["reward/mean"], 4) for m in steps],
        }
    finally:
        trainer.shutdown()
        del trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def default_engines() -> str:
    """``hf``, plus ``vllm`` where it imports."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "hf"
    return "hf,vllm"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a ~0.4 M-parameter model (smoke test)")
    parser.add_argument(
        "--engines", default=None, help="comma-separated: hf, vllm (default: hf, and vllm if installed)"
    )
    parser.add_argument("--weight-sync", default="auto", help="cluster.weight_sync: auto (ipc on the GPU), "
                        "object_store")  # fmt: skip
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no GPU here; run on a GPU machine, or use --device cpu --tiny")
    sizes = TINY if args.tiny else FULL
    with tempfile.TemporaryDirectory(prefix="distrl-gpu-check-") as tmp:
        model_path = build_tiny_model(Path(tmp) / "model", **sizes)
        results = {
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "torch": torch.__version__,
            "model": sizes,
            "workload": {k: getattr(args, k) for k in ("steps", "prompts", "samples", "max_new_tokens")},
            "engines": [
                run_engine(engine, args, model_path, Path(tmp) / f"run-{engine}")
                for engine in (args.engines or default_engines()).split(",")
            ],
        }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
