"""Hugging Face datasets as training and held-out data: a ``save_to_disk`` folder built here, mapped to
records by the data.* column keys."""

import datasets
import pytest
from conftest import train_inline

from distrl.data.records import ColumnMap, DatasetError, load_records

ROWS = [{"question": f"{a}+{b}=", "solution": str(a + b), "level": a % 3} for a, b in ((1, 2), (3, 4), (5, 6), (7, 1))]


@pytest.fixture
def saved(tmp_path):
    """A TRL-style dataset (a prompt column, a solution column, one more) saved as a dataset dict."""
    folder = tmp_path / "sums"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:2])}
                         ).save_to_disk(str(folder))  # fmt: skip
    return folder


def test_rows_map_to_records_by_the_column_keys(saved):
    columns = ColumnMap(prompt_key="question", answer_key="solution", data_source="arithmetic", split="test")
    records, skipped = load_records(saved, columns=columns)
    assert skipped == 0 and [r.prompt for r in records] == ["1+2=", "3+4="]
    assert [r.ground_truth for r in records] == ["3", "7"] and records[0].data_source == "arithmetic"
    assert records[0].extra_info == {"level": 1}  # the other columns, for TRL-style reward functions
    unnamed, _ = load_records(saved, columns=ColumnMap(prompt_key="question"))
    assert unnamed[0].data_source == "sums" and unnamed[0].ground_truth is None
    with pytest.raises(DatasetError, match=r"no column 'prompt'.*question, solution, level.*data.prompt_key"):
        load_records(saved)
    with pytest.raises(DatasetError, match="splits train, test, not 'validation'"):
        load_records(saved, columns=ColumnMap(prompt_key="question", split="validation"))
    one = saved.parent / "one"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(one))
    assert len(load_records(one, columns=ColumnMap(prompt_key="question"))[0]) == 4


def test_a_saved_dataset_trains_and_evaluates(tiny_config, saved):
    keys = ["data.prompt_key=question", "data.answer_key=solution", "data.data_source=arithmetic"]
    cfg = tiny_config("cluster.backend=inline", "rollout=hf", f"data.train_files={saved}", f"data.val_files={saved}",
                      *keys, "trainer.total_steps=3", "trainer.eval_before_train=true")  # fmt: skip
    trainer, rows = train_inline(cfg)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all(r["reward/errors"] == 0 for r in rows[1:]) and "eval/greedy_acc" in rows[0]
    assert len(trainer.records) == 4 and len(trainer.eval_records) == 2  # train and test splits
