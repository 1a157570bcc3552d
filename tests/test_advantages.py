"""Advantage estimators against the worked numbers of docs/algorithms.md (§1, §2, §4, §8)."""

import pytest
import torch
from worked import GROUP, LENGTHS, NEW, OLD, REF, mask, padded, per_sequence, terminal_rewards, unpad

from distrl.algorithms import ADVANTAGE_ESTIMATORS, UnknownNameError, compute_advantages


def adv(estimator, **kw):
    kw.setdefault("token_rewards", terminal_rewards())
    kw.setdefault("response_mask", mask())
    return compute_advantages(estimator, **kw)


def first_tokens(x):
    return [row[0] for row in unpad(x)]


def test_grpo_uses_unbiased_std_and_broadcasts():
    a, ret = adv("grpo", group_ids=GROUP)
    assert first_tokens(a) == pytest.approx([0.866025, -0.866025, -0.866025, 0.866025], abs=2e-6)
    assert torch.equal(a, ret)
    assert torch.all(a[mask() == 0] == 0)
    assert unpad(a)[2] == pytest.approx([-0.866025] * 4, abs=2e-6)


def test_grpo_trl_epsilon_and_no_std():
    a, _ = adv("grpo", group_ids=GROUP, std_eps=1e-4)
    assert a[0, 0].item() == pytest.approx(0.8659, abs=1e-4)
    a, _ = adv("grpo", group_ids=GROUP, norm_by_std=False)
    assert first_tokens(a) == pytest.approx([0.5, -0.5, -0.5, 0.5])


def test_group_of_one_gets_zero_and_groups_are_independent():
    a, _ = adv("grpo", group_ids=["a", "b", "b", "c"])
    assert first_tokens(a)[0] == 0.0 and first_tokens(a)[3] == 0.0
    assert first_tokens(a)[1] == 0.0  # group b is uniform: both rewards 0
    rewards = terminal_rewards([1.0, 1.0, 0.0, 5.0])
    a, _ = adv("grpo", token_rewards=rewards, group_ids=["a", "b", "b", "c"])
    assert first_tokens(a)[1:3] == pytest.approx([0.7071061, -0.7071061], abs=1e-6)


def test_dr_grpo_and_rloo():
    a, _ = adv("dr_grpo", group_ids=GROUP)
    assert first_tokens(a) == pytest.approx([0.5, -0.5, -0.5, 0.5])
    a, _ = adv("rloo", group_ids=GROUP)
    assert first_tokens(a) == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    a, _ = adv("rloo", group_ids=["a", "b", "b", "b"])
    assert first_tokens(a)[0] == 0.0


def test_pvpo_static_baseline():
    baseline = torch.full((4,), 0.25, dtype=torch.float64)
    a, _ = adv("pvpo", baseline=baseline)
    assert first_tokens(a) == pytest.approx([0.75, -0.25, -0.25, 0.75])
    uniform = terminal_rewards([1.0] * 4)
    a, _ = adv("pvpo", token_rewards=uniform, baseline=baseline)
    assert first_tokens(a) == pytest.approx([0.75] * 4)  # GRPO would give 0 here


def test_reinforce_reward_to_go():
    a, ret = adv("reinforce", gamma=0.9)
    assert torch.equal(a, ret)
    assert unpad(ret)[0] == pytest.approx([0.81, 0.9, 1.0])
    centered = a[0, :3] - 0.5
    assert centered.tolist() == pytest.approx([0.31, 0.40, 0.50])
    assert -(centered * padded(NEW)[0, :3]).sum().item() == pytest.approx(0.673)


def kl_shaped_rewards(beta=0.1):
    kl = (padded(OLD) - padded(REF)) * mask()
    return terminal_rewards() - beta * kl


def test_reinforce_pp_whitening_matches_verl():
    a, ret = adv("reinforce_pp", token_rewards=kl_shaped_rewards())
    assert unpad(ret) == [
        pytest.approx(r, abs=1e-9) for r in ([0.99, 1.0, 0.99], [0.0, -0.01], [-0.03, -0.02, 0.0, 0.01], [0.99])
    ]
    expected = [[1.1568, 1.1761, 1.1568], [-0.7583, -0.7776], [-0.8163, -0.7970, -0.7583, -0.7389], [1.1568]]
    for got, want in zip(unpad(a), expected, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


def test_reinforce_pp_baseline():
    a, _ = adv("reinforce_pp_baseline", group_ids=GROUP)
    assert first_tokens(a) == pytest.approx([1.1619, -0.7746, -0.7746, 1.1619], abs=1e-4)


@pytest.mark.parametrize(
    ("gamma", "lam", "expected"),
    [
        (1.0, 0.95, [0.4610, 0.3905, 0.1900]),
        (1.0, 1.0, [0.49, 0.40, 0.19]),
        (0.99, 0.95, [0.4420, 0.3807, 0.19]),
    ],
)
def test_gae_worked_example(gamma, lam, expected):
    rewards = kl_shaped_rewards()[:1, :3]
    values = torch.tensor([[0.5, 0.6, 0.8]], dtype=torch.float64)
    a, ret = compute_advantages(
        "gae",
        token_rewards=rewards,
        response_mask=torch.ones(1, 3),
        values=values,
        gamma=gamma,
        lam=lam,
        whiten=False,
    )
    assert a[0].tolist() == pytest.approx(expected, abs=1e-4)
    assert ret[0].tolist() == pytest.approx((a + values)[0].tolist())
    if (gamma, lam) == (1.0, 0.95):
        assert ret[0].tolist() == pytest.approx([0.9610, 0.9905, 0.9900], abs=1e-4)


def test_gae_padding_and_whitening():
    values = per_sequence([0.5, 0.4, 0.3, 0.2])
    a, ret = adv("gae", values=values, lam=0.95)
    valid = mask().bool()
    assert torch.all(a[~valid] == 0) and torch.all(ret[~valid] == 0)
    assert a[valid].mean().item() == pytest.approx(0.0, abs=1e-9)
    assert a[valid].std().item() == pytest.approx(1.0, abs=1e-6)
    raw, ret2 = adv("gae", values=values, lam=0.95, whiten=False)
    # the last token of each response: δ = r − V (nothing after it)
    for i, n in enumerate(LENGTHS):
        assert raw[i, n - 1].item() == pytest.approx([1.0, 0.0, 0.0, 1.0][i] - [0.5, 0.4, 0.3, 0.2][i])
    assert torch.allclose(ret, ret2)


def test_missing_inputs_and_unknown_name():
    with pytest.raises(ValueError, match="group_ids"):
        adv("grpo")
    with pytest.raises(ValueError, match="critic"):
        adv("gae")
    with pytest.raises(ValueError, match="baseline"):
        adv("pvpo")
    with pytest.raises(UnknownNameError, match=r"valid names: .*grpo"):
        adv("grpoo")
    assert {"gae", "grpo", "dr_grpo", "rloo", "reinforce", "reinforce_pp", "pvpo"} <= set(ADVANTAGE_ESTIMATORS.names())
