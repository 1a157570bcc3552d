"""Per-token quantities of a batch under a Hugging Face model.

For a batch with prompts left-padded to P and responses right-padded to T, the logits that
predict response token t sit at sequence position P + t − 1, so only the last T + 1 positions'
logits are computed (``logits_to_keep``), never the prompt's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel

from distrl.algorithms import entropy_from_logits, logprobs_from_logits
from distrl.data.batch import TrajectoryBatch


def response_logits(model: PreTrainedModel, batch: TrajectoryBatch) -> torch.Tensor:
    """``[B, T, V]`` logits of the positions that predict the response tokens."""
    width = batch.response_ids.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        logits_to_keep=width + 1,
    )
    return out.logits[:, :-1]


def response_logprobs(
    model: PreTrainedModel, batch: TrajectoryBatch, *, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log π(y_t | x, y_<t) ``[B, T]``, entropy ``[B, T]`` or None) of the sampled response tokens,
    from the temperature-scaled distribution the rollout sampled from; zero on padding."""
    logits = response_logits(model, batch)
    if temperature != 1.0:
        logits = logits / temperature
    mask = batch.response_mask.to(logits.device)
    logprobs = logprobs_from_logits(logits, batch.response_ids.to(logits.device)) * mask
    entropy = entropy_from_logits(logits) * mask if with_entropy else None
    return logprobs, entropy


def response_values(value_model: PreTrainedModel, batch: TrajectoryBatch) -> torch.Tensor:
    """``[B, T]`` values V(x, y_<t) of a token-classification model with one label (the critic):
    the value of the state in which response token t is chosen; zero on padding."""
    out = value_model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    width = batch.response_ids.shape[1]
    start = batch.prompt_len - 1
    values = out.logits[:, start : start + width, 0].float()
    return values * batch.response_mask.to(values.device)


def stack_rows(
    micro_batches: tuple[Sequence[TrajectoryBatch], torch.Tensor],
    compute: Callable[[TrajectoryBatch], torch.Tensor],
    width: int,
) -> torch.Tensor:
    """``compute`` on each micro-batch (``[rows, T_i]`` each), stacked into ``[Σ rows, width]`` on the
    CPU, zero-padded on the right (micro-batches are trimmed to their own longest response), with
    the rows put back from the micro-batches' ``order`` into the batch's own."""
    micro, order = micro_batches
    parts = torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in map(compute, micro)])
    out = torch.empty_like(parts, dtype=torch.float32, device="cpu")
    out[order] = parts.float().cpu()
    return out
