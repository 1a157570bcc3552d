"""GPU placement: the learners' pool of whole-GPU bundles, colocated roles pinned to its bundles,
and layouts that cannot fit stopped before anything starts. The Ray tests use fake GPUs (Ray
accepts ``num_gpus`` on a CPU machine and sets ``CUDA_VISIBLE_DEVICES`` per actor)."""

import pytest

from distrl.backends.placement import PlacementError, bundle_cpus, check_capacity, node_chunks, plan_gpus
from distrl.config import ConfigError, compose_config, validate

COLOCATED_4 = ["cluster=gpu_node_colocated", "cluster.learners=4", "cluster.rollout_engines=4", "cluster.references=4"]


def composed(*overrides: str):
    return compose_config(["model=hf", "model.path=/models/qwen", *overrides], check=False)


def test_the_pool_gives_each_learner_rank_a_bundle_and_pins_colocated_roles_to_them():
    layout = plan_gpus(composed(*COLOCATED_4), reference=True, critic=True)
    assert layout.pool == 4 and layout.own_gpus == 0
    ranks = [0, 1, 2, 3]
    assert layout.bundles == {"learner": ranks, "rollout": ranks, "reference": ranks, "critic": [1]}
    assert bundle_cpus(composed(*COLOCATED_4), layout) == [4 + 2 + 1, 4 + 2 + 1 + 1, 4 + 2 + 1, 4 + 2 + 1]


def test_disaggregated_engines_reference_and_critic_keep_gpus_of_their_own():
    layout = plan_gpus(composed("cluster=gpu_node"), reference=True, critic=False)
    assert (layout.pool, layout.bundles, layout.own_gpus) == (4, {"learner": [0, 1, 2, 3]}, 3.5)
    assert plan_gpus(composed(), reference=True).gpus_needed == 0  # CPU only: no pool


def test_colocated_fractions_that_overfill_a_gpu_are_refused_naming_the_shares():
    cfg = composed(*COLOCATED_4, "cluster.rollout.gpus=0.6")
    with pytest.raises(
        PlacementError, match=r"learner 0.5, rollout 0.6, reference 0.1, critic 0.05 on GPU 1.*1.25 GPUs"
    ):
        plan_gpus(cfg, reference=True, critic=True)
    with pytest.raises(ConfigError, match=r"rollout 0.6, reference 0.1 on GPU 0.*1.2 GPUs on one"):
        validate(cfg)  # validation runs the same plan (GRPO: no critic)


def test_several_learner_ranks_on_fractions_of_a_gpu_are_refused_unless_colocated():
    with pytest.raises(ConfigError, match=r"cluster.learner.gpus=0.5 with 4 learner ranks.*whole GPU"):
        validate(composed("cluster=gpu", "cluster.learners=4", "cluster.learner.gpus=0.5"))


def test_several_critic_ranks_on_fractions_of_a_gpu_are_refused_unless_colocated():
    with pytest.raises(ConfigError, match=r"cluster.critic.gpus=0.5 with 2 critic ranks.*NCCL refuses"):
        validate(composed("cluster=gpu", "algorithm=ppo", "cluster.critics=2"))
    validate(composed(*COLOCATED_4, "algorithm=ppo", "cluster.critics=2"))


def test_a_layout_larger_than_the_cluster_names_what_it_needs_and_has():
    layout = plan_gpus(composed("cluster=gpu_node"), reference=True, critic=True)
    with pytest.raises(PlacementError, match=r"needs 8 GPU\(s\): 4 for the learner ranks' pool and 4 .* has 4"):
        check_capacity(layout, 4)
    check_capacity(layout, 8)


def test_the_pool_fills_the_largest_nodes_first():
    assert node_chunks(12, [8, 8, 0]) == [8, 4]
    assert node_chunks(3, [2, 4]) == [3]
    with pytest.raises(PlacementError, match="needs 9 GPUs; the nodes have 8"):
        node_chunks(9, [4, 4])


@pytest.fixture
def fake_gpus():
    import ray

    ray.init(address="local", num_cpus=32, num_gpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.ray
def test_learner_ranks_see_distinct_gpus_and_each_engine_its_ranks_gpu(fake_gpus):
    from distrl.backends.ray_backend import RayBackend

    class GpuProbe:
        """Reports the GPU Ray gave this actor."""

        def __init__(self, rank: int = 0, world_size: int = 1) -> None:
            import os

            self.visible = os.environ.get("CUDA_VISIBLE_DEVICES")

        def gpus(self) -> str | None:
            return self.visible

    cfg = composed(*COLOCATED_4)
    layout = plan_gpus(cfg, reference=True, critic=False)
    backend = RayBackend(num_cpus=32)
    backend.reserve_gpus(layout, bundle_cpus(cfg, layout))
    groups = {}
    try:
        for role, count in (("learner", 4), ("rollout", 4), ("reference", 4)):
            resources = getattr(cfg.cluster, role)
            groups[role] = backend.group(role, GpuProbe, count, resources, bundles=layout.bundles[role])
        seen = {role: backend.get(g.call("gpus"), role) for role, g in groups.items()}
    finally:
        for group in groups.values():
            group.shutdown()
        backend.shutdown()
    assert sorted(seen["learner"]) == ["0", "1", "2", "3"]  # one GPU per rank, never two ranks on one
    assert seen["rollout"] == seen["learner"]  # engine e on rank e's GPU
    assert seen["reference"] == seen["learner"]


@pytest.mark.ray
def test_a_layout_the_cluster_cannot_hold_stops_before_any_actor_starts(fake_gpus):
    import ray

    from distrl.backends.ray_backend import RayBackend

    cfg = composed("cluster=gpu_node")  # 8 GPUs; this cluster has 4
    backend = RayBackend(num_cpus=32)
    with pytest.raises(PlacementError, match=r"needs 8 GPU\(s\).*the cluster has 4"):
        backend.reserve_gpus(plan_gpus(cfg, reference=True, critic=True), [4.0] * 4)
    assert ray.util.placement_group_table() == {} and not ray.util.list_named_actors()
