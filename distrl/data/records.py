"""Prompt datasets in verl's row layout: loading with validation, chat rendering, a resumable stream.

A row is one JSON object: a line of a ``.jsonl`` / ``.json`` file (JSON Lines) or a row of a ``.parquet`` file::

    {"data_source": "openai/gsm8k",
     "prompt": [{"role": "user", "content": "..."}],          # or a plain string
     "ability": "math",
     "reward_model": {"style": "rule", "ground_truth": "72"},
     "extra_info": {"split": "train", "index": 0}}

Hugging Face ``datasets`` are read too: a folder written by ``Dataset.save_to_disk`` (or a
``DatasetDict``'s, with a split) or a hub name (``openai/gsm8k``, with a split and subset); their rows are
mapped to this layout by a :class:`ColumnMap` (the prompt column, the answer column, the data source).

``prompt`` and ``data_source`` are required; ``reward_model`` and ``extra_info`` are optional objects; other
fields (``ability``, ...) are ignored. ``reward_model.ground_truth`` may be any JSON value (a string, a
number, a list of accepted answers, an object of test cases, ...) and reaches reward functions as it is,
as in verl. Every row is validated by :func:`load_records`, which the runtime calls
before any actor starts, so a bad dataset fails at once with the file, the row and the fix.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import re
import reprlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES
#: The Parquet columns a record is built from; other columns are not read.
RECORD_COLUMNS = ("prompt", "data_source", "reward_model", "extra_info")

_SUPPORTED = f"JSONL ({', '.join(JSONL_SUFFIXES)}, one JSON object per line) or Parquet ({', '.join(PARQUET_SUFFIXES)})"
_ROW_FIX = "fix the row, or set data.skip_bad_rows=true to skip malformed rows"


@dataclass(frozen=True)
class PromptRecord:
    """One validated dataset row.

    ``prompt`` is a non-blank string or a non-empty list of chat messages (dicts whose values are strings, with
    at least ``role`` and ``content``); ``ground_truth`` is ``reward_model["ground_truth"]``: a number as text
    (``72.0`` → ``"72"``; what the built-in verifiers compare), ``None`` when absent or NaN, any other JSON value
    (a string, a list, an object, a boolean) as it is; ``extra_info`` is the row's object or ``{}``; ``index``
    is the 0-based position in the concatenation of all loaded files (skipped rows take no index).
    """

    prompt: str | list[dict[str, str]]
    data_source: str
    ground_truth: Any
    extra_info: dict
    index: int


@dataclass(frozen=True)
class ColumnMap:
    """How the rows of a Hugging Face dataset become verl-layout rows (``data.prompt_key`` and its
    neighbours): ``prompt`` from ``prompt_key``; ``reward_model`` as the row has it, else
    ``{"ground_truth": row[answer_key]}``; ``data_source`` as the row has it, else ``data_source``, else
    the dataset's name; ``extra_info`` as the row has it, else every other column (so TRL-style reward
    functions get them by name). ``split``/``subset``: which split (and hub configuration) to read."""

    prompt_key: str = "prompt"
    answer_key: str | None = None
    data_source: str | None = None
    split: str = "train"
    subset: str | None = None

    def row(self, row: Mapping[str, Any], dataset: str) -> dict:
        """One dataset row in verl's layout."""
        taken = {self.prompt_key, self.answer_key, "data_source", "reward_model", "extra_info"}
        out: dict[str, Any] = {
            "prompt": row.get(self.prompt_key),
            "data_source": row.get("data_source") or self.data_source or dataset,
        }
        if row.get("reward_model") is not None:
            out["reward_model"] = row["reward_model"]
        elif self.answer_key is not None:
            out["reward_model"] = {"ground_truth": row.get(self.answer_key)}
        info = row.get("extra_info")
        out["extra_info"] = info if isinstance(info, Mapping) else {k: v for k, v in row.items() if k not in taken}
        return out


#: A hub dataset name: ``name`` or ``owner/name`` (tried when no such local path exists).
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
#: Files ``save_to_disk`` writes into a dataset's (or a dataset dict's) folder.
_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class DatasetError(ValueError):
    """A dataset file or row that cannot be used; the message names the file, the 1-based row (for row
    problems), the problem and the fix."""


class _BadRow(Exception):
    """A problem with one row; :func:`load_records` adds the file, the row number and the fix."""


