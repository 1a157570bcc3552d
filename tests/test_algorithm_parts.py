"""KL estimators, aggregation, value loss, DAPO shaping, entropy helpers (docs/algorithms.md §2–§7)."""

import subprocess
import sys

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from worked import GROUP, NEW, mask, padded, per_sequence, unpad

from distrl.algorithms import (
    adaptive_kl_coef,
    aggregate_loss,
    entropy_from_logits,
    group_filter,
    kl_penalty,
    logprobs_from_logits,
    overlong_penalty,
    policy_loss,
    token_covariance,
    value_loss,
)


def test_algorithms_import_torch_only():
    code = "import sys, distrl.algorithms; bad = {'ray', 'vllm', 'transformers'} & set(sys.modules); assert not bad"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_kl_estimators_worked_example():
    lp = torch.tensor([-0.3, -1.2, -0.2], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-0.6, -0.9, -0.3], dtype=torch.float64)
    assert kl_penalty(lp, ref, "k1").tolist() == pytest.approx([0.3, -0.3, 0.1])
    assert kl_penalty(lp, ref, "k2").tolist() == pytest.approx([0.045, 0.045, 0.005])
    k3 = kl_penalty(lp, ref, "k3")
    assert k3.tolist() == pytest.approx([0.0408, 0.0499, 0.0048], abs=1e-4)
    (g,) = torch.autograd.grad(k3.sum(), lp)
    assert g.tolist() == pytest.approx([0.2592, -0.3499, 0.0952], abs=1e-4)
    assert kl_penalty(torch.tensor([-3.0]), torch.tensor([0.0]), "k3").item() == pytest.approx(16.0855, abs=1e-4)


def test_k3_straight_through_has_k3_value_and_k2_gradient():
    lp = torch.tensor([-0.3, -1.2, -0.2], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-0.6, -0.9, -0.3], dtype=torch.float64)
    st_kl = kl_penalty(lp, ref, "k3+")
    assert st_kl.tolist() == pytest.approx(kl_penalty(lp, ref, "k3").tolist())
    (g,) = torch.autograd.grad(st_kl.sum(), lp)
    assert g.tolist() == pytest.approx((lp - ref).tolist())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-30, 30), min_size=1, max_size=20),
    st.lists(st.floats(-30, 30), min_size=1, max_size=20),
)
def test_k3_is_never_negative(a, b):
    n = min(len(a), len(b))
    x, y = torch.tensor(a[:n], dtype=torch.float64), torch.tensor(b[:n], dtype=torch.float64)
    assert torch.all(kl_penalty(x, y, "k3") >= 0)


def test_kl_unknown_estimator():
    with pytest.raises(KeyError, match="valid names: k1, k2, k3, k3\\+"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k4")


def test_adaptive_kl_controller():
    assert adaptive_kl_coef(0.1, 0.2, target=0.1, horizon=10_000, n_steps=1000) == pytest.approx(0.102)
    assert adaptive_kl_coef(0.1, 0.05, target=0.1, horizon=10_000, n_steps=1000) == pytest.approx(0.098)


def test_aggregation_modes_on_ragged_mask():
    loss = per_sequence([1.0, 2.0, 3.0, 4.0]) + padded([[0.0] * 4] * 4) * 0 + 100 * (1 - mask())
    m = mask()
    assert aggregate_loss(loss, m, "token-mean").item() == pytest.approx((3 * 1 + 2 * 2 + 4 * 3 + 4) / 10)
    assert aggregate_loss(loss, m, "seq-mean-token-mean").item() == pytest.approx(2.5)
    assert aggregate_loss(loss, m, "seq-mean-token-sum").item() == pytest.approx((3 + 4 + 12 + 4) / 4)
    assert aggregate_loss(loss, m, "seq-mean-token-sum-norm").item() == pytest.approx(23 / 16)
    assert aggregate_loss(loss, m, "seq-mean-token-sum-norm", max_len=10).item() == pytest.approx(23 / 40)
    with pytest.raises(KeyError, match="token-mean"):
        aggregate_loss(loss, m, "mean")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=6), st.integers(0, 10_000))
def test_padding_never_changes_aggregates(lengths, seed):
    width = max(lengths)
    m = torch.tensor([[1.0] * n + [0.0] * (width - n) for n in lengths], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    loss = torch.randn(m.shape, generator=gen, dtype=torch.float64)
    noisy = torch.where(m.bool(), loss, torch.randn(m.shape, generator=gen, dtype=torch.float64) * 1e6)
    wider_m = torch.cat([m, torch.zeros(len(lengths), 3, dtype=torch.float64)], 1)
    wider = torch.cat([noisy, torch.full((len(lengths), 3), 7.0, dtype=torch.float64)], 1)
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        assert aggregate_loss(noisy, m, mode).item() == pytest.approx(aggregate_loss(wider, wider_m, mode).item())


@pytest.mark.parametrize(("clip", "expected"), [(0.2, 0.04696), (0.5, 0.03623)])
def test_clipped_value_loss(clip, expected):
    one = torch.ones(1, 3, dtype=torch.float64)
    loss, metrics = value_loss(
        values=torch.tensor([[0.9, 0.55, 0.85]], dtype=torch.float64),
        old_values=torch.tensor([[0.5, 0.6, 0.8]], dtype=torch.float64),
        returns=torch.tensor([[0.9610, 0.9905, 0.9900]], dtype=torch.float64),
        response_mask=one,
        clip=clip,
    )
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert metrics["critic/vf_clip_frac"].item() == pytest.approx(1 / 3 if clip == 0.2 else 0.0)


def test_overlong_penalty():
    lengths = torch.tensor([16000, 16384, 18432, 20480, 20481])
    got = overlong_penalty(lengths, max_len=20480, buffer_len=4096)
    assert got.tolist() == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])
    toy = overlong_penalty(torch.tensor([3, 2, 4, 1]), max_len=4, buffer_len=2)
    assert toy.tolist() == pytest.approx([-0.5, 0.0, -1.0, 0.0])
    assert overlong_penalty(torch.tensor([5]), max_len=4, buffer_len=2, factor=0.5).item() == -0.5
    with pytest.raises(ValueError, match="buffer_len"):
        overlong_penalty(lengths, max_len=10, buffer_len=20)


