"""TrajectoryBatch: padding, selection, concatenation and sharding keep every sample intact."""

import torch

from distrl.data.batch import TrajectoryBatch, shard_bounds


def make(prompts, responses, pad=0):
    return TrajectoryBatch.from_lists(
        prompts,
        responses,
        pad_id=pad,
        token={"rollout_logprobs": [[-float(t) for t in r] for r in responses]},
        sample={"scores": [float(i) for i in range(len(prompts))]},
        meta={"group_ids": [f"g{i}" for i in range(len(prompts))]},
    )


def rows(batch):
    out = []
    for i in range(len(batch)):
        p = batch.prompt_ids[i][batch.prompt_mask[i].bool()].tolist()
        r = batch.response_ids[i][batch.response_mask[i].bool()].tolist()
        lp = batch.token["rollout_logprobs"][i][batch.response_mask[i].bool()].tolist()
        out.append((p, r, lp, batch.sample["scores"][i].item(), batch.meta["group_ids"][i]))
    return out


def test_left_padded_prompts_and_right_padded_responses():
    b = make([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], pad=0)
    assert b.prompt_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert b.response_ids.tolist() == [[1, 2, 0], [3, 4, 9]]
    assert b.input_ids[:, b.prompt_len].tolist() == [1, 3]  # every response starts at column P
    assert b.position_ids[1].tolist() == [0, 0, 0, 1, 2, 3]
    assert b.response_lengths.tolist() == [2.0, 3.0]


def test_select_concat_and_shard_roundtrip():
    a = make([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]])
    b = make([[1, 2, 3, 4, 5]], [[7]])
    both = TrajectoryBatch.concat([a, b])
    assert rows(both) == rows(a) + rows(b)
    assert rows(both.select([2, 0])) == [rows(b)[0], rows(a)[0]]
    assert [r for s in both.split(2) for r in rows(s)] == rows(both)
    trimmed = both.select([1])
    assert trimmed.prompt_len == 1 and trimmed.response_ids.shape[1] == 3


def test_micro_batches_respect_token_budget():
    b = make([[1, 2]] * 7, [[3, 4, 5]] * 7)
    micro, order = b.micro_batches(token_budget=10)
    assert [len(m) for m in micro] == [2, 2, 2, 1]
    assert [r for m in micro for r in rows(m)] == rows(b.select(order))


def test_micro_batches_group_rows_of_similar_length_and_keep_the_order():
    responses = [[3], [4] * 9, [5, 5], [6] * 8, [7] * 3, [8] * 9]
    b = make([[1, 2]] * 6, responses)
    micro, order = b.micro_batches(token_budget=24)
    # longest first: rows 1 and 5 (11 tokens each) fit 2 × 11 ≤ 24; then row 3 (10) with row 4 (5) would need
    # 2 × 10 = 20 ≤ 24, row 2 (4) would make 3 × 10 = 30 > 24
    assert order.tolist() == [1, 5, 3, 4, 2, 0]
    assert [len(m) for m in micro] == [2, 2, 2]
    assert [m.response_ids.shape[1] for m in micro] == [9, 8, 2]  # each trimmed to its own longest
    assert [r for m in micro for r in rows(m)] == rows(b.select(order))
    padded = sum(len(m) * (m.prompt_len + m.response_ids.shape[1]) for m in micro)
    consecutive = sum(len(m) * (m.prompt_len + m.response_ids.shape[1]) for m in b.split(3))
    assert padded < consecutive  # 50 against 64 padded tokens
    parts, order = b.split_by_length(2)
    assert [len(m) for m in parts] == [3, 3] and order.tolist() == [1, 5, 3, 4, 2, 0]


def test_shard_bounds_are_near_equal():
    assert shard_bounds(10, 3) == [0, 3, 7, 10]
    assert shard_bounds(2, 2) == [0, 1, 2]
    assert torch.equal(torch.tensor(shard_bounds(5, 1)), torch.tensor([0, 5]))