def load_records(
    files: Sequence[str | Path] | str | Path, *, skip_bad_rows: bool = False, columns: ColumnMap | None = None
) -> tuple[list[PromptRecord], int]:
    """Read prompt rows from JSONL and Parquet files in verl's layout, file after file, in order.

    Returns ``(records, number_of_skipped_rows)``. One path counts as a one-file list (``~`` expands); an empty list
    gives ``([], 0)``. Every path is checked (exists, is a file, supported extension) before any is read.
    Row numbers are 1-based: for JSONL they are line numbers (blank lines are ignored but counted), for Parquet
    row positions. A malformed row raises :class:`DatasetError`, or with ``skip_bad_rows`` is skipped, counted and
    reported in one warning per file. File-level problems always raise, including a file without a valid row.
    """
    paths = [Path(files).expanduser()] if isinstance(files, str | Path) else [Path(f).expanduser() for f in files]
    for path in paths:
        _check_file(path)
    records: list[PromptRecord] = []
    skipped = 0
    for path in paths:
        file_records, file_skipped = _load_file(path, first_index=len(records), skip_bad_rows=skip_bad_rows,
                                                columns=columns or ColumnMap())  # fmt: skip
        records.extend(file_records)
        skipped += file_skipped
    return records, skipped


def drop_long_prompts(
    records: list[PromptRecord], tokenizer: Any, max_len: int, *, skip: bool
) -> tuple[list[PromptRecord], int]:
    """The records whose rendered prompt fits ``max_len`` tokens (``data.max_prompt_len``), and how
    many were dropped; without ``skip`` (``data.skip_bad_rows``) the first one too long raises
    :class:`DatasetError` naming it (an engine would otherwise fail on it mid-run)."""
    texts = [render_prompt(r.prompt, tokenizer) for r in records]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    kept = [r for r, n in zip(records, lengths, strict=True) if n <= max_len]
    if len(kept) < len(records) and (not skip or not kept):
        first = next(i for i, n in enumerate(lengths) if n > max_len)
        raise DatasetError(
            f"the prompt of record {records[first].index} (0-based, across data.train_files) is {lengths[first]} "
            f"tokens, over data.max_prompt_len={max_len} ({len(records) - len(kept)} prompt(s) are); raise "
            "data.max_prompt_len, or set data.skip_bad_rows=true to drop them (counted)"
        )
    return kept, len(records) - len(kept)


def render_prompt(prompt: str | list[dict[str, str]], tokenizer: Any) -> str:
    """The text the model sees for ``prompt``.

    A string is returned as it is; chat messages go through
    ``tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``. Chat messages and a
    tokenizer without a chat template raise ``ValueError`` naming the fix.
    """
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"the prompt is a list of chat messages but the tokenizer {name!r} has no chat template; "
            "use a model whose tokenizer has a chat template, or give `prompt` as a plain string in the dataset"
        )
    return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)


class PromptStream:
    """Endless iteration over ``records`` in epochs, reproducible and resumable.

    Each epoch visits every record exactly once: in a permutation drawn from
    ``numpy.random.default_rng(seed + epoch)`` when ``shuffle``, else in the given order. A batch that runs past
    the end of an epoch continues with the next epoch. ``state()`` is the position as plain ints,
    ``{"epoch": e, "offset": k}`` with ``0 <= k < len(records)`` (k records of epoch e already served);
    after ``load_state(state)`` the following batches are exactly those the uninterrupted stream would have given.
    """

    def __init__(self, records: Sequence[PromptRecord], *, batch_size: int, seed: int, shuffle: bool = True):
        if not records:
            raise ValueError("PromptStream needs at least one record; check data.train_files")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.records = tuple(records)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self._epoch = 0
        self._offset = 0
        self._order = self._epoch_order(0)

    def next_batch(self, n: int | None = None) -> list[PromptRecord]:
        """The next ``n`` records (``batch_size`` when ``n`` is None), crossing into following epochs as needed."""
        n = self.batch_size if n is None else n
        if n < 0:
            raise ValueError(f"cannot take {n} records")
        batch: list[PromptRecord] = []
        while len(batch) < n:
            take = min(n - len(batch), len(self.records) - self._offset)
            batch.extend(self.records[i] for i in self._order[self._offset : self._offset + take])
            self._advance(take)
        return batch

    def state(self) -> dict[str, int]:
        """The position, JSON-serializable: ``{"epoch": int, "offset": int}``."""
        return {"epoch": self._epoch, "offset": self._offset}

    def load_state(self, state: Mapping[str, int]) -> None:
        """Resume at a position from :meth:`state`; an offset equal to the dataset size means the next epoch."""
        epoch, offset = state["epoch"], state["offset"]
        for key, value in (("epoch", epoch), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"prompt stream state {key} must be an int >= 0, got {value!r}")
        if offset > len(self.records):
            raise ValueError(
                f"prompt stream state offset {offset} is past the end of the dataset ({len(self.records)} records); "
                "the checkpoint was saved with different data.train_files"
            )
        self._epoch, self._offset = int(epoch), 0
        self._order = self._epoch_order(self._epoch)
        self._advance(int(offset))

    def _advance(self, count: int) -> None:
        self._offset += count
        if self._offset == len(self.records):
            self._epoch += 1
            self._offset = 0
            self._order = self._epoch_order(self._epoch)

    def _epoch_order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.records)))
        return np.random.default_rng(self.seed + epoch).permutation(len(self.records)).tolist()


