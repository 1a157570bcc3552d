"""``benchmarks/compare.py``: the report on synthetic metrics with known numbers, and real tiny runs.

The synthetic part checks the table against numbers computed by hand; the real part trains two presets
for two steps each through ``python benchmarks/compare.py`` (the suite's tiny model) and checks the
files it writes, and that a failing run is reported and makes the exit status non-zero.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY

sys.path.insert(0, str(ROOT / "benchmarks"))

import compare

PLOTS = ("accuracy.png", "entropy.png", "clip_frac.png", "response_length.png", "kl_ref.png")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")

#: t₀.₉₇₅ with 2 degrees of freedom, the half-width factor for three runs.
T_2 = 4.302653


def synthetic_run(seed: int, final_reward: float, jump_step: int | None, kl: bool) -> list[dict]:
    """20 steps. reward/mean is 0 except the last 2 steps (the final 10%), which are ``final_reward``;
    accuracy is 0.1 until ``jump_step`` and 0.9 from it on (never 0.9 when None); entropy 3 - 0.1·step
    (final: mean of 1.1 and 1.0 = 1.05); tokens/s 100·(seed+1); clip fraction 0.2; length 10 + seed."""
    records = []
    for step in range(1, 21):
        record = {
            "step": step,
            "reward/mean": final_reward if step > 18 else 0.0,
            "reward/accuracy": 0.9 if jump_step is not None and step >= jump_step else 0.1,
            "policy/entropy": 3.0 - 0.1 * step,
            "throughput/tokens_per_s": 100.0 * (seed + 1),
            "policy/clip_frac": 0.2,
            "response_length/mean": 10.0 + seed,
        }
        if kl:
            record["policy/kl_ref"] = 0.01 * step
        records.append(record)
    return records


def meta(**fields) -> compare.ReportMeta:
    return compare.ReportMeta(
        command="compare.py --algorithms grpo,gspo", date="today", machine="test", commit="abc", executor="test",
        **fields,
    )  # fmt: skip


def table_row(report: str, *first_cells: str) -> list[str]:
    """The cells of the first report table row that starts with ``first_cells`` (e.g. the algorithm)."""
    start = "".join(f"| {cell} " for cell in first_cells) + "|"
    line = next(line for line in report.splitlines() if line.startswith(start))
    return [cell.strip() for cell in line.strip("|").split("|")]


def numbers(cell: str) -> list[float]:
    return [float(match) for match in NUMBER.findall(cell)]


@pytest.fixture
def synthetic_runs() -> dict[str, list[compare.Run]]:
    return {
        "grpo": [
            compare.Run(0, synthetic_run(0, 0.4, jump_step=5, kl=True)),
            compare.Run(1, synthetic_run(1, 0.5, jump_step=8, kl=True)),
            compare.Run(2, synthetic_run(2, 0.6, jump_step=None, kl=True)),
        ],
        "gspo": [compare.Run(0, synthetic_run(0, 0.7, jump_step=3, kl=False))],
    }


def test_report_table_on_known_numbers(tmp_path: Path, synthetic_runs: dict) -> None:
    report = compare.write_report(tmp_path, synthetic_runs, meta()).read_text()

    header = table_row(report, "algorithm")
    assert header[6] == "steps to accuracy ≥ 0.15"  # 1.5 × the first-step accuracy 0.1 of every run
    assert "(default: 1.5 × 0.1, the mean first-step `reward/accuracy` over all 4 started runs)" in report
    grpo = table_row(report, "grpo")
    assert grpo[1] == "finished 3 of 3"
    mean, half = numbers(grpo[2])  # finals 0.4, 0.5, 0.6: s = 0.1
    assert mean == pytest.approx(0.5)
    assert half == pytest.approx(T_2 * 0.1 / 3**0.5, rel=1e-2)
    mean, half = numbers(grpo[3])  # finals 0.9, 0.9, 0.1: s = 0.8 / √3
    assert mean == pytest.approx(1.9 / 3, rel=1e-2)
    assert half == pytest.approx(T_2 * (0.8 / 3**0.5) / 3**0.5, rel=1e-2)
    assert grpo[4] == grpo[5] == "—"  # no held-out evaluation in these runs
    # Moving averages reach 0.15 at the jump (4 × 0.1 + 0.9) / 5 = 0.26: steps 5 and 8; the third run never.
    assert numbers(grpo[6]) == pytest.approx([6.5, 2, 3])
    assert "(2/3 reached)" in grpo[6]
    assert numbers(grpo[9])[0] == pytest.approx(200)
    assert numbers(grpo[10])[0] == pytest.approx(1.05)
    assert numbers(grpo[11])[0] == pytest.approx(0.2)
    assert numbers(grpo[12])[0] == pytest.approx(11)

    gspo = table_row(report, "gspo")
    assert gspo[2] == "0.7 (n=1, no CI)"
    # The jump at step 3 fills a 5-step window only at step 5: (2 × 0.1 + 3 × 0.9) / 5 = 0.58.
    assert numbers(gspo[6]) == pytest.approx([5, 1, 1])
    assert "**Too few seeds for a ranking**: 1 paired seed(s)" in report
    assert "Not in this plot (`policy/kl_ref` not logged): gspo (no reference model runs for them)." in report
    for name in PLOTS:
        assert (tmp_path / name).stat().st_size > 0
        assert f"]({name})" in report
    for line in ("- command: `compare.py --algorithms grpo,gspo`", "- git commit: `abc`", "- machine: test"):
        assert line in report


def test_report_with_explicit_target_no_kl_and_a_failed_run(tmp_path: Path, synthetic_runs: dict) -> None:
    runs = {"grpo": synthetic_runs["grpo"][:2], "gspo": synthetic_runs["gspo"], "dapo": [compare.Run(0, [], False)]}
    (tmp_path / "kl_ref.png").write_bytes(b"stale")
    failure = compare.RunFailure("dapo-seed0", "exit status 1", "Traceback ...\nRuntimeError: boom")
    runs["grpo"] = [compare.Run(run.seed, [{k: v for k, v in r.items() if k != "policy/kl_ref"} for r in run.records])
                    for run in runs["grpo"]]  # fmt: skip
    report = compare.write_report(tmp_path, runs, meta(target_accuracy=0.5, failures=(failure,))).read_text()

    # (3 × 0.1 + 2 × 0.9) / 5 = 0.42 < 0.5 ≤ (2 × 0.1 + 3 × 0.9) / 5 = 0.58: two steps after the jump.
    assert numbers(table_row(report, "grpo")[6]) == pytest.approx([8.5, 2, 2])
    assert "Target accuracy: **0.5** (`--target-accuracy`)." in report
    assert table_row(report, "dapo")[1:4] == ["finished 0 of 1", "—", "—"]
    assert "No plot of `policy/kl_ref`: no algorithm logged it" in report
    assert not (tmp_path / "kl_ref.png").exists()
    assert "### dapo-seed0: exit status 1" in report
    assert "RuntimeError: boom" in report


def test_a_lucky_first_step_is_not_reaching_the_target():
    lucky = [{"step": s, "reward/accuracy": 0.3 if s == 1 else 0.1} for s in range(1, 21)]
    assert compare.steps_to_target(lucky, 0.15) is None  # step 1 alone beats it; no full 5-step window does
    late = [{"step": s, "reward/accuracy": 0.1 if s < 10 else 0.5} for s in range(1, 21)]
    assert compare.steps_to_target(late, 0.15) == 10  # (4 × 0.1 + 0.5) / 5 = 0.18


def test_stopped_runs_count_in_the_target_and_show_their_partial_results(tmp_path: Path) -> None:
    def run(seed: int, steps: int, first: float, samples: float, finished: bool = True) -> compare.Run:
        records = [{"step": s, "reward/accuracy": first if s == 1 else 0.5, "rollout/samples": samples,
                    "timing/step_s": 1.0, "eval/greedy_acc": 0.1 * seed} for s in range(1, steps + 1)]  # fmt: skip
        return compare.Run(seed, records, finished)

    runs = {
        "grpo": [run(0, 20, 0.1, 16.0), run(1, 20, 0.1, 16.0)],
        "dapo": [run(0, 20, 0.1, 80.0), run(1, 6, 0.7, 80.0, finished=False)],  # stopped after step 6
    }
    report = compare.write_report(tmp_path, runs, meta()).read_text()
    # target: 1.5 × the mean first-step accuracy of all four started runs, the stopped one included
    assert "Target accuracy: **0.375**" in report and "over all 4 started runs" in report
    dapo = table_row(report, "dapo")
    assert dapo[1] == "finished 1 of 2"
    assert table_row(report, "dapo-seed1")[1:3] == ["**no**", "6"]
    # equal samples: the least any finished run generated is grpo's 20 × 16 = 320, which dapo's
    # first run reaches at step 4: the moving average of steps 1-4 = (0.1 + 3 × 0.5) / 4
    assert table_row(report, "algorithm")[7] == "accuracy at 320 samples"
    assert numbers(dapo[7])[0] == pytest.approx(0.4)
    grpo = table_row(report, "grpo")
    assert numbers(grpo[7])[0] == pytest.approx(0.5)
    assert numbers(grpo[4]) == pytest.approx([0.05, 12.706205 * 0.1 / 2], rel=1e-2)  # last evals 0 and 0.1: s = 0.1/√2
    assert "| dapo | final `reward/accuracy` | 1 |" in report  # paired only on the seed both finished


@pytest.mark.parametrize(("df", "expected"), [(1, 12.7062), (2, 4.3027), (30, 2.0423), (40, 2.0211), (1000, 1.9623)])
def test_t_quantiles(df: int, expected: float) -> None:
    assert compare.t_quantile_975(df) == pytest.approx(expected, abs=1e-4)


@pytest.mark.subprocess
def test_a_job_prints_its_metrics_and_keeps_its_exit_status(tmp_path: Path) -> None:
    """The Ray job's shell command, run with a stand-in ``python`` that logs two steps and exits 3."""
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/sh\necho "args: $*"\nmkdir -p runs/compare/x\n'
        'printf \'{"step": 1}\\n{"step": 2}\\n\' > runs/compare/x/metrics.jsonl\nexit 3\n'
    )
    fake.chmod(0o755)
    entrypoint = compare.job_entrypoint(compare.RunSpec("gspo", 1), 3, "runs/compare/x", ["data.num_problems=8"])
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin"}
    job = subprocess.run(["sh", "-c", entrypoint], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert job.returncode == 3
    assert (
        "args: -m distrl.train data.num_problems=8 algorithm=gspo trainer.seed=1 trainer.total_steps=3 "
        "trainer.output_dir=runs/compare/x trainer.loggers=[jsonl]"
    ) in job.stdout
    assert compare.metrics_from_log("\x1b[36mnoise\x1b[0m\n" + job.stdout) == '{"step": 1}\n{"step": 2}\n'


def test_a_preset_override_reaches_only_that_presets_runs_and_must_name_a_preset_that_runs(capsys) -> None:
    own = ["--preset-override", "gspo", "algorithm.clip_low=3e-3"]
    args = compare.parse_args(["--algorithms", "grpo,gspo", "--steps", "3", "--out", "x", *own, "data.num_problems=8"])
    assert args.preset_override == [["gspo", "algorithm.clip_low=3e-3"]] and args.overrides == ["data.num_problems=8"]
    gspo = compare.run_overrides(compare.RunSpec("gspo", 0, ("algorithm.clip_low=3e-3",)), 3, "o", args.overrides)
    assert gspo.index("algorithm.clip_low=3e-3") < gspo.index("algorithm=gspo")
    assert "algorithm.clip_low=3e-3" not in compare.run_overrides(compare.RunSpec("grpo", 0), 3, "o", args.overrides)
    with pytest.raises(SystemExit):
        compare.parse_args(["--algorithms", "grpo", "--steps", "3", "--out", "x", "--preset-override", "gspo", "a=1"])
    assert "that --algorithms does not run" in capsys.readouterr().err


def run_compare(out: Path, model_cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--out", str(out), *args]
    command += [*TINY, f"model.cache_dir={model_cache}", "cluster.backend=inline"]  # the report, not the backend
    return subprocess.run(command, capture_output=True, text=True, timeout=400, check=False)


@pytest.mark.subprocess
def test_two_presets_train_and_report(tmp_path: Path, model_cache: Path) -> None:
    out = tmp_path / "cmp"
    done = run_compare(out, model_cache, "--algorithms", "grpo,gspo", "--seeds", "1", "--steps", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "dropping override 'trainer.total_steps=2'" in done.stderr
    report = (out / "report.md").read_text()
    assert table_row(report, "grpo")[1] == table_row(report, "gspo")[1] == "finished 1 of 1"
    for name in ("accuracy.png", "entropy.png", "clip_frac.png", "response_length.png"):
        assert (out / name).stat().st_size > 0
    assert table_row(report, "grpo")[4] != "—"  # the held-out evaluation after the last step
    assert "gspo (no reference model runs for them)" in report  # GSPO has no KL term
    for run in ("grpo-seed0", "gspo-seed0"):
        assert len((out / "runs" / run / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.subprocess
def test_a_failed_run_is_reported_and_fails_the_command(tmp_path: Path, model_cache: Path) -> None:
    out = tmp_path / "cmp"
    done = run_compare(
        out, model_cache, "--algorithms", "grpo", "--seeds", "1", "--steps", "1", "algorithm.policy_loss=nope"
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "grpo-seed0 FAILED (exit status 2)" in done.stderr
    assert "config error" in done.stderr
    report = (out / "report.md").read_text()
    assert "### grpo-seed0: exit status 2" in report
    assert table_row(report, "grpo")[1] == "finished 0 of 1"


@pytest.mark.subprocess
def test_an_earlier_comparisons_runs_stop_it_before_training_and_are_kept(tmp_path: Path, model_cache: Path) -> None:
    out = tmp_path / "cmp"
    earlier = out / "runs" / "gspo-seed1"
    (earlier / "checkpoints" / "step_60").mkdir(parents=True)
    (earlier / "metrics.jsonl").write_text('{"step": 60, "reward/accuracy": 0.8}\n')
    done = run_compare(out, model_cache, "--algorithms", "grpo,gspo", "--seeds", "2", "--steps", "1")
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{out} already holds the runs gspo-seed1 of an earlier comparison; --overwrite" in done.stderr
    assert "[1/4]" not in done.stdout  # nothing trained
    assert (earlier / "metrics.jsonl").exists() and (earlier / "checkpoints" / "step_60").exists()
    assert not (out / "runs" / "grpo-seed0").exists()


@pytest.mark.subprocess
def test_overwrite_replaces_an_earlier_run_so_its_metrics_are_not_reported_as_the_new_ones(
    tmp_path: Path, model_cache: Path
) -> None:
    out = tmp_path / "cmp"
    earlier = out / "runs" / "grpo-seed0"
    (earlier / "checkpoints" / "step_1").mkdir(parents=True)
    (earlier / "metrics.jsonl").write_text('{"step": 1, "reward/accuracy": 0.8}\n')
    args = ("--overwrite", "--algorithms", "grpo", "--seeds", "1", "--steps", "1", "algorithm.policy_loss=nope")
    done = run_compare(out, model_cache, *args)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "grpo-seed0 FAILED (exit status 2)" in done.stderr  # the new run, not the earlier one's metrics
    assert not (earlier / "checkpoints").exists() and not (earlier / "metrics.jsonl").exists()
    assert table_row((out / "report.md").read_text(), "grpo")[1] == "finished 0 of 1"


def test_held_out_lift_and_collapse_per_run_and_per_algorithm(tmp_path: Path) -> None:
    def run(seed: int, evals: list[float]) -> compare.Run:
        steps = [0, 5, 10][: len(evals)]
        records = [{"step": s, "reward/accuracy": 0.2} for s in range(1, 11)]
        for step, value in zip(steps, evals, strict=True):
            records.append({"step": step, "eval/greedy_acc": value})
        return compare.Run(seed, sorted(records, key=lambda r: r["step"]))

    runs = {"grpo": [run(0, [0.4, 0.5, 0.7]), run(1, [0.4, 0.3, 0.1])], "gspo": [run(0, [0.0, 0.2])]}
    assert [compare.collapsed(r.records) for r in runs["grpo"]] == [False, True]  # 0.1 < 0.5 × 0.4
    assert compare.collapsed(runs["gspo"][0].records) is None  # nothing to lose at step 0
    report = compare.write_report(tmp_path, runs, meta()).read_text()
    grpo, header = table_row(report, "grpo"), table_row(report, "algorithm")
    assert header[-2:] == ["held-out greedy lift", "collapsed"]
    assert numbers(grpo[-2])[0] == pytest.approx(0.0) and grpo[-1] == "1 of 2"  # lifts +0.3 and -0.3
    assert table_row(report, "gspo")[-1] == "—"
    seed1 = table_row(report, "grpo-seed1")
    assert numbers(seed1[5]) == pytest.approx([-0.3]) and seed1[-1] == "**yes**"
    assert "| gspo | `eval/greedy_acc` lift | 1 |" in report


def test_paired_entropy_and_pass_at_k_differences_against_the_first_algorithm(tmp_path: Path) -> None:
    def run(seed: int, entropy: float, pass_k: float) -> compare.Run:
        records = [{"step": s, "reward/accuracy": 0.2, "policy/entropy": entropy} for s in range(1, 11)]
        return compare.Run(seed, [{"step": 0, "eval/pass@k": 0.5}, *records, {"step": 10, "eval/pass@k": pass_k}])

    runs = {
        "dapo": [run(seed, entropy=0.2, pass_k=0.8) for seed in range(3)],
        "kl_cov": [run(0, 0.4, 0.9), run(1, 0.45, 0.8), run(2, 0.5, 0.7)],
    }
    report = compare.write_report(tmp_path, runs, meta()).read_text()

    assert "## Paired differences against dapo" in report
    entropy = table_row(report, "kl_cov", "final `policy/entropy`")
    mean, half = numbers(entropy[3])  # differences 0.2, 0.25, 0.3: s = 0.05
    assert (mean, entropy[4]) == (pytest.approx(0.25), "yes")
    assert half == pytest.approx(T_2 * 0.05 / 3**0.5, rel=1e-2)
    pass_k = table_row(report, "kl_cov", "last `eval/pass@k`")
    assert numbers(pass_k[3])[0] == pytest.approx(0.0, abs=1e-9) and pass_k[4] == "no"
