"""Per-token quantities of a batch under a Hugging Face model.

For a batch with prompts left-padded to P and responses right-padded to T, the logits that
predict response token t sit at sequence position P + t − 1, so only the last T + 1 positions'
logits are computed (``logits_to_keep``), never the prompt's. Batches live on the CPU (they travel
between roles); every tensor that enters a model is moved to the model's device first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel

from distrl.algorithms import entropy_from_logits, logprobs_from_logits
from distrl.data.batch import TrajectoryBatch


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters (of this rank's shard, for an FSDP2 model)."""
    return next(model.parameters()).device


def model_inputs(model: torch.nn.Module, batch: TrajectoryBatch) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``position_ids`` of the batch on the model's device."""
    device = model_device(model)
    return {
        "input_ids": batch.input_ids.to(device),
        "attention_mask": batch.attention_mask.to(device),
        "position_ids": batch.position_ids.to(device),
    }


def response_logits(model: PreTrainedModel, batch: TrajectoryBatch) -> torch.Tensor:
    """``[B, T, V]`` logits of the positions that predict the response tokens."""
    width = batch.response_ids.shape[1]
    out = model(**model_inputs(model, batch), use_cache=False, logits_to_keep=width + 1)
    return out.logits[:, :-1]


def response_logprobs(
    model: PreTrainedModel,
    batch: TrajectoryBatch,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log π(y_t | x, y_<t) ``[B, T]``, entropy ``[B, T]`` or None) of the sampled response tokens,
    from the temperature-scaled distribution the rollout sampled from; zero on padding. The entropy
    carries an autograd graph only with ``entropy_grad`` (a loss that uses it); otherwise it is a
    metric and keeps no ``[B, T, V]`` intermediates alive."""
    logits = response_logits(model, batch)
    if temperature != 1.0:
        logits = logits / temperature
    mask = batch.response_mask.to(logits.device)
    logprobs = logprobs_from_logits(logits, batch.response_ids.to(logits.device)) * mask
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits if entropy_grad else logits.detach()) * mask
    return logprobs, entropy


def response_values(value_model: PreTrainedModel, batch: TrajectoryBatch) -> torch.Tensor:
    """``[B, T]`` values V(x, y_<t) of a token-classification model with one label (the critic):
    the value of the state in which response token t is chosen; zero on padding."""
    out = value_model(**model_inputs(value_model, batch), use_cache=False)
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