def _kind(path: Path) -> str:
    """``saved`` (a ``save_to_disk`` folder), ``hub`` (no such path, but a hub dataset name) or ``file``."""
    if path.is_dir() and any((path / marker).exists() for marker in _SAVED_MARKERS):
        return "saved"
    if not path.exists() and path.suffix.lower() not in SUPPORTED_SUFFIXES and _HUB_NAME.match(str(path)):
        return "hub"
    return "file"


def _check_file(path: Path) -> None:
    if _kind(path) != "file":
        return
    if not path.exists():
        raise DatasetError(f"dataset file {path} does not exist; data.train_files should point at {_SUPPORTED} files")
    if not path.is_file():
        raise DatasetError(f"dataset path {path} is not a file; list the {_SUPPORTED} files themselves")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise DatasetError(
            f"dataset file {path} has unsupported extension {path.suffix or '(none)'!r}; supported: {_SUPPORTED}"
        )


def _load_file(
    path: Path, *, first_index: int, skip_bad_rows: bool, columns: ColumnMap
) -> tuple[list[PromptRecord], int]:
    records: list[PromptRecord] = []
    skipped = 0
    first_problem = ""
    for row_number, row in _read_rows(path, columns):
        try:
            records.append(_to_record(row, index=first_index + len(records)))
        except _BadRow as bad:
            problem = f"{path}, row {row_number}: {bad}"
            if not skip_bad_rows:
                raise DatasetError(f"{problem}; {_ROW_FIX}") from None
            skipped += 1
            first_problem = first_problem or problem
    if not records:
        detail = f"all {skipped} rows are malformed, the first: {first_problem}" if skipped else "it holds no rows"
        raise DatasetError(
            f"dataset file {path} has no valid rows ({detail}); it must hold prompt rows in verl's layout, "
            'e.g. {"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": "..."}]}'
        )
    if skipped:
        logger.warning("skipped %d malformed rows of %s (the first: %s)", skipped, path, first_problem)
    return records, skipped


def _read_rows(path: Path, columns: ColumnMap) -> Iterator[tuple[int, Any]]:
    """``(1-based row number, row)``; a JSONL row is its raw line, parsed by :func:`_to_record`."""
    if _kind(path) != "file":
        yield from _dataset_rows(path, columns)
        return
    if path.suffix.lower() in PARQUET_SUFFIXES:
        yield from _parquet_rows(path)
        return
    with path.open("rb") as lines:
        for line_number, line in enumerate(lines, start=1):
            if line.strip():
                yield line_number, line


