"""Policy losses against the worked numbers of docs/algorithms.md (§2, §4–§7, §9) and their gradients."""

import pytest
import torch
from worked import A_GRPO, NEW, OLD, REF, ROLL, mask, padded, per_sequence, unpad

from distrl.algorithms import aggregate_loss, kl_penalty, policy_loss

SIGNS = [1.0, -1.0, -1.0, 1.0]


def inputs(advantage=A_GRPO):
    new = padded(NEW).requires_grad_(True)
    return {
        "logprobs": new,
        "old_logprobs": padded(OLD),
        "advantages": per_sequence([s * advantage for s in SIGNS]),
        "response_mask": mask(),
    }


def grads(loss, x):
    (g,) = torch.autograd.grad(loss, x)
    return unpad(g)


def assert_rows(got, want, abs=1e-4):
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=abs)


def test_grpo_paper_objective_with_k3_loss():
    x = inputs()
    pg, metrics = policy_loss("ppo", **x, agg="seq-mean-token-mean")
    kl = aggregate_loss(kl_penalty(x["logprobs"], padded(REF), "k3"), mask(), "seq-mean-token-mean")
    assert pg.item() == pytest.approx(-0.022428, abs=1e-6)
    assert (0.04 * kl).item() == pytest.approx(0.001544, abs=1e-6)
    total = pg + 0.04 * kl
    assert total.item() == pytest.approx(-0.020884, abs=1e-6)
    assert_rows(
        grads(total, x["logprobs"]),
        [[0.0009, -0.0603, -0.0719], [0.1470, 0.0881], [0.0490, 0.0740, 0.0544, 0.0434], [0.0033]],
    )
    assert metrics["policy/clip_frac"].item() == pytest.approx(0.2)
    assert metrics["policy/clip_frac_high"].item() == pytest.approx(0.2)
    assert metrics["policy/clip_frac_low"].item() == 0.0


def test_dapo_clip_higher_token_mean():
    x = inputs()
    loss, metrics = policy_loss("ppo", **x, clip_low=0.2, clip_high=0.28, agg="token-mean")
    assert loss.item() == pytest.approx(0.166440, abs=1e-6)
    assert metrics["policy/clip_frac"].item() == pytest.approx(0.1)  # only o4 binds at 1.28
    assert_rows(
        grads(loss, x["logprobs"]),
        [[-0.1058, -0.0709, -0.0866], [0.1169, 0.0709], [0.0784, 0.1169, 0.0866, 0.0709], [0.0]],
    )


def test_dr_grpo_constant_denominator():
    x = inputs(advantage=0.5)
    loss, _ = policy_loss("ppo", **x, agg="seq-mean-token-sum-norm", max_len=4)
    assert loss.item() == pytest.approx(0.063228, abs=1e-6)


def test_dual_clip_caps_negative_advantage_loss():
    def one(w, a):
        lp = torch.tensor([[float(torch.log(torch.tensor(w)))]])
        loss, m = policy_loss(
            "ppo",
            logprobs=lp,
            old_logprobs=torch.zeros(1, 1),
            advantages=torch.tensor([[a]]),
            response_mask=torch.ones(1, 1),
            clip_c=3.0,
        )
        return loss.item(), m

    assert one(4.0, -1.0)[0] == pytest.approx(3.0)
    assert one(4.0, -1.0)[1]["policy/dual_clip_frac"].item() == 1.0
    assert one(2.0, -1.0)[0] == pytest.approx(2.0)
    assert one(4.0, 1.0)[0] == pytest.approx(-1.2)


def test_gspo_sequence_ratio_and_equal_token_weights():
    x = inputs()
    loss, metrics = policy_loss("gspo", **x, clip_low=3e-4, clip_high=4e-4, agg="seq-mean-token-mean")
    assert loss.item() == pytest.approx(0.011014, abs=1e-6)
    g = grads(loss, x["logprobs"])
    want = [-0.07217, 0.11380, 0.05413, 0.0]
    for row, w in zip(g, want, strict=True):
        assert row == pytest.approx([w] * len(row), abs=1e-5)  # every token of a response weighs the same
    assert metrics["policy/clip_frac"].item() == pytest.approx(0.1)


def test_gspo_token_equals_gspo_for_sequence_advantages():
    x, y = inputs(), inputs()
    kw = {"clip_low": 3e-4, "clip_high": 4e-4, "agg": "seq-mean-token-mean"}
    loss_seq, m_seq = policy_loss("gspo", **x, **kw)
    loss_tok, m_tok = policy_loss("gspo_token", **y, **kw)
    assert loss_tok.item() == pytest.approx(loss_seq.item(), abs=1e-12)
    assert_rows(grads(loss_tok, y["logprobs"]), grads(loss_seq, x["logprobs"]), abs=1e-12)
    assert m_tok["policy/clip_frac"].item() == m_seq["policy/clip_frac"].item()


def test_gspo_token_allows_per_token_advantages():
    x = inputs()
    x["advantages"] = x["advantages"] * torch.linspace(0.5, 1.5, 4, dtype=torch.float64)
    loss, _ = policy_loss("gspo_token", **x, clip_low=0.2, clip_high=0.2, agg="seq-mean-token-mean")
    g = grads(loss, x["logprobs"])
    assert g[0][0] != pytest.approx(g[0][2])


def finite_difference(fn, x, h=1e-6):
    base = x.detach().clone()
    out = torch.zeros_like(base)
    for idx in mask().nonzero().tolist():
        plus, minus = base.clone(), base.clone()
        plus[tuple(idx)] += h
        minus[tuple(idx)] -= h
        out[tuple(idx)] = (fn(plus) - fn(minus)) / (2 * h)
    return out


