"""Prompt datasets in verl's layout: loading and validation, chat rendering, the resumable prompt stream."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distrl.data.arithmetic import SCRATCHPAD_SOURCE, careless_sum, make_problems, split_of, worked_solution
from distrl.data.records import DatasetError, PromptRecord, PromptStream, load_records, render_prompt
from distrl.models.tiny import build_tokenizer
from distrl.rewards import BUILTIN_VERIFIERS


def verl_row(i: int, **changes) -> dict:
    row = {
        "data_source": "openai/gsm8k",
        "prompt": [{"role": "user", "content": f"question {i}"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(i)},
        "extra_info": {"split": "train", "index": i},
    }
    row.update(changes)
    return row


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def records_of(n: int) -> list[PromptRecord]:
    return [PromptRecord(prompt=f"p{i}", data_source="d", ground_truth=None, extra_info={}, index=i) for i in range(n)]


# --- loading -----------------------------------------------------------------------------------------------------


def test_jsonl_string_prompts(tmp_path):
    path = write_jsonl(
        tmp_path / "plain.jsonl",
        [
            {"data_source": "toy", "prompt": "What is 2+2?", "reward_model": {"ground_truth": "4"}},
            {"data_source": "toy", "prompt": "Say hi."},
        ],
    )
    records, skipped = load_records([path])
    assert skipped == 0
    assert records == [
        PromptRecord(prompt="What is 2+2?", data_source="toy", ground_truth="4", extra_info={}, index=0),
        PromptRecord(prompt="Say hi.", data_source="toy", ground_truth=None, extra_info={}, index=1),
    ]


def test_jsonl_chat_prompts_in_verl_layout(tmp_path):
    rows = [verl_row(0), verl_row(1, reward_model={"style": "rule", "ground_truth": 72})]
    records, _ = load_records([write_jsonl(tmp_path / "gsm8k.json", rows)])
    assert records[0].prompt == [{"role": "user", "content": "question 0"}]
    assert records[0].data_source == "openai/gsm8k"
    assert records[0].extra_info == {"split": "train", "index": 0}
    assert [r.ground_truth for r in records] == ["0", "72"]


def test_parquet_rows_come_back_as_written(tmp_path):
    rows = [
        verl_row(
            i,
            prompt=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"q{i}"}],
            reward_model={"style": "rule", "ground_truth": 72 + i},
        )
        for i in range(3)
    ]
    records, skipped = load_records([write_parquet(tmp_path / "train.parquet", rows)])
    assert skipped == 0
    assert [r.index for r in records] == [0, 1, 2]
    assert records[1].prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q1"}]
    assert [r.ground_truth for r in records] == ["72", "73", "74"]
    assert records[2].extra_info == {"split": "train", "index": 2}
    assert all(isinstance(r.ground_truth, str) for r in records)


def test_parquet_string_prompts_and_float_ground_truths(tmp_path):
    table = pa.table(
        {
            "data_source": ["toy", "toy", "toy"],
            "prompt": ["a", "b", "c"],
            "reward_model": pa.array(
                [{"ground_truth": 72.0}, {"ground_truth": 2.5}, {"ground_truth": float("nan")}],
                pa.struct([("ground_truth", pa.float64())]),
            ),
        }
    )
    pq.write_table(table, tmp_path / "floats.parquet")
    records, _ = load_records([tmp_path / "floats.parquet"])
    assert [r.prompt for r in records] == ["a", "b", "c"]
    assert [r.ground_truth for r in records] == ["72", "2.5", None]
    assert [r.extra_info for r in records] == [{}, {}, {}]


def test_parquet_messages_with_extra_fields_keep_them_and_drop_nulls(tmp_path):
    rows = [
        verl_row(0, prompt=[{"role": "user", "content": "hi", "name": "ann"}]),
        verl_row(1, prompt=[{"role": "user", "content": "yo"}]),
    ]
    records, _ = load_records([write_parquet(tmp_path / "names.parquet", rows)])
    assert records[0].prompt == [{"role": "user", "content": "hi", "name": "ann"}]
    assert records[1].prompt == [{"role": "user", "content": "yo"}]


def test_files_concatenate_in_order_with_consecutive_indices(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [verl_row(0), verl_row(1)])
    second = write_parquet(tmp_path / "b.parquet", [verl_row(10), verl_row(11), verl_row(12)])
    third = write_jsonl(tmp_path / "c.jsonl", [{"data_source": "toy", "prompt": "last"}])
    records, skipped = load_records([first, str(second), third])
    assert skipped == 0
    assert [r.index for r in records] == list(range(6))
    assert [r.ground_truth for r in records] == ["0", "1", "10", "11", "12", None]
    assert records[-1].prompt == "last"


def test_single_path_and_empty_list(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [verl_row(0)])
    assert len(load_records(str(path))[0]) == 1
    assert load_records([]) == ([], 0)


def test_blank_lines_are_ignored_but_counted_in_row_numbers(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text(json.dumps(verl_row(0)) + "\n\n   \n" + json.dumps(verl_row(1, prompt="")) + "\n")
    with pytest.raises(DatasetError, match=r"row 4\b"):
        load_records([path])


BAD_ROWS = {
    "invalid JSON": '{"data_source": "x", "prompt": ',
    "not an object": json.dumps([1, 2, 3]),
    "null row": "null",
    "missing prompt": json.dumps({"data_source": "x"}),
    "null prompt": json.dumps({"data_source": "x", "prompt": None}),
    "empty prompt": json.dumps({"data_source": "x", "prompt": ""}),
    "blank prompt": json.dumps({"data_source": "x", "prompt": "  \n"}),
    "empty message list": json.dumps({"data_source": "x", "prompt": []}),
    "prompt is a number": json.dumps({"data_source": "x", "prompt": 5}),
    "prompt is an object": json.dumps({"data_source": "x", "prompt": {"role": "user", "content": "hi"}}),
    "message without content": json.dumps({"data_source": "x", "prompt": [{"role": "user"}]}),
    "message without role": json.dumps({"data_source": "x", "prompt": [{"content": "hi"}]}),
    "message content not a string": json.dumps({"data_source": "x", "prompt": [{"role": "user", "content": 3}]}),
    "message is a string": json.dumps({"data_source": "x", "prompt": ["hi"]}),
    "missing data_source": json.dumps({"prompt": "hi"}),
    "data_source not a string": json.dumps({"data_source": 7, "prompt": "hi"}),
    "empty data_source": json.dumps({"data_source": "", "prompt": "hi"}),
    "reward_model not a dict": json.dumps({"data_source": "x", "prompt": "hi", "reward_model": "72"}),
    "extra_info not a dict": json.dumps({"data_source": "x", "prompt": "hi", "extra_info": [1]}),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_malformed_row_raises_with_file_row_and_fix(tmp_path, case):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(verl_row(0)) + "\n" + json.dumps(verl_row(1)) + "\n" + BAD_ROWS[case] + "\n")
    with pytest.raises(DatasetError) as caught:
        load_records([path])
    message = str(caught.value)
    assert str(path) in message
    assert "row 3:" in message
    assert "data.skip_bad_rows=true" in message


def test_malformed_row_names_the_problem(tmp_path):
    def problem(line: str) -> str:
        path = tmp_path / "one.jsonl"
        path.write_text(line + "\n")
        with pytest.raises(DatasetError) as caught:
            load_records([path])
        return str(caught.value)

    assert "not valid JSON" in problem(BAD_ROWS["invalid JSON"])
    assert "JSON object" in problem(BAD_ROWS["not an object"])
    assert "`prompt` is missing" in problem(BAD_ROWS["missing prompt"])
    assert "`prompt[0]`" in problem(BAD_ROWS["message without content"])
    assert "`data_source` is missing" in problem(BAD_ROWS["missing data_source"])
    assert "`reward_model` must be an object" in problem(BAD_ROWS["reward_model not a dict"])
    assert "`extra_info` must be an object" in problem(BAD_ROWS["extra_info not a dict"])


def test_non_utf8_line_is_a_bad_row(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(verl_row(0)).encode() + b"\n" + b'{"data_source": "x", "prompt": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"row 2: not valid UTF-8"):
        load_records([path])


def test_malformed_parquet_row_reports_its_row(tmp_path):
    rows = [verl_row(0), verl_row(1), verl_row(2, data_source=None), verl_row(3)]
    path = write_parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(DatasetError, match=r"bad\.parquet, row 3: `data_source` is missing"):
        load_records([path])
    records, skipped = load_records([path], skip_bad_rows=True)
    assert skipped == 1
    assert [r.extra_info["index"] for r in records] == [0, 1, 3]


def test_skip_bad_rows_skips_counts_and_keeps_indices_consecutive(tmp_path, caplog):
    lines = [json.dumps(verl_row(0)), *BAD_ROWS.values(), json.dumps(verl_row(1))]
    first = tmp_path / "mixed.jsonl"
    first.write_text("\n".join(lines) + "\n")
    second = write_jsonl(tmp_path / "clean.jsonl", [verl_row(2)])
    with caplog.at_level(logging.WARNING, logger="distrl.data.records"):
        records, skipped = load_records([first, second], skip_bad_rows=True)
    assert skipped == len(BAD_ROWS)
    assert [r.ground_truth for r in records] == ["0", "1", "2"]
    assert [r.index for r in records] == [0, 1, 2]
    assert f"skipped {len(BAD_ROWS)} malformed rows" in caplog.text
    assert "mixed.jsonl, row 2:" in caplog.text


def test_file_without_valid_rows_always_raises(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DatasetError, match=r"empty\.jsonl has no valid rows \(it holds no rows\)"):
        load_records([empty], skip_bad_rows=True)
    all_bad = tmp_path / "all_bad.jsonl"
    all_bad.write_text("[]\n{}\n")
    with pytest.raises(DatasetError, match=r"no valid rows \(all 2 rows are malformed, the first: .*row 1:"):
        load_records([all_bad], skip_bad_rows=True)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DatasetError) as caught:
        load_records([missing], skip_bad_rows=True)
    message = str(caught.value)
    assert str(missing) in message and "does not exist" in message
    assert "data.train_files" in message and "JSONL" in message and "Parquet" in message


def test_all_paths_are_checked_before_any_file_is_read(tmp_path):
    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_text("not json\n")
    with pytest.raises(DatasetError, match="does not exist"):
        load_records([bad_rows, tmp_path / "missing.parquet"])


def test_unsupported_extension_and_directory(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("prompt,data_source\nhi,x\n")
    with pytest.raises(DatasetError) as caught:
        load_records([csv])
    message = str(caught.value)
    assert str(csv) in message and "'.csv'" in message
    assert all(suffix in message for suffix in (".jsonl", ".json", ".parquet"))
    with pytest.raises(DatasetError, match="is not a file"):
        load_records([tmp_path])


def test_unreadable_parquet_is_a_file_error(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet")
    with pytest.raises(DatasetError, match=r"broken\.parquet is not a readable Parquet file"):
        load_records([broken], skip_bad_rows=True)


# --- rendering ---------------------------------------------------------------------------------------------------


def test_render_prompt_with_chat_template():
    tokenizer = build_tokenizer()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert render_prompt(messages, tokenizer) == "system: Be brief.\nuser: 2+2?\nassistant: "
    assert render_prompt("2+2=", tokenizer) == "2+2="


def test_render_prompt_without_chat_template():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = None
    assert render_prompt("plain text", tokenizer) == "plain text"
    with pytest.raises(ValueError, match="no chat template") as caught:
        render_prompt([{"role": "user", "content": "hi"}], tokenizer)
    assert "plain string" in str(caught.value)


def test_loaded_chat_prompt_renders(tmp_path):
    records, _ = load_records([write_parquet(tmp_path / "t.parquet", [verl_row(5)])])
    assert render_prompt(records[0].prompt, build_tokenizer()) == "user: question 5\nassistant: "


# --- streaming ---------------------------------------------------------------------------------------------------


def indices(batch: list[PromptRecord]) -> list[int]:
    return [r.index for r in batch]


def served(stream: PromptStream, batches: int) -> list[int]:
    """Indices of the records in the stream's next ``batches`` batches, flattened."""
    return [index for _ in range(batches) for index in indices(stream.next_batch())]


