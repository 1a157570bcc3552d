"""Two Ray nodes on one machine: the roles spread over both and a training step runs."""

import pytest
import ray
from ray.cluster_utils import Cluster
from test_runtime import SPREAD, train


@pytest.fixture
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.ray
@pytest.mark.vllm
def test_roles_use_both_nodes_and_train(two_nodes, tiny_config):
    # rollout 1 + learners 2 × 1 + reward 1 = 4 CPUs: more than either node has.
    cfg = tiny_config(
        "algorithm=dapo",
        SPREAD,
        "cluster.learners=2",
        "cluster.rollout.cpus=1",
        "cluster.learner.cpus=1",
        "cluster.reward.cpus=1",
        "trainer.total_steps=1",
    )
    nodes: set[str] = set()

    def record_nodes(trainer) -> None:
        for group in trainer.groups():
            calls = [a.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()) for a in group.actors]
            nodes.update(ray.get(calls))

    _, metrics = train(cfg, on_start=record_nodes)
    assert [m["step"] for m in metrics] == [1]
    assert len(nodes) == 2
