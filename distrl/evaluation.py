"""Held-out evaluation metrics from the reward role's summaries (the trainer generates and scores;
this module only counts). A prompt is judged by the verifier's accuracy; prompts no verifier
judged (a user function without ``"acc"``, a reward model) count in ``reward_mean`` only.
"""

from __future__ import annotations

import math

from distrl.roles.reward import RewardSummary


def _per_prompt(summaries: list[RewardSummary]) -> dict[str, tuple[list[float], list[float]]]:
    """group id → (accuracies, raw scores) of its samples."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for summary in summaries:
        for gid, acc, score in zip(summary.group_ids, summary.accuracy, summary.raw_scores, strict=True):
            accs, scores = out.setdefault(gid, ([], []))
            accs.append(acc)
            scores.append(score)
    return out


def heldout_metrics(
    greedy: list[RewardSummary], sampled: list[RewardSummary], sources: dict[str, str]
) -> dict[str, float]:
    """``eval/greedy_acc`` (mean over prompts of the one greedy sample's accuracy), ``eval/pass@1``
    (mean over prompts of the k samples' mean accuracy), ``eval/pass@k`` (fraction of prompts with a
    correct sample among k), ``eval/reward_mean`` (mean over prompts of the k samples' mean reward);
    with several data sources (``sources``: group id → data source) each also as
    ``eval/<source>/<metric>``."""
    columns: dict[str, dict[str, list[float]]] = {}  # data source -> metric -> one value per prompt
    for gid, (accs, _) in _per_prompt(greedy).items():
        if not math.isnan(accs[0]):
            columns.setdefault(sources[gid], {}).setdefault("greedy_acc", []).append(accs[0])
    for gid, (accs, scores) in _per_prompt(sampled).items():
        out = columns.setdefault(sources[gid], {})
        out.setdefault("reward_mean", []).append(sum(scores) / len(scores))
        if not any(math.isnan(a) for a in accs):
            out.setdefault("pass@1", []).append(sum(accs) / len(accs))
            out.setdefault("pass@k", []).append(float(any(a > 0 for a in accs)))
    metrics: dict[str, float] = {}
    merged: dict[str, list[float]] = {}
    for source, values in columns.items():
        for name, column in values.items():
            merged.setdefault(name, []).extend(column)
            if len(columns) > 1:
                metrics[f"eval/{source}/{name}"] = sum(column) / len(column)
    return {**{f"eval/{name}": sum(column) / len(column) for name, column in merged.items()}, **metrics}