def test_stream_covers_every_record_once_per_epoch():
    stream = PromptStream(records_of(12), batch_size=4, seed=3)
    epochs = [served(stream, 3) for _ in range(4)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(12))
    assert len({tuple(epoch) for epoch in epochs}) == 4
    assert epochs[0] != list(range(12))


def test_stream_batches_cross_epoch_boundaries():
    stream = PromptStream(records_of(5), batch_size=3, seed=0)
    order = served(stream, 5)
    assert [sorted(order[k : k + 5]) for k in range(0, 15, 5)] == [list(range(5))] * 3
    assert stream.state() == {"epoch": 3, "offset": 0}
    assert len(stream.next_batch(12)) == 12
    assert stream.next_batch(0) == []


def test_stream_is_deterministic_for_a_seed():
    def run(seed: int) -> list[int]:
        stream = PromptStream(records_of(10), batch_size=3, seed=seed)
        return served(stream, 10)

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_stream_without_shuffle_keeps_order():
    stream = PromptStream(records_of(4), batch_size=3, seed=0, shuffle=False)
    assert [indices(stream.next_batch()) for _ in range(3)] == [[0, 1, 2], [3, 0, 1], [2, 3, 0]]


@pytest.mark.parametrize(("size", "batch_size"), [(8, 4), (7, 3), (5, 5), (3, 4)])
def test_stream_resume_reproduces_the_uninterrupted_sequence(size, batch_size):
    total = 3 * size // batch_size + 4
    reference = PromptStream(records_of(size), batch_size=batch_size, seed=11)
    expected = [indices(reference.next_batch()) for _ in range(total)]
    for cut in range(total):
        before = PromptStream(records_of(size), batch_size=batch_size, seed=11)
        for _ in range(cut):
            before.next_batch()
        saved = json.loads(json.dumps(before.state()))
        assert set(saved) == {"epoch", "offset"} and 0 <= saved["offset"] < size
        resumed = PromptStream(records_of(size), batch_size=batch_size, seed=11)
        resumed.load_state(saved)
        assert [indices(resumed.next_batch()) for _ in range(total - cut)] == expected[cut:]