def test_overlong_shaped_grpo_advantage():
    from distrl.algorithms import compute_advantages

    shaped = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64) + overlong_penalty(  # DAPO: R = ±1
        torch.tensor([3, 2, 4, 1]), max_len=4, buffer_len=2
    )
    rewards = torch.zeros(4, 1, dtype=torch.float64)
    rewards[:, 0] = shaped
    a, _ = compute_advantages("grpo", token_rewards=rewards, response_mask=torch.ones(4, 1), group_ids=GROUP)
    assert a[:, 0].tolist() == pytest.approx([0.6355, -0.4539, -1.1802, 0.9986], abs=1e-4)


def test_dynamic_sampling_filter():
    scores = torch.tensor([1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0], dtype=torch.float64)
    ids = [g for g in "abcd" for _ in range(4)]
    keep = group_filter(scores, ids)
    assert keep.tolist() == [False] * 4 + [True] * 4 + [False] * 4 + [True] * 4
    assert group_filter(torch.tensor([0.0, 1.0]), ["x", "y"]).tolist() == [False, False]


def test_token_covariance_worked_example():
    a = per_sequence([0.866025, -0.866025, -0.866025, 0.866025])
    cov = token_covariance(padded(NEW), a, mask())
    want = [[0.4884, -0.4469, 0.5924], [0.2979, 0.0901], [-0.1871, 0.6443, -0.4642, 0.1593], [0.1767]]
    for got, w in zip(unpad(cov), want, strict=True):
        assert got == pytest.approx(w, abs=1e-4)
    assert torch.all(cov[mask() == 0] == 0)


def test_entropy_and_logprobs_from_logits_match_dense():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 50, generator=gen)
    tokens = torch.randint(0, 50, (3, 7), generator=gen)
    dense_logp = torch.log_softmax(logits, -1)
    dense_h = -(dense_logp.exp() * dense_logp).sum(-1)
    assert torch.allclose(entropy_from_logits(logits, chunk=4), dense_h, atol=1e-5)
    assert torch.allclose(
        logprobs_from_logits(logits, tokens, chunk=5),
        dense_logp.gather(-1, tokens[..., None]).squeeze(-1),
        atol=1e-5,
    )
    uniform = torch.zeros(2, 8)
    assert entropy_from_logits(uniform).tolist() == pytest.approx([torch.log(torch.tensor(8.0)).item()] * 2)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.05, 5.0), st.floats(-2, 2), st.floats(0.05, 0.5), st.floats(0.05, 0.5))
def test_clip_fraction_counts_only_binding_clips(w, a, low, high):
    assume(abs(w - (1 - low)) > 1e-9 and abs(w - (1 + high)) > 1e-9)
    assume(a == 0 or abs(a) > 1e-300)  # r·A and clip(r)·A underflow to the same subnormal: no clip to see
    lp = torch.tensor([[float(torch.log(torch.tensor(w)))]], dtype=torch.float64, requires_grad=True)
    loss, m = policy_loss(
        "ppo",
        logprobs=lp,
        old_logprobs=torch.zeros(1, 1, dtype=torch.float64),
        advantages=torch.tensor([[a]], dtype=torch.float64),
        response_mask=torch.ones(1, 1),
        clip_low=low,
        clip_high=high,
    )
    (g,) = torch.autograd.grad(loss, lp)
    binds = (a > 0 and w > 1 + high) or (a < 0 and w < 1 - low)
    assert m["policy/clip_frac"].item() == float(binds)
    if abs(a) > 1e-12:  # (a subnormal advantage's gradient underflows to 0 whether or not the clip binds)
        assert (g.item() == 0) == binds


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_micro_batches_with_batch_denominators_sum_to_the_batch_loss(mode):
    gen = torch.Generator().manual_seed(1)
    loss = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    m = (torch.arange(5)[None, :] < torch.tensor([5, 1, 3, 2, 4, 5])[:, None]).double()
    whole = aggregate_loss(loss, m, mode, max_len=5)
    parts = sum(
        aggregate_loss(loss[i : i + 2], m[i : i + 2], mode, max_len=5, num_seqs=6, num_tokens=m.sum().item())
        for i in (0, 2, 4)
    )
    assert parts.item() == pytest.approx(whole.item())