def _dataset_rows(path: Path, columns: ColumnMap) -> Iterator[tuple[int, dict]]:
    """The rows of a saved or hub Hugging Face dataset, mapped by ``columns`` (Arrow-backed: read as iterated)."""
    try:
        import datasets
    except ImportError:
        raise DatasetError(f"{path} is a Hugging Face dataset; reading it needs `pip install datasets`") from None
    try:
        if _kind(path) == "saved":
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(str(path), columns.subset, split=columns.split)
    except Exception as err:
        raise DatasetError(f"could not read the Hugging Face dataset {path} ({type(err).__name__}: {err}); check "
                           "the name (data.subset for a configuration) or the folder") from err  # fmt: skip
    if isinstance(loaded, datasets.DatasetDict):
        if columns.split not in loaded:
            raise DatasetError(f"the dataset {path} has the splits {', '.join(loaded)}, not {columns.split!r}; set "
                               "data.train_split / data.val_split")  # fmt: skip
        loaded = loaded[columns.split]
    if columns.prompt_key not in loaded.column_names:
        raise DatasetError(f"the dataset {path} has no column {columns.prompt_key!r} (its columns: "
                           f"{', '.join(loaded.column_names)}); set data.prompt_key")  # fmt: skip
    if columns.answer_key is not None and columns.answer_key not in loaded.column_names:
        raise DatasetError(f"the dataset {path} has no column {columns.answer_key!r} (its columns: "
                           f"{', '.join(loaded.column_names)}); set data.answer_key")  # fmt: skip
    name = path.name if _kind(path) == "saved" else str(path)
    for number, row in enumerate(loaded, start=1):
        yield number, columns.row(row, name)


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow as pa  # only for Parquet data: a GPU image without pyarrow still runs JSONL and the built-in task
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        columns = [name for name in RECORD_COLUMNS if name in parquet.schema_arrow.names]
        row_number = 0
        for batch in parquet.iter_batches(columns=columns):
            for row in batch.to_pylist():
                row_number += 1
                yield row_number, row
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(
            f"dataset file {path} is not a readable Parquet file ({err}); re-export it as Parquet or JSONL"
        ) from err


def _to_record(row: Any, *, index: int) -> PromptRecord:
    if isinstance(row, bytes):
        row = _parse_json_line(row)
    if not isinstance(row, dict):
        raise _BadRow(f"a row must be a JSON object, got {_describe(row)}")
    prompt = _prompt(row.get("prompt"))
    data_source = row.get("data_source")
    if data_source is None:
        raise _BadRow("`data_source` is missing")
    if not isinstance(data_source, str) or not data_source:
        raise _BadRow(f"`data_source` must be a non-empty string, got {_describe(data_source)}")
    reward_model = _optional_object(row, "reward_model")
    return PromptRecord(
        prompt=prompt,
        data_source=data_source,
        ground_truth=_ground_truth(reward_model.get("ground_truth")),
        extra_info=_optional_object(row, "extra_info"),
        index=index,
    )


def _parse_json_line(line: bytes) -> Any:
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _BadRow("not valid UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise _BadRow(
            f"not valid JSON ({err.msg} at column {err.colno}); each line must hold one complete JSON object"
        ) from None


def _prompt(value: Any) -> str | list[dict[str, str]]:
    if value is None:
        raise _BadRow("`prompt` is missing")
    if isinstance(value, str):
        if not value.strip():
            raise _BadRow("`prompt` is an empty string")
        return value
    if isinstance(value, list):
        if not value:
            raise _BadRow("`prompt` is an empty list of messages")
        return [_message(message, position) for position, message in enumerate(value)]
    raise _BadRow(f'`prompt` must be a string or a list of {{"role", "content"}} messages, got {_describe(value)}')


def _message(message: Any, position: int) -> dict[str, str]:
    """A chat message with string values; null values are dropped (Parquet fills absent struct fields with null)."""
    if isinstance(message, dict):
        present = {key: value for key, value in message.items() if value is not None}
        if {"role", "content"} <= present.keys() and all(isinstance(value, str) for value in present.values()):
            return present
    raise _BadRow(
        f'`prompt[{position}]` must be a message {{"role": str, "content": str}} with string values, '
        f"got {_describe(message)}"
    )


def _optional_object(row: dict, key: str) -> dict:
    value = row.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _BadRow(f"`{key}` must be an object (dict), got {_describe(value)}")
    return value


def _ground_truth(value: Any) -> Any:
    """A row's ground truth: numbers as text (integral floats print as ints, 72.0 → "72"; NaN counts as absent,
    since a numeric column with missing values is stored as float), any other JSON value as it is (numpy
    arrays and scalars from Parquet as lists and Python scalars); anything JSON cannot hold is refused."""
    if value is None or isinstance(value, str | bool | np.bool_):
        return bool(value) if isinstance(value, np.bool_) else value
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else str(float(value))
    plain = _plain(value)
    try:
        json.dumps(plain, allow_nan=False)
    except (TypeError, ValueError):
        raise _BadRow(
            f"`reward_model.ground_truth` must be a JSON value (string, number, list, object), got {_describe(value)}"
        ) from None
    return plain


def _plain(value: Any) -> Any:
    """``value`` with numpy arrays and scalars (as Parquet readers may give them) turned into Python ones."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {reprlib.repr(value)}"
