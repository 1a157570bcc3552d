"""LoRA: the learner trains adapters only; engines and checkpoints get the merged weights."""

import pytest
import torch
from conftest import ROOT, train_inline
from safetensors.torch import load_file

from distrl.config import ConfigError, compose_config
from distrl.models.lora import base_name, merged, merged_shapes


def test_merging_names_and_formula():
    a, b, w = torch.randn(2, 3), torch.randn(4, 2), torch.randn(4, 3)
    peft = [("base_model.model.layers.0.q_proj.base_layer.weight", w),
            ("base_model.model.layers.0.q_proj.lora_A.default.weight", a),
            ("base_model.model.layers.0.q_proj.lora_B.default.weight", b),
            ("base_model.model.norm.weight", torch.ones(3))]  # fmt: skip
    out = dict(merged(peft, scale=0.5))
    assert list(out) == ["layers.0.q_proj.weight", "norm.weight"]
    assert torch.allclose(out["layers.0.q_proj.weight"], w + 0.5 * b @ a)
    assert merged_shapes((k, v.shape) for k, v in peft) == {k: v.shape for k, v in out.items()}
    assert base_name("base_model.model.x.o_proj.base_layer.bias") == "x.o_proj.bias"


def test_bad_lora_settings_are_refused():
    with pytest.raises(ConfigError, match=r"model.lora.rank=-1 must be >= 0"):
        compose_config(["model.lora.rank=-1"])
    with pytest.raises(ConfigError, match=r"model.lora.target_modules is empty"):
        compose_config(["model.lora.rank=4", "model.lora.target_modules=[]"])


def test_a_lora_run_trains_only_adapters_and_engines_follow_the_merged_model(tiny_config, tmp_path):
    spread = f"reward.function={ROOT / 'tests/fixtures/coin_reward.py'}:odd_length"  # rewards that differ
    cfg = tiny_config("cluster.backend=inline", "model.lora.rank=4", "model.lora.alpha=8", "trainer.total_steps=3",
                      "cluster.sync_check_every=1", "learner.lr=1e-2", spread)  # fmt: skip
    trainer, rows = train_inline(cfg)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["weight_sync/max_logprob_diff"] < 1e-2 for r in rows)  # engines hold base + adapters
    step = tmp_path / "run" / "checkpoints" / "step_3"
    start = load_file(f"{trainer.initial_model}/model.safetensors")
    end = load_file(step / "model.safetensors")
    adapter = load_file(step / "adapter" / "adapter_model.safetensors")
    assert adapter and any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in adapter.items())
    assert set(end) == set(start)  # the base model's names: vLLM and transformers load it as it is
    adapted = {k for k in start if k.endswith(".weight") and k.rsplit(".", 2)[-2] in cfg.model.lora.target_modules}
    assert adapted and all(not torch.equal(start[k], end[k]) for k in adapted)
    assert all(torch.equal(start[k], end[k]) for k in set(start) - adapted)  # embeddings, norms, biases: frozen
