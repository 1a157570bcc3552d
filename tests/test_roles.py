"""Every role as a plain object, without Ray and without vLLM (the HF engine): constructed and
called in this process, checked against hand-computed numbers and the direction of learning."""

import math
import pickle
from pathlib import Path

import pytest
import torch

from distrl.config import compose_config
from distrl.data.arithmetic import make_problems
from distrl.data.batch import TrajectoryBatch
from distrl.models.prepare import prepare_policy
from distrl.models.tiny import build_tokenizer
from distrl.roles.batches import AdvantageSpec, BatchRole, assemble, prepare_update
from distrl.roles.critic import Critic
from distrl.roles.learner import Learner
from distrl.roles.reference import Reference
from distrl.roles.reward import Reward
from distrl.roles.rollout import Rollout


def fixed_batch(responses=("3", "47", "86", "59"), advantages=(1.0, -1.0, 1.0, -1.0)) -> TrajectoryBatch:
    """Four samples of two prompts with fixed responses and per-sample advantages."""
    tok = build_tokenizer()
    prompts = [tok(p)["input_ids"] for p in ("1+2=", "1+2=", "30+4=", "30+4=")]
    ids = [tok(r)["input_ids"] + [tok.eos_token_id] for r in responses]
    batch = TrajectoryBatch.from_lists(
        prompts, ids, pad_id=tok.pad_token_id, token={"rollout_logprobs": [[0.0] * len(r) for r in ids]},
        sample={"truncated": [0.0] * 4, "policy_version": [0.0] * 4}, meta={"group_ids": ["a", "a", "b", "b"]},
    )  # fmt: skip
    batch.token["advantages"] = torch.tensor(advantages)[:, None] * batch.response_mask
    return batch


@pytest.fixture
def policy(tiny_config):
    cfg = tiny_config("algorithm.kl.coef=0", "learner.lr=1e-3")
    return cfg, prepare_policy(cfg)


def test_one_update_raises_positive_and_lowers_negative_advantage_samples(policy):
    cfg, path = policy
    learner = Learner(path, cfg)
    learner.setup()
    batch = fixed_batch()
    before = learner.logprobs(batch).sum(-1)
    metrics = learner.update(batch, step=0)
    after = learner.logprobs(batch).sum(-1)
    moved = after - before
    assert (moved[[0, 2]] > 0).all() and (moved[[1, 3]] < 0).all(), moved
    assert metrics["policy/lr"] == pytest.approx(1e-3)
    assert metrics["policy/ratio_mean"] == 1.0  # on-policy: π_old is the forward's own log-probs
    assert metrics["train/nonfinite_skipped"] == 0.0


def test_icepop_masks_tokens_whose_rollout_ratio_leaves_its_band_in_sync_mode(tiny_config):
    cfg = tiny_config("algorithm.kl.coef=0", "algorithm.rollout_correction=icepop")
    assert cfg.algorithm.tis_cap is None and cfg.trainer.mode == "sync"
    learner = Learner(prepare_policy(cfg), cfg)
    learner.setup()
    batch = fixed_batch()
    logprobs = learner.logprobs(batch)
    # rows 0 and 1: the engine agreed (ρ = 1, kept); rows 2 and 3: ρ = e³ ≈ 20 > 5 (dropped)
    batch.token["rollout_logprobs"] = logprobs - torch.tensor([0.0, 0.0, 3.0, 3.0])[:, None] * batch.response_mask
    metrics = learner.update(batch, step=0)
    mask = batch.response_mask
    kept = float(mask[:2].sum() / mask.sum())
    assert metrics["policy/is_weight_mean"] == pytest.approx(kept, rel=1e-4)


def test_the_reference_scores_like_the_initial_learner_and_gives_its_weights(policy):
    cfg, path = policy
    learner, reference = Learner(path, cfg), Reference(path, cfg)
    learner.setup()
    batch = fixed_batch()
    ref = reference.logprobs(batch)
    assert torch.allclose(ref, learner.logprobs(batch), atol=1e-5)
    assert ((ref < 0) == batch.response_mask.bool()).all()  # a log-prob on every response token, 0 on padding
    weights = reference.state_dict("float32").as_dict()
    assert set(weights) == set(learner.model.state_dict())


def test_the_critic_starts_at_zero_and_its_update_fits_the_returns(policy):
    cfg, path = policy
    critic = Critic(path, cfg)
    critic.setup()
    batch = fixed_batch()
    values = critic.values(batch)
    assert values.shape == batch.response_mask.shape and values.abs().max() == 0.0  # zero-initialised head
    batch.token["values"] = values
    batch.token["returns"] = torch.full_like(values, 0.5) * batch.response_mask
    losses = [critic.update(batch, step)["critic/loss"] for step in range(4)]
    assert losses[-1] < losses[0]
    assert ((critic.values(batch) - 0.5).abs() * batch.response_mask).sum() < (0.5 * batch.response_mask).sum()


