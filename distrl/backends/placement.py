"""Where each role's actors go on GPUs: a pool of whole-GPU bundles that the learner ranks own one
each, and the roles that colocate with them pinned to the same bundles.

Ray packs fractional GPU requests onto whichever GPU fits best, so two learner ranks asking for
0.5 GPU each can land on one GPU (NCCL then fails with "Duplicate GPU detected"). Here every
learner rank gets a bundle of exactly one GPU; with ``cluster.colocate=true`` engine ``e`` joins
bundle ``e``, reference rank ``r`` bundle ``r`` and critic rank ``k`` bundle ``k + 1`` (mod the
pool size), each with its fraction of that one GPU, so the roles that take a GPU in turn (sleep
mode) share the right one. Without colocation (disaggregated) engines, reference and critic keep
placement groups of their own. The pool is one STRICT_PACK placement group per node, ordered by node and GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distrl.config import Config, ConfigError

#: Roles that can sit in the learners' GPU pool.
POOLED_ROLES = ("learner", "rollout", "reference", "critic")


class PlacementError(ConfigError):
    """A layout the cluster cannot hold; the message names what it needs and what there is."""


@dataclass
class GpuLayout:
    """``pool``: whole-GPU bundles owned by the learner ranks (0: no pool, nothing on GPUs);
    ``bundles[role]``: the pool bundle of each member of a role placed in the pool (roles absent
    keep their own placement group); ``own_gpus``: whole GPUs the roles outside the pool take."""

    pool: int = 0
    bundles: dict[str, list[int]] = field(default_factory=dict)
    own_gpus: float = 0.0

    @property
    def gpus_needed(self) -> float:
        return self.pool + self.own_gpus


def plan_gpus(cfg: Config, reference: bool = True, critic: bool = False) -> GpuLayout:
    """The layout of :class:`GpuLayout` for ``cfg`` (the reference and critic only where the job
    runs them). Raises :class:`PlacementError` for colocated fractions that overfill a GPU."""
    c = cfg.cluster
    if c.learner.gpus <= 0:
        return GpuLayout()
    counts = {"learner": c.learners, "rollout": c.rollout_engines,
              "reference": c.references if reference else 0, "critic": c.critics if critic else 0}  # fmt: skip
    layout = GpuLayout(pool=c.learners, bundles={"learner": list(range(c.learners))})
    if c.colocate:
        for role, first in (("rollout", 0), ("reference", 0), ("critic", 1)):
            if counts[role] and getattr(c, role).gpus > 0:
                layout.bundles[role] = [(first + i) % c.learners for i in range(counts[role])]
        _check_fill(cfg, layout)
    for role in ("rollout", "reference", "critic"):
        if role not in layout.bundles:
            layout.own_gpus += counts[role] * getattr(c, role).gpus
    return layout


def bundle_cpus(cfg: Config, layout: GpuLayout) -> list[float]:
    """The CPUs of each pool bundle: the sum of the ``cluster.<role>.cpus`` of the actors in it."""
    cpus = [0.0] * layout.pool
    for role, bundles in layout.bundles.items():
        for bundle in bundles:
            cpus[bundle] += getattr(cfg.cluster, role).cpus
    return cpus


def _check_fill(cfg: Config, layout: GpuLayout) -> None:
    """Every pool GPU holds at most one GPU's worth of fractions."""
    fill = [0.0] * layout.pool
    for role, bundles in layout.bundles.items():
        for bundle in bundles:
            fill[bundle] += getattr(cfg.cluster, role).gpus
    worst = max(range(layout.pool), key=fill.__getitem__)
    if fill[worst] > 1.0 + 1e-9:
        shares = ", ".join(
            f"{role} {getattr(cfg.cluster, role).gpus:g}" for role, b in layout.bundles.items() if worst in b
        )
        raise PlacementError(
            f"cluster.colocate=true puts {shares} on GPU {worst} of the learners' pool: {fill[worst]:g} GPUs on one; "
            "lower the cluster.<role>.gpus fractions so that they sum to at most 1 (e.g. learner 0.5, rollout 0.4, "
            "reference 0.1), or add learner ranks"
        )


def check_capacity(layout: GpuLayout, available: float) -> None:
    """Fail before anything starts when the cluster has fewer GPUs than the layout needs."""
    if layout.gpus_needed > available + 1e-9:
        raise PlacementError(
            f"this layout needs {layout.gpus_needed:g} GPU(s): {layout.pool} for the learner ranks' pool and "
            f"{layout.own_gpus:g} for the roles placed outside it; the cluster has {available:g}. Lower "
            "cluster.learners / cluster.rollout_engines or the cluster.<role>.gpus, set cluster.colocate=true, or "
            "add nodes (ray status shows the GPUs)"
        )


def node_chunks(bundles: int, gpus_per_node: list[int]) -> list[int]:
    """Split ``bundles`` whole-GPU bundles into per-node placement groups, filling the nodes with
    the most GPUs first: the sizes of the groups, in order."""
    chunks, left = [], bundles
    for gpus in sorted((g for g in gpus_per_node if g > 0), reverse=True):
        if left == 0:
            break
        chunks.append(min(gpus, left))
        left -= chunks[-1]
    if left:
        raise PlacementError(f"the learners' pool needs {bundles} GPUs; the nodes have {sum(gpus_per_node)} in all")
    return chunks