def test_stream_resume_at_an_epoch_boundary_serves_the_next_epoch():
    reference = PromptStream(records_of(8), batch_size=4, seed=1)
    expected = [indices(reference.next_batch()) for _ in range(6)]
    stream = PromptStream(records_of(8), batch_size=4, seed=1)
    stream.next_batch()
    stream.next_batch()
    assert stream.state() == {"epoch": 1, "offset": 0}
    end_of_epoch = PromptStream(records_of(8), batch_size=4, seed=1)
    end_of_epoch.load_state({"epoch": 0, "offset": 8})
    assert end_of_epoch.state() == {"epoch": 1, "offset": 0}
    for resumed in (stream, end_of_epoch):
        batches = [indices(resumed.next_batch()) for _ in range(4)]
        assert batches == expected[2:]
        assert all(len(batch) == 4 for batch in batches)


def test_stream_rejects_bad_arguments_and_states():
    with pytest.raises(ValueError, match="at least one record"):
        PromptStream([], batch_size=1, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        PromptStream(records_of(2), batch_size=0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        PromptStream(records_of(2), batch_size=1, seed=-1)
    stream = PromptStream(records_of(4), batch_size=2, seed=0)
    with pytest.raises(ValueError, match="past the end"):
        stream.load_state({"epoch": 0, "offset": 5})
    with pytest.raises(ValueError, match="epoch"):
        stream.load_state({"epoch": -1, "offset": 0})
    with pytest.raises(ValueError, match="offset"):
        stream.load_state({"epoch": 0, "offset": 1.5})
    with pytest.raises(ValueError, match="cannot take"):
        stream.next_batch(-1)


@pytest.mark.parametrize(
    ("a", "b", "worked"),
    [
        (47, 8, "7+8=15,4+0+1=5;55"),
        (99, 99, "9+9=18,9+9+1=19;198"),
        (5, 3, "5+3=8;8"),
        (120, 7, "0+7=7,2+0=2,1+0=1;127"),
    ],
)
def test_the_scratchpad_shows_each_column_sum_with_its_carry(a, b, worked):
    assert worked_solution(a, b) == worked
    assert BUILTIN_VERIFIERS[SCRATCHPAD_SOURCE](worked, str(a + b)) == 1.0


def test_scratchpad_problems_carry_their_worked_solution_and_are_scored_on_the_answer():
    plain, worked = (make_problems(20, digits=2, seed=4, scratchpad=s) for s in (False, True))
    assert [r.prompt for r in plain] == [r.prompt for r in worked]
    record = worked[0]
    assert record.data_source == SCRATCHPAD_SOURCE
    assert record.extra_info["ground_truth_response"] == worked_solution(record.extra_info["a"], record.extra_info["b"])
    verify = BUILTIN_VERIFIERS[SCRATCHPAD_SOURCE]
    assert verify(f"garbage;{record.ground_truth}", record.ground_truth) == 1.0  # outcome reward: the answer only
    assert verify(record.ground_truth, record.ground_truth) == 0.0  # no scratchpad, no ';'


@pytest.mark.parametrize(("a", "b", "careless", "worked"), [
    (47, 8, 45, "7+8=15,4+0=4;45"),
    (57, 68, 15, "7+8=15,5+6=11;15"),
    (5, 7, 2, "5+7=12;2"),
    (12, 34, 46, "2+4=6,1+3=4;46"),
])  # fmt: skip
def test_the_careless_teacher_forgets_every_carry(a, b, careless, worked):
    assert careless_sum(a, b) == careless
    assert worked_solution(a, b, carry=False) == worked


def test_splits_are_fixed_by_the_prompt_and_cover_the_task_in_tenths():
    prompts = [f"{a}+{b}=" for a in range(100) for b in range(100)]
    counts = {name: sum(split_of(p) == name for p in prompts) for name in ("heldout", "train", "probe", "warm_start")}
    assert sum(counts.values()) == len(prompts)
    assert 0.08 < counts["heldout"] / len(prompts) < 0.12 and 0.27 < counts["train"] / len(prompts) < 0.33
    assert 0.08 < counts["probe"] / len(prompts) < 0.12 and 0.47 < counts["warm_start"] / len(prompts) < 0.53
    drawn = make_problems(200, digits=2, seed=1, split="train")
    assert {split_of(r.prompt) for r in drawn} == {"train"}
    assert [r.prompt for r in drawn] == [r.prompt for r in make_problems(200, digits=2, seed=1, split="train")]