def test_a_nonfinite_critic_update_is_skipped_and_leaves_the_weights(policy):
    cfg, path = policy
    critic = Critic(path, cfg)
    critic.setup()
    batch = fixed_batch()
    batch.token["values"] = critic.values(batch)
    batch.token["returns"] = torch.full_like(batch.response_mask, float("nan"))
    before = {k: v.clone() for k, v in critic.model.state_dict().items()}
    metrics = critic.update(batch, 0)
    assert metrics["critic/nonfinite_skipped"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in critic.model.state_dict().items())


def test_the_reward_role_scores_shapes_overlong_responses_and_summarises(tiny_config):
    cfg = tiny_config("algorithm=dapo", "rollout.max_new_tokens=5", "algorithm.overlong.buffer_len=2")
    reward = Reward(cfg)
    tok = build_tokenizer()
    records = make_problems(2, digits=1, seed=0)
    right, wrong = records[0].ground_truth, "99999"
    prompts = [tok(r.prompt)["input_ids"] for r in records]
    batch = TrajectoryBatch.from_lists(
        prompts, [tok(right)["input_ids"] + [tok.eos_token_id], tok(wrong)["input_ids"]], pad_id=tok.pad_token_id,
        token={"rollout_logprobs": [[0.0] * (len(right) + 1), [0.0] * 5]},
        sample={"truncated": [0.0, 1.0], "policy_version": [3.0, 3.0]},
        meta={"group_ids": ["g0", "g1"], "prompt_texts": [r.prompt for r in records],
              "response_texts": [right, wrong], "data_sources": ["arithmetic"] * 2,
              "ground_truths": [r.ground_truth for r in records], "extra_infos": [None, None]},
    )  # fmt: skip
    scored, summary = reward.score(batch)
    # L_max = 5, L_cache = 2: a 5-token response is at L_max, penalty −1; a short one gets none
    assert summary.raw_scores == [1.0, 0.0]
    assert summary.scores == [1.0, -1.0]
    assert summary.accuracy == [1.0, 0.0]
    assert summary.lengths == [len(right) + 1, 5.0] and summary.truncated == [0.0, 1.0]
    assert summary.policy_versions == [3.0, 3.0] and summary.errors == 0
    assert scored.sample["scores"].tolist() == [1.0, -1.0]


def test_prepare_update_puts_the_score_on_the_last_token_and_the_kl_in_the_reward(tiny_config):
    cfg = tiny_config("algorithm=reinforce_pp")  # k1 KL in the reward, β 0.01; whitened reward-to-go
    spec = AdvantageSpec.from_config(cfg)
    assert spec.estimator == "reinforce_pp" and spec.kl_in_reward and spec.params == {"gamma": 1.0}
    batch = fixed_batch(responses=("3", "47", "71", "5"))
    batch.sample["scores"] = torch.tensor([1.0, 0.0, 0.0, 1.0])
    mask = batch.response_mask  # lengths 2, 3, 3, 2
    old = -0.5 * mask
    ref = -0.7 * mask  # k1 = old − ref = 0.2 on every response token
    prepared, metrics = prepare_update(batch, [old[:2], old[2:]], [ref], None, spec, kl_coef=0.5)
    expected = torch.tensor([[-0.1, 0.9, 0.0], [-0.1, -0.1, -0.1], [-0.1, -0.1, -0.1], [-0.1, 0.9, 0.0]])
    assert torch.allclose(prepared.token["token_rewards"], expected)
    returns = torch.tensor([[0.8, 0.9, 0.0], [-0.3, -0.2, -0.1], [-0.3, -0.2, -0.1], [0.8, 0.9, 0.0]])
    assert torch.allclose(prepared.token["returns"], returns)
    valid = returns[mask.bool()]
    whitened = (returns - valid.mean()) / valid.std() * mask
    assert torch.allclose(prepared.token["advantages"], whitened, atol=1e-5)
    assert metrics["policy/kl_ref"] == pytest.approx(0.2)
    assert metrics["rollout/logprob_diff"] == pytest.approx(0.5)  # engine log-probs are 0 here
    assert metrics["advantages/mean"] == pytest.approx(0.0, abs=1e-6)


