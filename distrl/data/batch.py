"""The trajectory batch: what rollout produces and every other role reads and extends.

A batch is B samples. Prompts are left-padded to P tokens and responses right-padded to T tokens,
so ``cat(prompt_ids, response_ids)`` is a ``[B, P+T]`` sequence whose response starts at column P
for every row. Per-token fields (log-probs, rewards, advantages…) are ``[B, T]`` float tensors
aligned with ``response_ids``; per-sample fields are ``[B]`` tensors; text and ids are lists.
Batches travel between actors as Ray object references; this module only knows torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


def _pad_to(x: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    missing = width - x.shape[1]
    if missing == 0:
        return x
    pad = torch.full((x.shape[0], missing), value, dtype=x.dtype, device=x.device)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


def shard_bounds(rows: int, parts: int) -> list[int]:
    """Row offsets splitting ``rows`` into ``parts`` contiguous near-equal shards."""
    return [round(rows * i / parts) for i in range(parts + 1)]


@dataclass
class TrajectoryBatch:
    """B prompt/response samples with their per-token and per-sample fields.

    ``token`` holds ``[B, T]`` fields such as ``rollout_logprobs``, ``old_logprobs``,
    ``ref_logprobs``, ``values``, ``token_rewards``, ``advantages``, ``returns``; ``sample`` holds
    ``[B]`` fields such as ``scores``, ``accuracy``, ``truncated``, ``policy_version``; ``meta``
    holds per-sample lists such as ``group_ids``, ``prompt_texts``, ``response_texts``,
    ``data_sources``, ``ground_truths``, ``extra_infos``.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    pad_id: int
    token: dict[str, torch.Tensor] = field(default_factory=dict)
    sample: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, list] = field(default_factory=dict)

    @classmethod
    def from_lists(
        cls,
        prompt_ids: Sequence[Sequence[int]],
        response_ids: Sequence[Sequence[int]],
        *,
        pad_id: int,
        token: dict[str, Sequence[Sequence[float]]] | None = None,
        sample: dict[str, Sequence[float]] | None = None,
        meta: dict[str, list] | None = None,
    ) -> TrajectoryBatch:
        """Pad ragged prompts (left) and responses and per-token lists (right) into a batch."""
        width_p = max(len(p) for p in prompt_ids)
        width_t = max(1, max(len(r) for r in response_ids))

        def rows(seqs, width, value, left, dtype):
            out = torch.full((len(seqs), width), value, dtype=dtype)
            for i, s in enumerate(seqs):
                if len(s):
                    cols = slice(width - len(s), width) if left else slice(0, len(s))
                    out[i, cols] = torch.as_tensor(list(s), dtype=dtype)
            return out

        return cls(
            prompt_ids=rows(prompt_ids, width_p, pad_id, True, torch.long),
            prompt_mask=rows([[1] * len(p) for p in prompt_ids], width_p, 0, True, torch.long),
            response_ids=rows(response_ids, width_t, pad_id, False, torch.long),
            response_mask=rows([[1.0] * len(r) for r in response_ids], width_t, 0.0, False, torch.float32),
            pad_id=pad_id,
            token={k: rows(v, width_t, 0.0, False, torch.float32) for k, v in (token or {}).items()},
            sample={k: torch.as_tensor(list(v), dtype=torch.float32) for k, v in (sample or {}).items()},
            meta={k: list(v) for k, v in (meta or {}).items()},
        )

    def __len__(self) -> int:
        return self.response_ids.shape[0]

    @property
    def prompt_len(self) -> int:
        return self.prompt_ids.shape[1]

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)

    @property
    def input_ids(self) -> torch.Tensor:
        """``[B, P+T]`` prompt followed by response."""
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask.long()], dim=1)

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions counted from each row's first real token (left padding gets 0)."""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def select(self, index: Sequence[int] | torch.Tensor) -> TrajectoryBatch:
        """The samples at ``index``, in that order, trimmed to their own padding widths."""
        idx = torch.as_tensor(index, dtype=torch.long)
        picked = [int(i) for i in idx]
        out = TrajectoryBatch(
            prompt_ids=self.prompt_ids[idx],
            prompt_mask=self.prompt_mask[idx],
            response_ids=self.response_ids[idx],
            response_mask=self.response_mask[idx],
            pad_id=self.pad_id,
            token={k: v[idx] for k, v in self.token.items()},
            sample={k: v[idx] for k, v in self.sample.items()},
            meta={k: [v[i] for i in picked] for k, v in self.meta.items()},
        )
        return out.trimmed()

    def trimmed(self) -> TrajectoryBatch:
        """Drop prompt columns that are padding in every row, and response columns likewise."""
        p_keep = int(self.prompt_mask.sum(-1).max()) if len(self) else 0
        t_keep = max(1, int(self.response_mask.sum(-1).max())) if len(self) else 1
        p_cut = self.prompt_len - p_keep
        return TrajectoryBatch(
            prompt_ids=self.prompt_ids[:, p_cut:],
            prompt_mask=self.prompt_mask[:, p_cut:],
            response_ids=self.response_ids[:, :t_keep],
            response_mask=self.response_mask[:, :t_keep],
            pad_id=self.pad_id,
            token={k: v[:, :t_keep] for k, v in self.token.items()},
            sample=dict(self.sample),
            meta=dict(self.meta),
        )

    @staticmethod
    def concat(batches: Sequence[TrajectoryBatch]) -> TrajectoryBatch:
        """Stack batches with the same fields, re-padding prompts (left) and responses (right)."""
        width_p = max(b.prompt_len for b in batches)
        width_t = max(b.response_ids.shape[1] for b in batches)
        first = batches[0]

        def cat(get, width, value, left):
            return torch.cat([_pad_to(get(b), width, value, left) for b in batches])

        return TrajectoryBatch(
            prompt_ids=cat(lambda b: b.prompt_ids, width_p, first.pad_id, True),
            prompt_mask=cat(lambda b: b.prompt_mask, width_p, 0, True),
            response_ids=cat(lambda b: b.response_ids, width_t, first.pad_id, False),
            response_mask=cat(lambda b: b.response_mask, width_t, 0.0, False),
            pad_id=first.pad_id,
            token={k: cat(lambda b, k=k: b.token[k], width_t, 0.0, False) for k in first.token},
            sample={k: torch.cat([b.sample[k] for b in batches]) for k in first.sample},
            meta={k: [x for b in batches for x in b.meta[k]] for k in first.meta},
        )

    def shard(self, rank: int, world_size: int) -> TrajectoryBatch:
        """Contiguous shard ``rank`` of ``world_size`` (sizes differ by at most one)."""
        bounds = shard_bounds(len(self), world_size)
        return self.select(range(bounds[rank], bounds[rank + 1]))

    def split(self, parts: int) -> list[TrajectoryBatch]:
        """``parts`` consecutive shards."""
        return [self.shard(rank, parts) for rank in range(parts)]

    def length_order(self) -> torch.Tensor:
        """Row indices from the longest sequence (real prompt + response tokens) to the shortest."""
        lengths = self.prompt_mask.sum(-1) + self.response_mask.sum(-1).long()
        return torch.argsort(lengths, descending=True, stable=True)

    def micro_batches(self, token_budget: int) -> tuple[list[TrajectoryBatch], torch.Tensor]:
        """The rows from the longest to the shortest, cut greedily into micro-batches whose padded
        size (rows × their own prompt and response widths) stays within ``token_budget`` (at least
        one row each): rows of similar length share a micro-batch, so little padding is computed.
        Returns the micro-batches and the row order (their rows, concatenated, are
        ``self.select(order)``)."""
        order = self.length_order()
        prompt = self.prompt_mask.sum(-1)[order].tolist()
        response = self.response_mask.sum(-1)[order].long().tolist()
        cuts, start, widest_p, widest_t = [], 0, 0, 0
        for i, (p, t) in enumerate(zip(prompt, response, strict=True)):
            widest_p, widest_t = max(widest_p, p), max(widest_t, t, 1)
            if i > start and (i - start + 1) * (widest_p + widest_t) > token_budget:
                cuts.append((start, i))
                start, widest_p, widest_t = i, p, max(t, 1)
        cuts.append((start, len(order)))
        return [self.select(order[lo:hi]) for lo, hi in cuts if hi > lo], order

    def split_by_length(self, parts: int) -> tuple[list[TrajectoryBatch], torch.Tensor]:
        """``parts`` near-equal micro-batches of rows sorted from the longest to the shortest, each
        trimmed to its own widths; and the row order (see :meth:`micro_batches`)."""
        order = self.length_order()
        return self.select(order).split(parts), order
