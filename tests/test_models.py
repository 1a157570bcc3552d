"""Model loading: hub ids and folders, and the decoder layers FSDP shards in any causal LM."""

import pytest
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from distrl.models.loading import check_model_path, decoder_layers


@pytest.mark.parametrize(
    ("model", "layer"),
    [
        (Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                      num_attention_heads=2, num_key_value_heads=1)), "Qwen2DecoderLayer"),
        (GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=2)), "GPT2Block"),
    ],
)  # fmt: skip
def test_fsdp_finds_the_decoder_layers_of_any_causal_lm(model, layer):
    layers = decoder_layers(model)
    assert [type(m).__name__ for m in layers] == [layer] * 3


def test_a_model_without_named_layers_is_refused_with_the_fix():
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2))
    model._no_split_modules = None
    with pytest.raises(ValueError, match=r"cannot find the decoder layers of GPT2LMHeadModel.*cluster.learners=1"):
        decoder_layers(model)


def test_an_unreachable_hub_id_fails_early_with_the_download_command(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"model.path='Qwen/Qwen2.5-0.5B'.*huggingface-cli download Qwen/"):
        check_model_path("Qwen/Qwen2.5-0.5B")


def test_a_folder_must_exist_and_hold_a_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model_path(str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        check_model_path(str(tmp_path))


def test_the_critic_head_has_no_dropout_so_its_values_in_training_mode_are_a_function_of_the_input(tmp_path):
    import torch

    from distrl.models.loading import load_critic
    from distrl.models.tiny import build_tiny_model

    build_tiny_model(tmp_path, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0)
    critic = load_critic(str(tmp_path))
    torch.nn.init.normal_(critic.score.weight)  # a trained head: dropout before it would show
    critic.train()
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    assert torch.equal(critic(input_ids=ids).logits, critic(input_ids=ids).logits)