def test_prepare_update_gives_grpo_advantages_and_pvpo_baselines(tiny_config):
    batch = fixed_batch()
    batch.sample["scores"] = torch.tensor([1.0, 0.0, 1.0, 1.0])
    batch.meta["prompt_indices"] = [7, 7, 9, 9]
    grpo = AdvantageSpec.from_config(tiny_config("algorithm=grpo"))
    prepared, _ = prepare_update(batch, None, None, None, grpo, kl_coef=0.0)
    first = prepared.token["advantages"][:, 0]
    # group a: r = [1, 0], mean ½, Bessel std √½ → ±0.7071; group b: no spread → 0
    assert torch.allclose(first, torch.tensor([1 / math.sqrt(2), -1 / math.sqrt(2), 0.0, 0.0]), atol=1e-5)
    pvpo = AdvantageSpec.from_config(tiny_config("algorithm=pvpo"))
    assert "prompt_values" in pvpo.needs
    prepared, _ = prepare_update(batch, None, None, None, pvpo, kl_coef=0.0, prompt_values={7: 0.25, 9: 0.75})
    assert torch.allclose(prepared.token["advantages"][:, 0], torch.tensor([0.75, -0.25, 0.25, 0.25]))


def test_the_batch_role_assembles_the_kept_rows_in_order(tiny_config):
    role = BatchRole(tiny_config())
    a, b = fixed_batch(), fixed_batch(responses=("1", "2", "3", "4"))
    joined = role.assemble([(a, [1, 3]), (b, [0])])
    assert joined.meta["group_ids"] == ["a", "b", "a"]
    assert torch.equal(joined.select([0, 1]).response_ids, assemble([(a, [1, 3])]).response_ids)
    assert set(role.take_busy()["seconds"]) == {"assemble"}


def test_the_rollout_role_generates_groups_with_engine_logprobs_and_takes_new_weights(tiny_config):
    cfg = tiny_config("rollout=hf", "rollout.max_new_tokens=4")
    path = prepare_policy(cfg)
    rollout = Rollout(path, cfg.rollout, max_model_len=64, seed=0)
    learner = Learner(path, cfg)
    learner.setup()
    records = make_problems(2, digits=1, seed=0)
    batch = rollout.generate(records, ["x", "y"], n=3, seed=0)
    assert batch.meta["group_ids"] == ["x"] * 3 + ["y"] * 3
    assert batch.meta["prompt_indices"] == [records[0].index] * 3 + [records[1].index] * 3
    lengths = batch.response_lengths
    assert ((lengths == 4) == batch.sample["truncated"].bool()).all()  # truncated = cut at max_new_tokens
    # the engine's sampled log-probs are the learner's, teacher-forced
    assert torch.allclose(batch.token["rollout_logprobs"], learner.logprobs(batch), atol=1e-4)
    weights = learner.state_dict("float32")
    weights.buffer[:] = 0
    assert rollout.load_weights(weights, 5) == 5
    after = rollout.generate(records[:1], ["z"], n=1, seed=0)
    assert after.sample["policy_version"].tolist() == [5.0]


