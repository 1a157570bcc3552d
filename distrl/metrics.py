"""Step metrics: one name, one meaning, written once per step to every sink the run asked for.

The controller calls :meth:`MetricsLogger.log` once per training step with a flat mapping of metric
names (see :data:`METRIC_GLOSSARY`) to numbers. The logger fans it out to the console (a progress
bar on a terminal, one line per step otherwise), ``<output_dir>/metrics.jsonl``, TensorBoard
(``<output_dir>/tensorboard``) and Weights & Biases (``<output_dir>/wandb``, offline by default).
wandb is the one sink that talks to a service: if it fails to start or to log, it is dropped with
one warning and training goes on.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

METRIC_GLOSSARY: dict[str, str] = {
    "reward/mean": "Mean reward of every response generated this step, before shaping (overlong, KL).",
    "advantages/mean": "Mean advantage over the response tokens of the training batch.",
    "policy/pg_loss": "Policy-gradient part of the loss (without the KL and entropy terms), per micro-batch mean.",
    "reward/std": "Standard deviation of the step's response rewards across the whole batch.",
    "reward/accuracy": "Fraction of the step's responses a verifier judged correct (rule-based rewards).",
    "reward/errors": (
        "Responses whose reward function raised, returned a non-number, timed out or whose worker process died "
        "(scored 0)."
    ),
    "reward/timeouts": "Of reward/errors, the calls that ran past reward.timeout_s (their worker was replaced).",
    "reward/<key>": (
        "A reward function's dict return with numeric keys besides score and acc: each key's mean over the "
        "step's samples that returned it (reward/fn_<key> where the name is one of distrl's own reward/ metrics)."
    ),
    "response_length/mean": "Mean response length in tokens.",
    "response_length/max": "Longest response in tokens.",
    "response_length/clip_ratio": "Fraction of responses truncated at rollout.max_new_tokens.",
    "policy/loss": "Policy loss (− objective) of the update, averaged over its mini-batches.",
    "policy/grad_norm": "Policy gradient norm before clipping, averaged over optimizer steps.",
    "policy/lr": "Policy learning rate at this step.",
    "policy/entropy": "Mean per-token entropy of the policy over response tokens.",
    "policy/approx_kl": "k3 estimate of KL(π_old ‖ π_θ) over response tokens: how far the update moved the policy.",
    "policy/kl_ref": "Mean per-token KL of the policy to the frozen reference (algorithm.kl.estimator).",
    "policy/kl_coef": "KL coefficient β in use (changes only with the adaptive controller).",
    "policy/clip_frac": "Fraction of response tokens whose ratio clip binds (either side, dual clip included).",
    "policy/clip_frac_low": "Fraction of response tokens clipped at 1 − ε_low (negative advantage).",
    "policy/clip_frac_high": "Fraction of response tokens clipped at 1 + ε_high (positive advantage).",
    "policy/dual_clip_frac": "Fraction of response tokens whose loss the dual clip caps at c·|A| (A < 0).",
    "policy/ratio_mean": "Mean importance ratio π_θ/π_old over response tokens (the sequence ratio for GSPO).",
    "policy/ratio_max": "Largest importance ratio π_θ/π_old over response tokens.",
    "policy/is_weight_mean": "Mean rollout-correction weight (TIS/IcePop) from π_old/π_rollout.",
    "policy/clip_cov_frac": "Fraction of response tokens Clip-Cov detached from the gradient.",
    "policy/kl_cov_frac": "Fraction of response tokens KL-Cov penalized.",
    "critic/loss": "Clipped value loss of the critic update.",
    "critic/vf_clip_frac": "Fraction of response tokens where the clipped value branch is the larger loss.",
    "critic/values_mean": "Mean critic value over response tokens.",
    "rollout/logprob_diff": "Mean |ℓ_trainer − ℓ_engine| over the sampled response tokens: rollout/trainer mismatch.",
    "rollout/staleness": "Policy versions the learner is ahead of the batch's generating weights (0 when synchronous).",
    "rollout/policy_version": "Policy version (weight-sync count) the rollout engines held for this step's batch.",
    "batch/filtered_groups": "Prompt groups dynamic sampling dropped (all G rewards equal).",
    "batch/sampling_rounds": "Generation rounds it took to fill the batch (1 without dynamic sampling).",
    "train/nonfinite_skipped": "Policy optimizer steps skipped because the loss or gradient was NaN or infinite.",
    "critic/nonfinite_skipped": "Critic optimizer steps skipped because the loss or gradient was NaN or infinite.",
    "timing/<phase>_s": "Wall-clock seconds the step spent in the named phase; one metric per phase the trainer times.",
    "timing/step_s": "Wall-clock seconds of the whole step.",
    "timing/overhead_s": (
        "Orchestration overhead of a synchronous step: timing/step_s minus, for each stage, the busiest "
        "actor's compute/<phase>_s (scheduling, object transfers, (de)serialization, controller time)."
    ),
    "compute/<phase>_s": (
        "Seconds the busiest actor of the phase spent inside its method (measured in the actor): generation, "
        "reward, assemble, sleep, old_logprob, reference, values, advantages, update, critic_update, weight_gather, "
        "weight_load."
    ),
    "memory/<phase>_peak_gib": (
        "Roles on a GPU only: the most GPU memory torch allocated during the phase (GiB), the largest actor's; "
        "with the inline backend it includes every role's resident weights."
    ),
    "weight_sync/bytes": (
        "Bytes of weights sent to each engine at the step's sync: the whole buffer in rollout.sync_dtype, or the "
        "changed words and their indices (rollout.sync_delta); its seconds are timing/weight_sync_s."
    ),
    "weight_sync/max_logprob_diff": (
        "Every cluster.sync_check_every syncs: the largest |engine − learner| log-prob over a few rows of the "
        "step's batch after the sync, teacher-forced, worst engine; past cluster.sync_check_max_diff the run stops."
    ),
    "rollout/samples": (
        "Samples generated this step, every sampling round, kept or filtered (what generation cost; "
        "compare algorithms at equal cumulative samples)."
    ),
    "rollout/ground_truth_injected": (
        "PVPO with algorithm.pvpo_inject_ground_truth: samples this step that are the ground truth (one in the "
        "group of each prompt the reference policy never solved)."
    ),
    "batch/groups_with_spread": (
        "Fraction of the step's generated prompt groups whose samples' rewards differ (the groups a "
        "group-relative advantage can learn from), before any filtering."
    ),
    "eval/greedy_acc": (
        "Held-out prompts (data.val_files, or the built-in task's held-out split): fraction answered correctly "
        "at temperature 0, one sample each, with the weights after the step (step 0: the initial policy)."
    ),
    "eval/pass@1": "Held-out prompts: mean accuracy of trainer.eval_k samples per prompt at the rollout temperature.",
    "eval/pass@k": "Held-out prompts: fraction with at least one correct sample among trainer.eval_k at the rollout "
    "temperature.",
    "eval/reward_mean": "Held-out prompts: mean reward of the trainer.eval_k samples per prompt.",
    "eval/<data_source>/<metric>": "With several data sources among the held-out prompts: each eval/ metric per "
    "source.",
    "recovery/restarts": (
        "Members of stateless roles (rollout engines, the reward actor, reference ranks) that died and were "
        "replaced so far in the run (trainer.max_restarts bounds it); each time the step ran again."
    ),
    "throughput/tokens_per_s": "Prompt and response tokens processed per wall-clock second of the step, whole cluster.",
    "throughput/generated_tokens_per_s": "Response tokens generated per second of the generation phase, all engines.",
}
"""Every metric name distrl logs, with its meaning; ``timing/<phase>_s``, ``compute/<phase>_s`` and
``memory/<phase>_peak_gib`` stand for their whole families."""

PEER_METRIC_NAMES: dict[str, str] = {
    "reward/mean": "TRL `reward`; verl `critic/score/mean`; OpenRLHF `reward`",
    "reward/std": "TRL `reward_std`",
    "response_length/mean": "TRL `completions/mean_length`; verl `response_length/mean`; OpenRLHF `response_length`",
    "response_length/max": "TRL `completions/max_length`; verl `response_length/max`",
    "response_length/clip_ratio": "TRL `completions/clipped_ratio`; verl `response_length/clip_ratio`",
    "policy/loss": "TRL `loss`; verl `actor/pg_loss`; OpenRLHF `policy_loss`",
    "policy/grad_norm": "TRL `grad_norm`; verl `actor/grad_norm`; OpenRLHF `actor_grad_norm`",
    "policy/lr": "TRL `learning_rate`; verl `actor/lr`; OpenRLHF `actor_lr`",
    "policy/entropy": "TRL `entropy`; verl `actor/entropy`",
    "policy/approx_kl": "verl `actor/ppo_kl`; OpenRLHF `ppo_kl`",
    "policy/kl_ref": "TRL `kl`; verl `actor/kl_loss` (loss) or `actor/reward_kl_penalty` (reward); OpenRLHF `kl`",
    "policy/kl_coef": "verl `actor/reward_kl_penalty_coeff`",
    "policy/clip_frac": "TRL `clip_ratio/region_mean`; verl `actor/pg_clipfrac`; OpenRLHF `ppo_clip_ratio`",
    "policy/clip_frac_low": "TRL `clip_ratio/low_mean`",
    "policy/clip_frac_high": "TRL `clip_ratio/high_mean`",
    "policy/dual_clip_frac": "verl `actor/pg_clipfrac_lower`",
    "policy/is_weight_mean": "TRL `sampling/importance_sampling_ratio/mean`",
    "critic/loss": "verl `critic/vf_loss`; OpenRLHF `critic_loss`",
    "critic/vf_clip_frac": "verl `critic/vf_clipfrac`",
    "critic/values_mean": "verl `critic/values/mean`; OpenRLHF `values`",
    "rollout/logprob_diff": (
        "TRL `sampling/sampling_logp_difference/mean`; verl `training/rollout_probs_diff_mean` "
        "(in probabilities); OpenRLHF `vllm_kl` (a KL)"
    ),
    "batch/filtered_groups": (
        "TRL `frac_reward_zero_std` (a fraction; TRL keeps them); "
        "OpenRLHF `dynamic_filtering_pass_rate` (the kept fraction)"
    ),
    "batch/sampling_rounds": "verl `train/num_gen_batches` (DAPO recipe)",
    "timing/<phase>_s": "TRL `step_time` (whole step); verl `timing_s/<phase>`; OpenRLHF `timing/<phase>`",
    "throughput/tokens_per_s": "verl `perf/throughput` (per GPU)",
}
"""The nearest name TRL, verl or OpenRLHF users read for a distrl metric, where one exists."""

SINKS: tuple[str, ...] = ("console", "jsonl", "tensorboard", "wandb")
"""The sink names :class:`MetricsLogger` accepts."""

CONSOLE_FIELDS: tuple[tuple[str, str], ...] = (
    ("reward/mean", "reward"),
    ("reward/accuracy", "acc"),
    ("response_length/mean", "len"),
    ("policy/kl_ref", "kl"),
    ("policy/entropy", "ent"),
    ("policy/clip_frac", "clip"),
    ("throughput/tokens_per_s", "tok/s"),
    ("eval/greedy_acc", "eval"),
)
"""(metric, short label) shown on the console, in this order, when the step logged them."""

SUMMARY_WINDOW = 3
#: The metric the run summary reports before and after training.
HELDOUT = "eval/greedy_acc"
"""close() compares the mean of the first and of the last this-many logged values."""


def glossary_markdown() -> str:
    """The glossary as a Markdown table: distrl name | meaning | nearest TRL / verl / OpenRLHF name."""
    rows = ["| metric | meaning | nearest peer name |", "|---|---|---|"]
    for name, meaning in METRIC_GLOSSARY.items():
        peers = PEER_METRIC_NAMES.get(name, "—")
        rows.append(f"| `{name}` | {meaning.replace('|', '&#124;')} | {peers.replace('|', '&#124;')} |")
    return "\n".join(rows) + "\n"


def format_value(value: float) -> str:
    """``value`` to 3 significant digits; thousands and up as ``12.3k`` / ``4.56M`` / ``1.2G``."""
    if not math.isfinite(value):
        return str(value)
    rounded = float(f"{value:.3g}")
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(rounded) >= scale:
            return f"{rounded / scale:.3g}{suffix}"
    return f"{rounded:.3g}"


def format_duration(seconds: float) -> str:
    """``3725`` → ``"1h02m"``, ``125`` → ``"2m05s"``, ``7.4`` → ``"7s"``."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