@pytest.mark.parametrize(
    ("mode", "agg", "clip"),
    [
        ("ppo", "token-mean", (0.2, 0.28)),
        ("ppo", "seq-mean-token-mean", (0.2, 0.2)),
        ("gspo", "seq-mean-token-mean", (3e-4, 4e-4)),
        ("gspo_token", "seq-mean-token-sum", (0.2, 0.2)),
        ("kl_cov", "token-mean", (0.2, 0.2)),
    ],
)
def test_gradients_match_finite_differences(mode, agg, clip):
    x = inputs()
    params = {"kl_cov_ratio": 0.2} if mode == "kl_cov" else {}

    def value(lp):
        return policy_loss(mode, **{**x, "logprobs": lp}, clip_low=clip[0], clip_high=clip[1], agg=agg, **params)[0]

    loss = value(x["logprobs"])
    (auto,) = torch.autograd.grad(loss, x["logprobs"])
    numeric = finite_difference(lambda lp: value(lp).item(), x["logprobs"])
    assert torch.allclose(auto, numeric, atol=1e-6)


def test_clip_cov_detaches_one_eligible_token():
    kw = {
        "clip_low": 1.0,
        "clip_high": 1.0,
        "agg": "token-mean",
        "clip_cov_ratio": 0.1,
        "clip_cov_lb": 0.5,
        "clip_cov_ub": 5.0,
    }
    seen = {}
    for seed in range(20):
        x = inputs()
        gen = torch.Generator().manual_seed(seed)
        loss, metrics = policy_loss("clip_cov", **x, generator=gen, **kw)
        g = torch.autograd.grad(loss, x["logprobs"])[0]
        zeroed = tuple(tuple(i) for i in ((g == 0) & (mask() == 1)).nonzero().tolist())
        seen[zeroed] = loss.item()
        assert metrics["policy/clip_cov_frac"].item() == pytest.approx(0.1)
    # eligible tokens are o1t3 and o3t2; one of them is picked at random
    assert seen == {((0, 2),): pytest.approx(0.2470, abs=1e-4), ((2, 1),): pytest.approx(0.0435, abs=1e-4)}
    unpicked, _ = policy_loss("ppo", **inputs(), clip_low=1.0, clip_high=1.0, agg="token-mean")
    assert unpicked.item() == pytest.approx(0.1604, abs=1e-4)


def test_clip_cov_with_paper_bounds_picks_nothing_here():
    x = inputs()
    loss, metrics = policy_loss("clip_cov", **x, clip_low=0.2, clip_high=0.28)
    ref, _ = policy_loss("ppo", **inputs(), clip_low=0.2, clip_high=0.28)
    assert metrics["policy/clip_cov_frac"].item() == 0.0
    assert loss.item() == pytest.approx(ref.item())


def test_kl_cov_penalizes_top_covariance_tokens():
    x = inputs()
    loss, metrics = policy_loss("kl_cov", **x, kl_cov_ratio=0.2, kl_cov_coef=1.0, agg="token-mean")
    assert loss.item() == pytest.approx(0.19039, abs=1e-5)
    assert metrics["policy/kl_cov_frac"].item() == pytest.approx(0.2)
    g = grads(loss, x["logprobs"])
    assert g[2][1] == pytest.approx((1.169 + 1) / 10, abs=1e-3)  # o3t2 picked, ℓ^θ > ℓ^old
    assert metrics["policy/clip_frac"].item() == 0.0


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, 0.175217),
        ({"tis_cap": 2.0}, 0.296774),
        ({"rollout_correction": "icepop"}, 0.156171),
    ],
)
def test_rollout_corrections(kw, expected):
    x = inputs(advantage=0.866)  # §9 rounds Â to 0.866
    loss, metrics = policy_loss("ppo", **x, rollout_logprobs=padded(ROLL), agg="token-mean", **kw)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert ("policy/is_weight_mean" in metrics) == bool(kw)


def test_icepop_sample_level():
    loss, _ = policy_loss(
        "ppo",
        **inputs(advantage=0.866),
        rollout_logprobs=padded(ROLL),
        rollout_correction="icepop",
        agg="seq-mean-token-mean",
    )
    assert loss.item() == pytest.approx(-0.107782, abs=1e-6)


def test_metrics_ratio_and_approx_kl():
    _, m = policy_loss("ppo", **inputs())
    w = torch.exp(padded(NEW) - padded(OLD))[mask().bool()]
    assert m["policy/ratio_mean"].item() == pytest.approx(w.mean().item())
    assert m["policy/ratio_max"].item() == pytest.approx(w.max().item())
    assert m["policy/approx_kl"].item() == pytest.approx((w - 1 - w.log()).mean().item())
    assert m["policy/approx_kl"].item() > 0


def test_unknown_policy_loss_lists_names():
    with pytest.raises(KeyError, match="valid names: clip_cov, gspo, gspo_token, kl_cov, ppo"):
        policy_loss("nope", **inputs())


def test_cov_methods_select_at_least_cov_min_tokens():
    """The papers' ratios select ⌊r·N⌋ tokens, one at this size; cov_min_tokens keeps a floor."""
    valid = int(mask().sum())
    for floor, picked in ((1, 1), (3, 3), (10 * valid, valid)):
        _, metrics = policy_loss("kl_cov", **inputs(), agg="token-mean", kl_cov_ratio=2e-3, cov_min_tokens=floor)
        assert metrics["policy/kl_cov_frac"].item() == pytest.approx(picked / valid)