class DeviceCheckingModel(torch.nn.Module):
    """Stands in for a model on a GPU: its first parameter is on the ``meta`` device, and it raises, as
    CUDA does, unless every input tensor is there too. It computes its logits on the CPU (a learnable
    row, the same for every position) so that the roles' code around it runs as usual."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.empty(1, device="meta"))
        self.row = torch.nn.Parameter(torch.zeros(width))
        self.calls = 0

    def forward(self, input_ids, attention_mask, position_ids, use_cache=False, logits_to_keep=0):
        for name, tensor in (
            ("input_ids", input_ids),
            ("attention_mask", attention_mask),
            ("position_ids", position_ids),
        ):
            if tensor.device.type != "meta":
                raise RuntimeError(f"Expected all tensors to be on the same device, but {name} is on {tensor.device}")
        self.calls += 1
        rows, length = input_ids.shape
        keep = logits_to_keep or length
        return type("Output", (), {"logits": self.row.expand(rows, keep, -1)})()


def test_every_roles_forward_moves_the_batch_to_the_models_device(policy):
    cfg, path = policy
    batch = fixed_batch()
    learner, reference, critic = Learner(path, cfg), Reference(path, cfg), Critic(path, cfg)
    learner.setup()
    critic.setup()
    vocab = len(build_tokenizer())
    learner.model, reference.model, critic.model = (DeviceCheckingModel(w) for w in (vocab, vocab, 1))
    assert learner.logprobs(batch).shape == batch.response_mask.shape
    assert reference.logprobs(batch).shape == batch.response_mask.shape
    values = critic.values(batch)
    assert learner.update(batch, step=0)["policy/grad_norm"] >= 0
    batch.token.update(values=values, returns=values + batch.response_mask)
    critic.update(batch, step=0)
    assert learner.model.calls >= 2 and reference.model.calls >= 1 and critic.model.calls >= 2


def test_the_entropy_keeps_a_graph_only_when_a_loss_uses_it(policy):
    from distrl.models.forward import response_logprobs

    cfg, path = policy
    learner = Learner(path, cfg)
    learner.setup()
    batch = fixed_batch()
    logprobs, metric_only = response_logprobs(learner.model, batch, with_entropy=True)
    assert logprobs.requires_grad and not metric_only.requires_grad
    _, in_loss = response_logprobs(learner.model, batch, with_entropy=True, entropy_grad=True)
    assert in_loss.requires_grad and torch.allclose(in_loss.detach(), metric_only)


def changed_fraction(before: dict[str, torch.Tensor], model: torch.nn.Module) -> float:
    after = model.state_dict()
    changed = sum(int((after[k].float() != v.float()).sum()) for k, v in before.items())
    return changed / sum(v.numel() for v in before.values())


def test_bf16_compute_with_float32_masters_trains_at_a_real_models_lr(tiny_config):
    from distrl.models.forward import response_logprobs
    from distrl.models.loading import load_policy

    cfg = tiny_config("learner.precision=bf16", "learner.lr=1e-6", "algorithm.kl.coef=0")
    path = prepare_policy(cfg)
    learner = Learner(path, cfg)
    learner.setup()
    seen = []
    learner.model.lm_head.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    learner.update(fixed_batch(), step=0)
    assert seen and set(seen) == {torch.bfloat16}  # the matmuls ran in bf16
    assert all(p.dtype == torch.float32 for p in learner.model.parameters())  # the master weights did not
    assert all(s["exp_avg"].dtype == torch.float32 for s in learner.optimizer.state.values())
    mixed = changed_fraction(before, learner.model)
    # the old setting, pure bf16 (model.dtype=bfloat16 weights under AdamW), on the same loss and lr
    model = load_policy(path, "bfloat16")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = fixed_batch()
    logprobs, _ = response_logprobs(model, batch)
    (-(logprobs.float() * batch.token["advantages"]).sum() / batch.response_mask.sum()).backward()
    optimizer.step()
    pure = changed_fraction(before, model)
    assert mixed > 0.5 and pure < 0.1, (mixed, pure)


def test_gradient_checkpointing_gives_the_same_update(tiny_config):
    path = prepare_policy(tiny_config())
    results = {}
    for on in (False, True):
        cfg = tiny_config("algorithm.kl.coef=0", "learner.lr=1e-3", f"learner.gradient_checkpointing={str(on).lower()}")
        learner = Learner(path, cfg)
        learner.setup()
        assert learner.model.is_gradient_checkpointing is on
        results[on] = learner.update(fixed_batch(), step=0)["policy/grad_norm"]
    assert results[True] == pytest.approx(results[False], rel=1e-5)
    assert tiny_config().gradient_checkpointing is False
    assert compose_config(["model=hf", "model.path=/models/qwen"]).gradient_checkpointing is True


class _RunsCode:
    """Pickles as a call to ``Path.touch(marker)``: what a crafted checkpoint file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_file_is_refused_without_running_its_code(policy, tmp_path):
    cfg, path = policy
    marker = tmp_path / "ran"
    crafted = tmp_path / "optimizer.pt"
    torch.save({"optimizer": _RunsCode(marker), "scheduler": {}}, crafted)
    with pytest.raises(pickle.UnpicklingError):
        Learner(path, cfg).setup(optimizer_state=str(crafted))
    assert not marker.exists()


def test_pvpo_ground_truth_injection_makes_the_last_sample_of_a_group_the_answer(tiny_config):
    cfg = tiny_config("rollout=hf", "rollout.max_new_tokens=6")
    path = prepare_policy(cfg)
    rollout = Rollout(path, cfg.rollout, max_model_len=64, seed=0)
    records = make_problems(2, digits=2, seed=3)
    batch = rollout.generate(records, ["x", "y"], n=3, seed=0, inject=frozenset({records[1].index}))
    answer = batch.meta["response_texts"][5]
    assert answer == records[1].ground_truth  # the injected sample, decoded
    expected = [*rollout.tokenizer(records[1].ground_truth, add_special_tokens=False)["input_ids"],
                rollout.tokenizer.eos_token_id]  # fmt: skip
    assert batch.response_ids[5, : int(batch.response_lengths[5])].tolist() == expected
    teacher = rollout.teacher_logprobs(batch)
    assert torch.allclose(batch.token["rollout_logprobs"][5], teacher[5], atol=1e-5)  # its rollout log-probs
    not_injected = rollout.generate(records, ["x", "y"], n=3, seed=0)
    assert torch.equal(not_injected.response_ids[:5], batch.response_ids[:5])  # the other samples as sampled
    _, summary = Reward(cfg).score(batch)
    assert summary.raw_scores[5] == 1.0