#: Characters of a prompt or response shown in the console's samples block.
SAMPLE_CHARS = 300


def _clip(text: str) -> str:
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "…"


def read_metrics(path: str | Path) -> list[dict]:
    """Parse a ``metrics.jsonl``: one dict per line, ``{"step": int, name: number, ...}``, in file order.

    Blank lines are skipped. A last line cut short (a crash mid-write) is ignored; a malformed line
    anywhere else raises ValueError naming the file and line.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON line ({err})") from err
        records.append(record)
    return records


def _number(value: Any) -> int | float:
    """An int stays an int (counts); everything else (floats, bools, 0-d tensors, numpy scalars) becomes a float."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return float(value)


def _window_mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


class MetricsLogger:
    """Writes each step's metrics to the chosen sinks; see the module docstring for where they go.

    ``sinks`` names any of :data:`SINKS` (one name may be given as a plain string); an unknown name
    raises ValueError listing the valid ones. ``output_dir`` is created if missing.
    ``start_step`` is the last step already completed (0 for a fresh run): ``metrics.jsonl`` keeps
    only its lines with ``step <= start_step`` (none for a fresh run), TensorBoard hides events
    after it, and the progress bar starts there. ``config`` is stored with the wandb run.
    ``console`` is where the console sink writes (default: stdout); on a terminal it shows a
    progress bar, otherwise (a Ray job log, a pipe) one line per step.
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        total_steps: int,
        config: dict,
        sinks: Sequence[str] = SINKS,
        wandb_project: str = "distrl",
        wandb_mode: str = "offline",
        start_step: int = 0,
        console: Console | None = None,
    ) -> None:
        if isinstance(sinks, str):
            sinks = (sinks,)
        unknown = [sink for sink in sinks if sink not in SINKS]
        if unknown:
            raise ValueError(f"unknown metrics sink(s) {unknown}; valid sinks: {', '.join(SINKS)}")
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.total_steps = total_steps
        self.start_step = start_step
        self.config = config
        self.sinks = list(dict.fromkeys(sinks))
        self.wandb_project = wandb_project
        self.wandb_mode = wandb_mode
        self._started = time.monotonic()
        self._steps = 0
        self._history: dict[str, list[float]] = {}
        self._heldout: list[tuple[int, float]] = []
        """(step, eval/greedy_acc) of every evaluation of the run, earlier processes' included."""
        self._summary: dict[str, float] | None = None
        self._jsonl = self._open_jsonl() if "jsonl" in self.sinks else None
        self._tensorboard = self._open_tensorboard() if "tensorboard" in self.sinks else None
        self._wandb_run: Any = None
        self._console = (console or Console(soft_wrap=True)) if "console" in self.sinks else None
        self._progress: Progress | None = None
        self._task: Any = None
        if self._console is not None and self._console.is_terminal:
            self._progress = Progress(
                TextColumn("step"),
                MofNCompleteColumn(),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[values]}"),
                console=self._console,
            )
            self._task = self._progress.add_task(
                "train", total=total_steps if total_steps > 0 else None, completed=start_step, values=""
            )
            self._progress.start()

    @property
    def jsonl_path(self) -> Path:
        """Where the jsonl sink writes: ``<output_dir>/metrics.jsonl``."""
        return self.output_dir / "metrics.jsonl"

    def _open_jsonl(self) -> TextIO:
        if self.start_step > 0 and self.jsonl_path.exists():
            kept = [r for r in read_metrics(self.jsonl_path) if r.get("step", math.inf) <= self.start_step]
            self._heldout = [(r["step"], r[HELDOUT]) for r in kept if HELDOUT in r]
            staging = self.jsonl_path.with_suffix(".jsonl.tmp")
            staging.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            os.replace(staging, self.jsonl_path)
            return self.jsonl_path.open("a", encoding="utf-8")
        return self.jsonl_path.open("w", encoding="utf-8")

    def _open_tensorboard(self) -> SummaryWriter:
        from torch.utils.tensorboard import SummaryWriter

        purge_step = self.start_step + 1 if self.start_step > 0 else None
        return SummaryWriter(log_dir=str(self.output_dir / "tensorboard"), purge_step=purge_step)

    def _drop_wandb(self, err: Exception) -> None:
        warnings.warn(
            f"distrl: wandb disabled for this run ({type(err).__name__}: {err})", RuntimeWarning, stacklevel=2
        )
        self.sinks.remove("wandb")
        self._wandb_run = None

    def _wandb_run_id(self) -> str:
        """The wandb run id, kept in ``<output_dir>/wandb_run_id``: a resumed run (``start_step > 0``)
        continues the run its folder started, a fresh one starts a new run."""
        path = self.output_dir / "wandb_run_id"
        if self.start_step > 0 and path.exists():
            return path.read_text().strip()
        run_id = uuid.uuid4().hex[:12]
        path.write_text(run_id)
        return run_id

    def _log_wandb(self, step: int, values: Mapping[str, int | float]) -> None:
        try:
            if self._wandb_run is None:
                os.environ.setdefault("WANDB_SILENT", "true")
                import wandb

                self._wandb_run = wandb.init(
                    project=self.wandb_project,
                    mode=self.wandb_mode,
                    dir=str(self.output_dir),
                    config=self.config,
                    settings=wandb.Settings(console="off"),
                    id=self._wandb_run_id(),
                    resume="allow",
                )
            self._wandb_run.log(dict(values), step=step)
        except Exception as err:
            self._drop_wandb(err)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record ``metrics`` as step ``step`` in every sink; steps should increase from start_step + 1.

        Values may be Python numbers, 0-d tensors or numpy scalars; ints are kept as ints, the rest
        become floats (NaN and infinities are written as they are: jsonl uses ``NaN``/``Infinity``).
        """
        values = {name: _number(value) for name, value in metrics.items()}
        self._steps += step > 0  # step 0: the evaluation before training, not a step
        if HELDOUT in values:
            self._heldout.append((step, float(values[HELDOUT])))
        for name, value in values.items():
            if math.isfinite(value):
                self._history.setdefault(name, []).append(float(value))
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
            self._jsonl.flush()
        if self._tensorboard is not None:
            for name, value in values.items():
                self._tensorboard.add_scalar(name, value, step)
            self._tensorboard.flush()
        if "wandb" in self.sinks:
            self._log_wandb(step, values)
        if self._console is not None:
            self._show(step, values)

    def _show(self, step: int, values: Mapping[str, int | float]) -> None:
        shown = "  ".join(f"{label} {format_value(values[name])}" for name, label in CONSOLE_FIELDS if name in values)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, values=shown)
            return
        total = f"/{self.total_steps}" if self.total_steps > 0 else ""
        pace = ""
        if step > 0 and self._steps > 0:
            per_step = (time.monotonic() - self._started) / self._steps
            left = max(0, self.total_steps - step) * per_step
            pace = f"  {per_step:.2f} s/step  eta {format_duration(left)}"
        self._console.print(f"step {step}{total}{pace}  {shown}".rstrip(), markup=False, highlight=False)

    def log_samples(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """A few of step ``step``'s samples (prompt, response, ground truth, score): appended to
        ``<output_dir>/samples.jsonl`` (one object per sample, with its step), shown on the console as a
        block, and logged to wandb as the table ``samples`` when wandb is a sink."""
        if not rows:
            return
        with (self.output_dir / "samples.jsonl").open("a", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps({"step": step, **row}, default=str) + "\n")
        lines = [f"samples at step {step}:"]
        for row in rows:
            lines.append(f"  reward {format_value(float(row['score']))}  ground truth {row['ground_truth']!r}")
            lines.append(f"    prompt:   {_clip(str(row['prompt']))!r}")
            lines.append(f"    response: {_clip(str(row['response']))!r}")
        self.print("\n".join(lines))
        if "wandb" in self.sinks and self._wandb_run is not None:
            try:
                import wandb

                columns = ["step", "prompt", "response", "ground_truth", "score"]
                data = [[step, str(r["prompt"]), str(r["response"]), str(r["ground_truth"]), r["score"]] for r in rows]
                self._wandb_run.log({"samples": wandb.Table(columns=columns, data=data)}, step=step)
            except Exception as err:
                self._drop_wandb(err)

    def print(self, message: str) -> None:
        """Print ``message`` on its own line (above the progress bar when there is one); no markup."""
        if self._console is not None:
            self._console.print(message, markup=False, highlight=False)
        else:
            print(message, flush=True)

    def close(self) -> dict[str, float]:
        """Close every sink; print and return the run summary (a second call only returns it again).

        Keys: ``steps`` (log calls in this process), ``wall_time_s`` (since construction), and, for
        each of ``reward/mean`` and ``reward/accuracy`` that was logged, ``<name>/first`` and
        ``<name>/last`` (mean of the first and of the last up to 3 finite values), and
        ``throughput/tokens_per_s/mean`` (mean of all finite values) when it was logged.
        """
        if self._summary is not None:
            return self._summary
        summary = self._summarize()
        if self._progress is not None:
            self._progress.stop()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb_run is not None:
            try:
                self._wandb_run.finish()
            except Exception as err:
                self._drop_wandb(err)
        self._summary = summary
        for line in self._summary_lines(summary):
            self.print(line)
        return summary

    def _summarize(self) -> dict[str, float]:
        """The run summary (see :meth:`close`)."""
        summary: dict[str, float] = {"steps": float(self._steps), "wall_time_s": time.monotonic() - self._started}
        for name in ("reward/mean", "reward/accuracy"):
            if self._history.get(name):
                summary[f"{name}/first"] = _window_mean(self._history[name][:SUMMARY_WINDOW])
                summary[f"{name}/last"] = _window_mean(self._history[name][-SUMMARY_WINDOW:])
        if self._history.get("throughput/tokens_per_s"):
            summary["throughput/tokens_per_s/mean"] = _window_mean(self._history["throughput/tokens_per_s"])
        if self._heldout:
            best_step, best = max(self._heldout, key=lambda point: (point[1], -point[0]))
            summary |= {f"{HELDOUT}/best": best, f"{HELDOUT}/best_step": best_step}
        if len(self._heldout) > 1:
            (first_step, first), (last_step, last) = self._heldout[0], self._heldout[-1]
            summary |= {f"{HELDOUT}/first": first, f"{HELDOUT}/last": last,
                        f"{HELDOUT}/first_step": first_step, f"{HELDOUT}/last_step": last_step}  # fmt: skip
        return summary

    @staticmethod
    def _summary_lines(summary: Mapping[str, float]) -> Iterable[str]:
        yield f"distrl: {int(summary['steps'])} steps in {summary['wall_time_s']:.1f} s"
        for name in ("reward/mean", "reward/accuracy"):
            if f"{name}/first" in summary:
                first, last = summary[f"{name}/first"], summary[f"{name}/last"]
                yield f"  {name}: {format_value(first)} -> {format_value(last)} (first vs last {SUMMARY_WINDOW} steps)"
        if "throughput/tokens_per_s/mean" in summary:
            yield f"  throughput/tokens_per_s: {format_value(summary['throughput/tokens_per_s/mean'])} (mean)"
        if f"{HELDOUT}/first" in summary:
            first, last = summary[f"{HELDOUT}/first"], summary[f"{HELDOUT}/last"]
            yield (
                f"  held-out greedy accuracy: {first:.3f} at step {int(summary[f'{HELDOUT}/first_step'])} -> "
                f"{last:.3f} at step {int(summary[f'{HELDOUT}/last_step'])} ({100 * (last - first):+.1f} points)"
            )
        if f"{HELDOUT}/best" in summary:
            best, best_step = summary[f"{HELDOUT}/best"], int(summary[f"{HELDOUT}/best_step"])
            yield f"  best held-out greedy accuracy: {best:.3f} at step {best_step}"

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
