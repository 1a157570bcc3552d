"""``distrl-plot <run_dir>`` (or ``python -m distrl.plot``): the standard curves of a run from its
``metrics.jsonl`` as PNG files in ``<run_dir>/plots/``, for users without wandb or TensorBoard.

One plot per metric of :data:`STANDARD` that the run logged (value against step; the evaluations
before training are step 0); metrics given with ``--metrics`` replace that list. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from distrl.metrics import read_metrics

#: The curves drawn by default, when the run logged them.
STANDARD = (
    "reward/mean",
    "reward/accuracy",
    "eval/greedy_acc",
    "eval/pass@k",
    "policy/entropy",
    "policy/kl_ref",
    "policy/clip_frac",
    "response_length/mean",
    "throughput/tokens_per_s",
    "timing/step_s",
)


def plot_run(run_dir: str | Path, metrics: Sequence[str] = STANDARD) -> list[Path]:
    """Write ``<run_dir>/plots/<metric with / as __>.png`` for each of ``metrics`` the run logged;
    returns the files written. Raises ``FileNotFoundError`` without ``<run_dir>/metrics.jsonl``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: give the run's trainer.output_dir (it holds metrics.jsonl)")
    rows = read_metrics(path)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    written = []
    for metric in metrics:
        points = [(r["step"], r[metric]) for r in rows if isinstance(r.get(metric), int | float)]
        if not points:
            continue
        figure = Figure(figsize=(6, 3.5))
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        steps, values = zip(*points, strict=True)
        axes.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3)
        axes.set_xlabel("step")
        axes.set_ylabel(metric)
        axes.set_title(f"{metric} ({run_dir.name})")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        target = out / f"{metric.replace('/', '__')}.png"
        figure.savefig(target, dpi=100)
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry; returns the exit status (1: nothing to plot, 2: bad arguments)."""
    parser = argparse.ArgumentParser(prog="distrl-plot", description="Plot a run's metrics.jsonl into PNG files.")
    parser.add_argument("run_dir", type=Path, help="the run's trainer.output_dir (e.g. runs/default)")
    parser.add_argument("--metrics", nargs="+", default=list(STANDARD), help="metric names (default: the standard set)")
    args = parser.parse_args(argv)
    try:
        written = plot_run(args.run_dir, args.metrics)
    except ImportError:
        print("distrl-plot needs matplotlib: pip install matplotlib", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"distrl-plot: {err}", file=sys.stderr)
        return 2
    for target in written:
        print(target)
    if not written:
        print(f"distrl-plot: none of {', '.join(args.metrics)} is in {args.run_dir / 'metrics.jsonl'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
