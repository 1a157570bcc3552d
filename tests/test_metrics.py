"""MetricsLogger: every sink writes what it was given, resume leaves no duplicate steps, close() sums up."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from distrl.metrics import (
    METRIC_GLOSSARY,
    PEER_METRIC_NAMES,
    SINKS,
    MetricsLogger,
    format_value,
    glossary_markdown,
    read_metrics,
)

STEPS = [
    {"reward/mean": 0.1, "reward/accuracy": 0.0, "throughput/tokens_per_s": 100.0, "batch/sampling_rounds": 1},
    {"reward/mean": 0.2, "reward/accuracy": 0.25, "throughput/tokens_per_s": 200.0, "batch/sampling_rounds": 2},
    {"reward/mean": 0.3, "reward/accuracy": 0.5, "throughput/tokens_per_s": 300.0, "batch/sampling_rounds": 1},
    {"reward/mean": 0.4, "reward/accuracy": 0.5, "throughput/tokens_per_s": 400.0, "batch/sampling_rounds": 1},
    {"reward/mean": 0.5, "reward/accuracy": 0.75, "throughput/tokens_per_s": 500.0, "batch/sampling_rounds": 3},
    {"reward/mean": 0.6, "reward/accuracy": 1.0, "throughput/tokens_per_s": 600.0, "batch/sampling_rounds": 1},
]


def plain_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=200), buffer


def run(output_dir: Path, steps: list[dict], *, first_step: int = 1, **kwargs) -> tuple[dict, str]:
    console, buffer = plain_console()
    kwargs.setdefault("sinks", ("console", "jsonl", "tensorboard"))
    logger = MetricsLogger(output_dir, total_steps=len(steps), config={"seed": 0}, console=console, **kwargs)
    for step, metrics in enumerate(steps, start=first_step):
        logger.log(step, metrics)
    return logger.close(), buffer.getvalue()


def test_jsonl_round_trips_through_read_metrics(tmp_path: Path) -> None:
    run(tmp_path, STEPS, sinks=("jsonl",))
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert records == [{"step": i, **metrics} for i, metrics in enumerate(STEPS, start=1)]
    assert isinstance(records[1]["batch/sampling_rounds"], int)


def test_jsonl_keeps_nan_and_converts_tensors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    run(tmp_path, [{"policy/loss": torch.tensor(0.5), "policy/grad_norm": float("nan")}], sinks=("jsonl",))
    (record,) = read_metrics(tmp_path / "metrics.jsonl")
    assert record["policy/loss"] == 0.5
    assert math.isnan(record["policy/grad_norm"])


def test_each_line_is_on_disk_before_close(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, total_steps=2, config={}, sinks=("jsonl",))
    logger.log(1, {"reward/mean": 1.0})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "reward/mean": 1.0}]
    logger.close()


def test_read_metrics_ignores_a_torn_last_line_only(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "reward/mean": 0.5}\n\n{"step": 2, "rew')
    assert read_metrics(path) == [{"step": 1, "reward/mean": 0.5}]
    path.write_text('{"step": 1, "rew\n{"step": 2, "reward/mean": 0.5}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:1"):
        read_metrics(path)


def test_tensorboard_event_files_hold_the_scalars(tmp_path: Path) -> None:
    run(tmp_path, STEPS, sinks=("tensorboard",))
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"reward/mean", "reward/accuracy", "throughput/tokens_per_s"} <= set(events.Tags()["scalars"])
    scalars = events.Scalars("reward/mean")
    assert [s.step for s in scalars] == [1, 2, 3, 4, 5, 6]
    assert [s.value for s in scalars] == pytest.approx([m["reward/mean"] for m in STEPS])


def test_wandb_offline_writes_a_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    summary, _ = run(tmp_path, STEPS[:2], sinks=("wandb",), wandb_mode="offline")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb"))
    assert summary["steps"] == 2


def test_a_resumed_run_continues_its_wandb_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run(tmp_path, STEPS[:2], sinks=("wandb",), wandb_mode="offline")
    logger = MetricsLogger(tmp_path, total_steps=4, config={}, sinks=("wandb",), wandb_mode="offline", start_step=2)
    for step, metrics in enumerate(STEPS[2:4], start=3):
        logger.log(step, metrics)
    logger.close()
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    run_id = (tmp_path / "wandb_run_id").read_text()
    assert {f.name for r in runs for f in r.glob("*.wandb")} == {f"run-{run_id}.wandb"}  # `wandb sync` joins them


def test_a_failing_wandb_is_dropped_with_one_warning(tmp_path: Path) -> None:
    logger = MetricsLogger(
        tmp_path, total_steps=2, config={}, sinks=("jsonl", "wandb"), wandb_mode="no-such-mode", console=None
    )
    with pytest.warns(RuntimeWarning, match="wandb disabled"):
        logger.log(1, {"reward/mean": 1.0})
    logger.log(2, {"reward/mean": 2.0})
    assert logger.sinks == ["jsonl"]
    logger.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]


def test_resume_drops_lines_after_start_step(tmp_path: Path) -> None:
    run(tmp_path, STEPS[:5], sinks=("jsonl",))
    run(tmp_path, STEPS[3:], sinks=("jsonl", "tensorboard"), start_step=3, first_step=4)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records == [{"step": i, **metrics} for i, metrics in enumerate(STEPS, start=1)]


def test_a_fresh_run_starts_the_file_anew(tmp_path: Path) -> None:
    run(tmp_path, STEPS, sinks=("jsonl",))
    run(tmp_path, STEPS[:2], sinks=("jsonl",))
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]


def test_unknown_sink_is_refused_with_the_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid sinks: console, jsonl, tensorboard, wandb") as err:
        MetricsLogger(tmp_path / "out", total_steps=1, config={}, sinks=("jsonl", "mlflow"))
    assert "mlflow" in str(err.value)


def test_output_dir_is_created_and_one_sink_may_be_a_string(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path / "a" / "b", total_steps=1, config={}, sinks="jsonl")
    assert logger.sinks == ["jsonl"]
    logger.close()
    assert (tmp_path / "a" / "b" / "metrics.jsonl").exists()


def test_close_summarizes_a_known_sequence(tmp_path: Path) -> None:
    summary, output = run(tmp_path, STEPS)
    assert summary["steps"] == 6
    assert summary["wall_time_s"] >= 0
    assert summary["reward/mean/first"] == pytest.approx(0.2)
    assert summary["reward/mean/last"] == pytest.approx(0.5)
    assert summary["reward/accuracy/first"] == pytest.approx(0.25)
    assert summary["reward/accuracy/last"] == pytest.approx(0.75)
    assert summary["throughput/tokens_per_s/mean"] == pytest.approx(350.0)
    assert "6 steps" in output
    assert "reward/mean: 0.2 -> 0.5" in output
    assert "throughput/tokens_per_s: 350 (mean)" in output


def test_close_with_few_steps_and_missing_metrics(tmp_path: Path) -> None:
    summary, _ = run(tmp_path, [{"reward/mean": 1.0}, {"reward/mean": float("nan")}, {"reward/mean": 3.0}])
    assert summary["reward/mean/first"] == pytest.approx(2.0)
    assert summary["reward/mean/last"] == pytest.approx(2.0)
    assert "reward/accuracy/first" not in summary
    assert "throughput/tokens_per_s/mean" not in summary


def test_close_twice_returns_the_same_summary(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, total_steps=1, config={}, sinks=("jsonl",))
    logger.log(1, {"reward/mean": 1.0})
    assert logger.close() is logger.close()


def test_context_manager_closes_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), MetricsLogger(tmp_path, total_steps=3, config={}, sinks=("tensorboard",)) as log:
        log.log(1, {"reward/mean": 1.0})
        raise RuntimeError("training crashed")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [s.step for s in events.Scalars("reward/mean")] == [1]


def test_console_line_per_step_without_a_terminal(tmp_path: Path) -> None:
    metrics = {
        "reward/mean": 0.123456,
        "reward/accuracy": 0.5,
        "response_length/mean": 87.25,
        "policy/kl_ref": 0.001234,
        "policy/entropy": 1.5,
        "policy/clip_frac": 0.0,
        "throughput/tokens_per_s": 12345.0,
        "policy/loss": 9.0,
    }
    _, output = run(tmp_path, [metrics], sinks=("console",))
    line = output.splitlines()[0]
    assert re.fullmatch(r"step 1/1  [\d.]+ s/step  eta 0s  reward 0.123  acc 0.5  len 87.2  kl 0.00123  ent 1.5  "
                        r"clip 0  tok/s 12.3k", line), line  # fmt: skip


def test_console_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160)
    logger = MetricsLogger(tmp_path, total_steps=4, config={}, sinks=("console",), console=console, start_step=2)
    logger.log(3, {"reward/mean": 0.5, "throughput/tokens_per_s": 1500.0})
    logger.print("checkpoint saved [step 3]")
    logger.close()
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buffer.getvalue())
    assert "3/4" in text
    assert "reward 0.5" in text and "tok/s 1.5k" in text
    assert "checkpoint saved [step 3]" in text


def test_print_without_console_sink_is_plain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logger = MetricsLogger(tmp_path, total_steps=1, config={}, sinks=("jsonl",))
    logger.print("hello [bold]x[/bold]")
    assert capsys.readouterr().out == "hello [bold]x[/bold]\n"
    logger.close()


def test_all_four_sinks_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    summary, output = run(tmp_path, STEPS[:3], sinks=SINKS, wandb_mode="offline")
    assert summary["steps"] == 3
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 3
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert "step 3/3" in output


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "0"), (0.123456, "0.123"), (-2.5, "-2.5"), (999.95, "1k"), (12345.0, "12.3k"), (4.567e6, "4.57M")],
)
def test_format_value_three_significant_digits(value: float, text: str) -> None:
    assert format_value(value) == text


def test_glossary_covers_the_design_names_and_maps_only_known_ones() -> None:
    design = {
        "reward/mean",
        "reward/accuracy",
        "response_length/mean",
        "policy/clip_frac",
        "policy/entropy",
        "policy/approx_kl",
        "policy/kl_ref",
        "rollout/logprob_diff",
        "timing/<phase>_s",
        "throughput/tokens_per_s",
    }
    assert design <= set(METRIC_GLOSSARY)
    assert set(PEER_METRIC_NAMES) <= set(METRIC_GLOSSARY)
    table = glossary_markdown()
    assert table.count("\n") == len(METRIC_GLOSSARY) + 2
    assert "| `reward/mean` |" in table
    assert all(line.count(" | ") == 2 for line in table.splitlines()[2:])
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert table.strip() in readme  # the README's metric table is this glossary, row for row
