"""Weights as one flat buffer (the weight-sync format) and the per-actor core/thread settings."""

import os
import warnings

import pytest
import torch

from distrl.config import RoleResources
from distrl.models.flat import ALIGN, FlatWeights
from distrl.roles.resources import set_num_threads, sharing_cores, use_cores


def state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(7, 3, generator=gen),
        "layer.0.bias": torch.randn(5, generator=gen),
        "layer.0.weight": torch.randn(5, 7, generator=gen),
        "scalar": torch.tensor(2.5),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flat_weights_round_trip_in_the_sync_dtype(dtype):
    tensors = state()
    flat = FlatWeights.from_tensors(tensors, dtype)
    out = flat.as_dict()
    assert list(out) == list(tensors)
    for name, tensor in tensors.items():
        assert out[name].dtype == dtype and out[name].shape == tensor.shape
        assert torch.equal(out[name], tensor.to(dtype)), name
    assert all(offset % ALIGN == 0 for offset in flat.offsets)
    assert flat.nbytes >= sum(t.numel() * out[n].element_size() for n, t in tensors.items())


def test_views_of_a_read_only_buffer_share_its_memory_without_a_warning():
    flat = FlatWeights.from_tensors(state(), torch.bfloat16)
    flat.buffer.setflags(write=False)  # what ray.get returns: shared memory mapped read-only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        views = flat.as_dict()
    assert views["layer.0.weight"].data_ptr() == flat.buffer.ctypes.data + flat.offsets[2]


@pytest.fixture
def restore_threads():
    threads, affinity, omp = torch.get_num_threads(), os.sched_getaffinity(0), os.environ.get("OMP_NUM_THREADS")
    yield
    set_num_threads(threads)
    os.sched_setaffinity(0, affinity)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp


@pytest.mark.usefixtures("restore_threads")
def test_threads_follow_the_role_settings():
    cores = len(os.sched_getaffinity(0))
    assert use_cores(RoleResources(cpus=0.5), "learner") == 1  # Ray's share, rounded up
    assert use_cores(RoleResources(cpus=0.5, threads=0), "learner") == cores
    assert use_cores(RoleResources(cpus=0.5, threads=0), "learner", share=cores) == 1
    assert use_cores(RoleResources(threads=3), "learner") == 3 == torch.get_num_threads()
    first = min(os.sched_getaffinity(0))
    assert use_cores(RoleResources(cores=[first]), "rollout") == 1
    assert os.sched_getaffinity(0) == {first}


@pytest.mark.usefixtures("restore_threads")
def test_pinning_to_a_core_the_node_lacks_names_role_and_the_cores_it_has():
    before = os.sched_getaffinity(0)
    with pytest.raises(ValueError, match=r"cluster.rollout.cores=\[4096\] names core\(s\) \[4096\].*cores available"):
        use_cores(RoleResources(cores=[4096]), "rollout")
    assert os.sched_getaffinity(0) == before


@pytest.mark.usefixtures("restore_threads")
def test_roles_running_at_once_split_the_cores_only_when_they_use_all_of_them():
    set_num_threads(4)  # torch's own setter: a vLLM CPU engine built earlier in this process replaces torch's
    with sharing_cores(RoleResources(threads=0), share=2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 4
    with sharing_cores(RoleResources(threads=0), share=8):
        assert torch.get_num_threads() == 1
    with sharing_cores(RoleResources(threads=4), share=2):  # an explicit count is kept
        assert torch.get_num_threads() == 4
    with sharing_cores(RoleResources(threads=0, cores=[0]), share=2):  # pinned roles have their own cores
        assert torch.get_num_threads() == 4


def test_hf_engine_loads_flat_weights_into_its_parameters(tmp_path):
    from distrl.config import RolloutConfig
    from distrl.models.tiny import build_tiny_model
    from distrl.roles.rollout import EngineSettings, HFEngine

    path = build_tiny_model(tmp_path / "m", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0)
    engine = HFEngine(str(path), RolloutConfig(engine="hf"), EngineSettings(max_model_len=64, seed=0))
    new = {k: v + 0.5 for k, v in engine.model.state_dict().items()}
    engine.load_weights(FlatWeights.from_tensors(new, torch.float32))
    for name, tensor in engine.model.state_dict().items():
        assert torch.equal(tensor, new[name]), name
