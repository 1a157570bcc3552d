"""Inputs that would fail mid-run are caught before any role starts."""

import json

import pytest

from distrl.data.records import DatasetError
from distrl.trainer import Trainer


def write_rows(path, prompts):
    path.write_text("".join(json.dumps({"prompt": p, "data_source": "arithmetic",
                                        "reward_model": {"ground_truth": "2"}}) + "\n" for p in prompts))  # fmt: skip
    return path


def test_a_prompt_longer_than_max_prompt_len_stops_before_any_role_naming_it(tiny_config, tmp_path):
    data = write_rows(tmp_path / "train.jsonl", ["1+1=", "1+" * 40 + "1=", "2+0="])
    cfg = tiny_config("cluster.backend=inline", f"data.train_files=[{data}]", "data.max_prompt_len=32")
    with pytest.raises(DatasetError, match=r"record 1 .* is 82 tokens, over data.max_prompt_len=32.*skip_bad_rows"):
        Trainer(cfg)


def test_with_skip_bad_rows_long_prompts_are_dropped_and_counted(tiny_config, tmp_path, capsys):
    data = write_rows(tmp_path / "train.jsonl", ["1+1=", "1+" * 40 + "1=", "2+0="])
    cfg = tiny_config("cluster.backend=inline", "rollout=hf", f"data.train_files=[{data}]",
                      "data.max_prompt_len=32", "data.skip_bad_rows=true", "data.train_batch_size=2")  # fmt: skip
    trainer = Trainer(cfg)
    try:
        assert [r.index for r in trainer.records] == [0, 2]
    finally:
        trainer.shutdown()
    assert "dropped 1 prompt(s) longer than data.max_prompt_len=32" in capsys.readouterr().out
