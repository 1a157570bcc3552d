"""Per-token quantities from logits, and the covariance that drives entropy collapse.

Cui et al. (arXiv 2505.22617, Lemma 1): under natural policy gradient the entropy change of a
softmax policy is ≈ −η·Cov(log π(a|s), A(s,a)); tokens with large positive covariance are the ones
that collapse entropy. :func:`token_covariance` is that per-token covariance term.
"""

from __future__ import annotations

import torch

from distrl.algorithms.masked import masked_mean

#: Rows of logits processed at once, bounding the extra memory to chunk × vocab.
LOGIT_CHUNK = 1024


def token_covariance(logprobs: torch.Tensor, advantages: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Cov_i = (ℓ_i − mean ℓ)·(A_i − mean A), means over the batch's valid tokens; 0 on padding."""
    mask = response_mask.to(logprobs.dtype)
    centered_lp = logprobs.detach() - masked_mean(logprobs.detach(), mask)
    centered_adv = advantages - masked_mean(advantages, mask)
    return centered_lp * centered_adv * mask


def _chunked(fn, logits: torch.Tensor, *others: torch.Tensor, chunk: int) -> torch.Tensor:
    flat = logits.reshape(-1, logits.shape[-1])
    flat_others = [o.reshape(-1) for o in others]
    out = torch.cat(
        [fn(flat[i : i + chunk], *(o[i : i + chunk] for o in flat_others)) for i in range(0, flat.shape[0], chunk)]
    )
    return out.view(logits.shape[:-1])


def _entropy_rows(rows: torch.Tensor) -> torch.Tensor:
    rows = rows.float()
    return torch.logsumexp(rows, dim=-1) - (torch.softmax(rows, dim=-1) * rows).sum(-1)


def entropy_from_logits(logits: torch.Tensor, chunk: int = LOGIT_CHUNK) -> torch.Tensor:
    """H = logsumexp(z) − Σ_v softmax(z)_v·z_v per position, ``[..., V]`` → ``[...]``.

    Processed ``chunk`` rows at a time in float32, so the softmax never exists for the whole batch.
    """
    return _chunked(_entropy_rows, logits, chunk=chunk)


def _logprob_rows(rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    rows = rows.float()
    return rows.gather(-1, tokens[:, None]).squeeze(-1) - torch.logsumexp(rows, dim=-1)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, chunk: int = LOGIT_CHUNK) -> torch.Tensor:
    """log softmax(z)[y] = z_y − logsumexp(z) for the sampled tokens, ``[..., V]`` → ``[...]``,
    without materializing the full log-softmax."""
    return _chunked(_logprob_rows, logits, tokens, chunk=chunk)
