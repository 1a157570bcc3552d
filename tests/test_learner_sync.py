"""The learner and rollout roles as plain objects (no Ray): weight sync into a live vLLM engine,
updates, micro-batching; and FSDP2 over gloo with 2 ranks (Ray actors) equal to 1 rank."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from distrl.backends.inline import InlineBackend
from distrl.data.batch import TrajectoryBatch
from distrl.data.records import PromptRecord
from distrl.models.prepare import prepare_policy
from distrl.models.tiny import build_tokenizer
from distrl.roles.learner import Learner
from distrl.roles.rollout import Rollout

pytestmark = pytest.mark.vllm


def learner_group(path, cfg, count, backend=None):
    """A learner group set up for training: ``count`` Ray actors, or one plain object inline."""
    backend = backend or InlineBackend()
    group = backend.group("learner", Learner, count, cfg.cluster.learner, args=(path, cfg))
    address = port = None
    if count > 1:
        address, port = group.node_address(0), backend.get(group.call_rank(0, "free_port"), "learner")
    backend.get(group.call("setup", address, port), "learner")
    group.get = lambda handles: backend.get(handles, "learner")
    return group


def update_batch(seed: int = 0) -> TrajectoryBatch:
    """Six samples with fixed responses and advantages, old log-probs filled in later."""
    tok = build_tokenizer()
    gen = torch.Generator().manual_seed(seed)
    prompts = [tok(f"{a}+{b}=")["input_ids"] for a, b in [(1, 2), (30, 4), (5, 66), (7, 8), (91, 2), (3, 3)]]
    responses = [tok(r)["input_ids"] + [tok.eos_token_id] for r in ["3", "34", "71", "15", "93", "6"]]
    batch = TrajectoryBatch.from_lists(
        prompts, responses, pad_id=tok.pad_token_id, token={"rollout_logprobs": [[0.0] * len(r) for r in responses]},
        sample={"truncated": [0.0] * 6}, meta={"group_ids": ["a"] * 3 + ["b"] * 3},
    )  # fmt: skip
    batch.token["advantages"] = torch.randn(6, 1, generator=gen).expand_as(batch.response_mask) * batch.response_mask
    return batch


def with_old_logprobs(group, batch):
    batch.token["old_logprobs"] = torch.cat(group.get(group.call("logprobs", batch)))
    return batch


@pytest.mark.parametrize("tensor_parallel", [1, 2])
def test_engine_logprobs_follow_the_learner_after_a_weight_sync(tiny_config, tensor_parallel):
    """With tensor parallelism the weights reach worker processes (vLLM's multiprocess executor)."""
    cfg = tiny_config("learner.lr=0.05", "algorithm.kl.coef=0", f"rollout.tensor_parallel_size={tensor_parallel}")
    path = prepare_policy(cfg)
    learner = Learner(path, cfg)
    learner.setup()
    engine = Rollout(path, cfg.rollout, max_model_len=64, seed=0)
    try:
        batch = update_batch()
        batch.token["old_logprobs"] = learner.logprobs(batch)
        prompt = batch.prompt_ids[1][batch.prompt_mask[1].bool()].tolist()
        response = batch.response_ids[1][batch.response_mask[1].bool()].tolist()
        before = torch.tensor(engine.sequence_logprobs(prompt, response))
        assert torch.allclose(before, batch.token["old_logprobs"][1, : len(response)], atol=1e-4)

        learner.update(batch, 0)
        assert engine.load_weights(learner.state_dict("bfloat16"), 1) == 1
        after = torch.tensor(engine.sequence_logprobs(prompt, response))
        trained = learner.logprobs(batch)[1, : len(response)]

        assert (after - before).abs().max() > 0.05  # the engine really has new weights
        assert torch.allclose(after, trained, atol=0.03)  # the learner's, up to bf16 rounding

        # sampling is reproducible by the call's seed alone (no per-request seeds)
        records = [
            PromptRecord(f"{a}+{b}=", "arithmetic", str(a + b), {}, i) for i, (a, b) in enumerate([(1, 2), (4, 5)])
        ]

        def responses(seed):
            return engine.generate(records, ["a", "b"], n=4, seed=seed).response_ids.tolist()

        assert responses(3) == responses(3)
        assert responses(3) != responses(4)
    finally:
        engine.close()


@pytest.mark.ray
def test_two_fsdp_learners_give_the_same_update_as_one(tiny_config, ray_local):
    from distrl.backends.ray_backend import RayBackend

    cfg = tiny_config("learner.lr=0.01", "learner.micro_batch_tokens=16", "algorithm.kl.coef=0")
    path = prepare_policy(cfg)
    results = {}
    for count in (1, 2):
        group = learner_group(path, cfg, count, RayBackend(num_cpus=8))
        try:
            batch = with_old_logprobs(group, update_batch())
            metrics = group.get(group.call("update", batch, 0))
            weights = group.get(group.call("state_dict", "float32"))[0].as_dict()
            results[count] = (metrics, weights)
        finally:
            group.shutdown()
    (m1, w1), (m2, w2) = results[1], results[2]
    assert m1[0]["policy/grad_norm"] == pytest.approx(m2[0]["policy/grad_norm"], rel=1e-4)
    assert m1[0]["policy/grad_norm"] > 0
    initial = AutoModelForCausalLM.from_pretrained(path).state_dict()
    moved = max((w1[k] - initial[k]).abs().max().item() for k in w1)
    assert moved > 5e-3  # Adam's first step moves weights by about lr = 0.01
    for name in w1:  # equal up to float summation order, 1% of the step
        assert torch.allclose(w1[name], w2[name], atol=1e-4), name


def test_update_without_the_old_logprob_pass_equals_the_update_with_it(tiny_config):
    cfg = tiny_config("learner.lr=0.01", "algorithm.kl.coef=0")
    path = prepare_policy(cfg)
    results = {}
    for with_pass in (True, False):
        group = learner_group(path, cfg, 1)
        try:
            batch = with_old_logprobs(group, update_batch()) if with_pass else update_batch()
            metrics = group.get(group.call("update", batch, 0))[0]
            results[with_pass] = (batch, metrics, group.get(group.call("state_dict", "float32"))[0].as_dict())
        finally:
            group.shutdown()
    (batch, m_pass, w_pass), (_, m_own, w_own) = results[True], results[False]
    assert m_own["policy/grad_norm"] == pytest.approx(m_pass["policy/grad_norm"], rel=1e-5)
    assert m_own["policy/ratio_mean"] == 1.0  # π_old is the forward's own detached log-probs
    for name in w_pass:
        assert torch.allclose(w_pass[name], w_own[name], atol=1e-6), name
    # without the pass the update reports the trainer/engine mismatch (engine log-probs are 0 here)
    mask = batch.response_mask
    expected = float((batch.token["old_logprobs"].abs() * mask).sum() / mask.sum())
    assert m_own["rollout/logprob_diff"] == pytest.approx(expected, rel=1e-5)
    assert "rollout/logprob_diff" not in m_pass


def test_a_nonfinite_update_is_skipped_and_leaves_the_weights(tiny_config):
    cfg = tiny_config("algorithm.kl.coef=0")
    path = prepare_policy(cfg)
    group = learner_group(path, cfg, 1)
    try:
        batch = with_old_logprobs(group, update_batch())
        before = group.get(group.call("state_dict", "float32"))[0].as_dict()
        batch.token["advantages"][0, 0] = float("nan")
        metrics = group.get(group.call("update", batch, 0))[0]
        after = group.get(group.call("state_dict", "float32"))[0].as_dict()
    finally:
        group.shutdown()
    assert metrics["train/nonfinite_skipped"] == 1.0
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_nonfinite_guard_stops_after_k_in_a_row(tmp_path):
    from distrl.trainer import NonFiniteGuard, TrainingError

    guard = NonFiniteGuard(limit=3)
    for skipped in (True, True, False, True, True):
        guard.observe(skipped, None)
    with pytest.raises(TrainingError, match=r"3 updates in a row.*Last checkpoint: .*step_4"):
        guard.observe(True, tmp_path / "step_4")


def test_ignore_eos_generates_exactly_max_new_tokens(tiny_config):
    from distrl.data.arithmetic import make_problems

    lengths = {}
    for ignore in (False, True):
        cfg = tiny_config(f"rollout.ignore_eos={str(ignore).lower()}", "rollout.max_new_tokens=12")
        path = prepare_policy(cfg)  # warm-started: it has learned to end its answers with EOS
        engine = Rollout(path, cfg.rollout, max_model_len=64, seed=0)
        try:
            batch = engine.generate(make_problems(4, digits=2, seed=0), ["a", "b", "c", "d"], n=8, seed=0)
        finally:
            engine.close()
        lengths[ignore] = batch.response_lengths.tolist()
    assert min(lengths[False]) < 12  # without the flag some answers end early
    assert lengths[True] == [12.0] * 32


def test_length_sorted_micro_batches_return_log_probs_in_batch_order(tiny_config):
    cfg_one = tiny_config("algorithm.kl.coef=0")
    cfg_many = tiny_config("algorithm.kl.coef=0", "learner.micro_batch_tokens=16")
    path = prepare_policy(cfg_one)
    batch = update_batch()
    assert len(set(batch.response_lengths.tolist())) > 1  # rows of different lengths get reordered
    results = []
    for cfg in (cfg_one, cfg_many):
        group = learner_group(path, cfg, 1)
        try:
            results.append(torch.cat(group.get(group.call("logprobs", batch))))
        finally:
            group.shutdown()
    assert torch.allclose(results[0], results[1], atol=1e-5)
    assert (results[0] != 0).sum() == batch.response_mask.sum()


def test_engine_logprobs_are_the_learners_at_any_sampling_temperature(tiny_config):
    from distrl.data.arithmetic import make_problems

    mismatch = {}
    for temperature in (1.0, 0.7):
        cfg = tiny_config("algorithm.kl.coef=0", f"rollout.temperature={temperature}", "rollout.max_new_tokens=8")
        path = prepare_policy(cfg)
        learner = Learner(path, cfg)
        learner.setup()
        engine = Rollout(path, cfg.rollout, max_model_len=64, seed=0)
        try:
            batch = engine.generate(make_problems(4, digits=2, seed=0), ["a", "b", "c", "d"], n=4, seed=0)
        finally:
            engine.close()
        diff = (batch.token["rollout_logprobs"] - learner.logprobs(batch)).abs() * batch.response_mask
        mismatch[temperature] = float(diff.sum() / batch.response_mask.sum())  # rollout/logprob_diff
    # the engine reports log-probs of softmax(z / T), the distribution it sampled from, as the learner does
    assert mismatch[1.0] < 1e-4 and mismatch[0.7] < 1e-4, mismatch


@pytest.mark.ray
def test_two_fsdp_critic_ranks_give_the_same_values_and_update_as_one(tiny_config, ray_local, tmp_path):
    from distrl.backends.ray_backend import RayBackend
    from distrl.models.loading import load_critic
    from distrl.roles.critic import Critic

    cfg = tiny_config("algorithm=ppo", "critic.lr=0.01", "learner.micro_batch_tokens=16")
    path = prepare_policy(cfg)
    results = {}
    for count in (1, 2):
        backend = RayBackend(num_cpus=8)
        group = backend.group("critic", Critic, count, cfg.cluster.critic, args=(path, cfg))
        try:
            address = port = None
            if count > 1:
                address, port = group.node_address(0), backend.get(group.call_rank(0, "free_port"), "critic")
            backend.get(group.call("setup", address, port, None), "critic")
            batch = update_batch()
            values = torch.cat(backend.get(group.call("values", batch), "critic"))
            batch.token["values"] = values
            batch.token["returns"] = torch.full_like(values, 0.5) * batch.response_mask
            metrics = backend.get(group.call("update", batch, 0), "critic")
            backend.get(group.call("save", str(tmp_path / f"ranks{count}")), "critic")
            folder = tmp_path / f"ranks{count}" / "critic"
            moments = torch.load(folder / "critic_optimizer.pt")["optimizer"]["state"]
            results[count] = (values, metrics, torch.load(folder / "critic.pt"), moments)
        finally:
            group.shutdown()
    (v1, m1, w1, s1), (v2, m2, w2, s2) = results[1], results[2]
    assert torch.equal(v1, v2)  # the zero head: 0 everywhere, split by rank and put back in order
    loss2 = sum(m["critic/loss"] for m in m2) / 2
    assert m1[0]["critic/loss"] == pytest.approx(loss2, rel=0.2)  # each rank's mean over its own shard
    initial = load_critic(path).state_dict()
    assert max(float((w1[k] - initial[k]).abs().max()) for k in w1) > 1e-3  # the update moved the critic
    for name in w1:  # the same gradient from one rank and from two (up to float summation order) ...
        g1, g2 = s1[name]["exp_avg"], s2[name]["exp_avg"]
        assert torch.allclose(g1, g2, rtol=1e-3, atol=1e-6 * float(g1.abs().max())), name
        # ... so the same step, where the gradient's sign is not float noise: Adam's first step is
        # lr * sign(g) for |g| >> eps, which a near-zero component can flip by summation order alone
        settled = g1.abs() > 1e-4 * float(g1.abs().max())
        assert torch.allclose(w1[name][settled], w2[name][settled], atol=1e-4), name
