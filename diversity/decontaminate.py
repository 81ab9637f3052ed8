"""Decontamination: is a candidate task a copy of an evaluation item?

Three measures, cheapest first; the first that hits names the evaluation item (:class:`ContaminationMatch`):

- ``exact``: the candidate's normalised prompt (instruction then input) equals an item's.
- ``ngram``: the candidate's text (instruction, input, output) shares at least ``min_overlap`` distinct word
  n-grams with an item's text (n = 13 by default, as large-model reports since GPT-3). An item shorter than n
  words is matched by its whole word sequence if it has at least ``min_short`` words; below that a sequence
  such as "name a colour red" turns up in unrelated text, so only an exact copy counts.
- ``rouge``: ROUGE-L F1 of the prompts strictly above ``rouge_threshold`` (0.85, as the relaxed similarity
  filter), by :class:`~diversity.rouge_filter.RougeFilter`, whose exact bounds skip most LCS computations.

Why prompts, not instructions (measured on the bundled files): seed 48 and held-out items 89 and 124 all read
"Answer the following question." with different inputs; on instructions (``rouge_on="instruction"``) the
bundled seeds would be refused and item 124 called a copy of item 89; on prompts nothing bundled matches. The
prompt is also what the student is evaluated on, whichever field holds the input.

Words: NFKC, casefold, maximal runs of Unicode word characters (accents and non-Latin scripts count, unlike in
ROUGE's [a-z0-9] tokens). An n-gram is a 64-bit polynomial hash of its words' string hashes; the evaluation
n-grams sit in one sorted numpy array (12 bytes each) and a candidate's are looked up with ``searchsorted``.
Two n-grams share a hash with odds near 2^-64; string hashes are salted per process, so an index stays in
the process that built it.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from diversity.rouge_filter import RougeFilter

__all__ = ["ContaminationMatch", "Decontaminator", "EvalFileError", "EvalItem", "SeedHit", "load_eval_items", "words"]

Measure = Literal["exact", "ngram", "rouge"]
HashArray = npt.NDArray[np.uint64]
IndexArray = npt.NDArray[np.int64]
_WORD = re.compile(r"\w+")
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so multiplying by it is a bijection on 64-bit integers
_ROW_HINT = "each row needs a non-empty 'instruction' string, optionally 'input' and 'output' (or 'instances')"


class EvalFileError(ValueError):
    """An evaluation file that cannot be used; the message names the file, the row or field, and the fix."""


class TaskLike(Protocol):
    """Anything with the three text fields: an :class:`EvalItem`, a seed or a generated task."""

    @property
    def instruction(self) -> str: ...
    @property
    def input(self) -> str: ...
    @property
    def output(self) -> str: ...


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One evaluation item. ``id`` says where it came from, e.g. ``heldout.jsonl:line 17``."""

    id: str
    instruction: str
    input: str = ""
    output: str = ""


@dataclass(frozen=True, slots=True)
class ContaminationMatch:
    """The evaluation item a candidate copies: ``score`` is 1.0 for ``exact``, the number of shared n-grams for
    ``ngram`` (1 for a whole short item), the ROUGE-L F1 of the prompts (or instructions) for ``rouge``."""

    item_id: str
    item_index: int
    measure: Measure
    score: float


@dataclass(frozen=True, slots=True)
class SeedHit:
    """A seed (its position in the seed list) that matches an evaluation item."""

    seed_index: int
    match: ContaminationMatch


def words(text: str) -> list[str]:
    """The normalised words that ``exact`` and ``ngram`` compare (see the module docstring)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def _gram_hashes(tokens: Sequence[str], n: int) -> Iterator[tuple[int, HashArray]]:
    """``(k, hash of every k-gram)`` for k = 1 .. min(n, len(tokens)); each step extends the previous one."""
    ids = np.array(list(map(hash, tokens)), dtype=np.int64).view(np.uint64)
    grams = ids
    for k in range(1, min(n, len(tokens)) + 1):
        if k > 1:
            grams = grams[:-1] * _BASE + ids[k - 1 :]  # uint64 arithmetic wraps: a hash modulo 2^64
        yield k, grams


class _HashTable:
    """Sorted n-gram hashes with the item each came from; built once, then only looked up."""

    def __init__(self, hashes: list[HashArray], owners: list[int]) -> None:
        flat = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
        who = np.repeat(np.array(owners, dtype=np.int64), [len(h) for h in hashes])
        order = np.argsort(flat, kind="stable")
        self.hashes: HashArray = flat[order]
        self.owners: IndexArray = who[order]

    def owners_of(self, queries: HashArray) -> IndexArray:
        """Owner of every stored hash equal to one of ``queries``, once per distinct query."""
        if not len(self.hashes) or not len(queries):
            return np.zeros(0, dtype=np.int64)
        # Most candidates hit nothing: one searchsorted settles that, without sorting the queries first.
        left = np.searchsorted(self.hashes, queries)
        hit = self.hashes[np.minimum(left, len(self.hashes) - 1)] == queries
        if not hit.any():
            return np.zeros(0, dtype=np.int64)
        queries = np.unique(queries[hit])
        left = np.searchsorted(self.hashes, queries, side="left")
        right = np.searchsorted(self.hashes, queries, side="right")
        return np.concatenate([self.owners[a:b] for a, b in zip(left.tolist(), right.tolist(), strict=True)])


class Decontaminator:
    """Checks candidate tasks against a fixed set of evaluation items (see the module docstring)."""

    def __init__(
        self,
        items: Iterable[EvalItem],
        *,
        n: int = 13,
        min_overlap: int = 1,
        min_short: int = 5,
        rouge_threshold: float | None = 0.85,
        rouge_on: Literal["prompt", "instruction"] = "prompt",
        workers: int = 1,
    ) -> None:
        """``rouge_threshold=None`` turns the ROUGE-L measure off; ``workers``: rapidfuzz threads for it."""
        if n < 1 or min_overlap < 1 or min_short < 1:
            raise ValueError(f"n, min_overlap and min_short must be positive, got {n}, {min_overlap}, {min_short}")
        self.items = tuple(items)
        self.n, self.min_overlap, self.min_short, self.rouge_on = n, min_overlap, min_short, rouge_on
        self._prompts: dict[str, int] = {}
        tables: dict[int, tuple[list[HashArray], list[int]]] = {}  # by n-gram length: n, or a short item's length
        for index, item in enumerate(self.items):
            prompt, tokens = self._words(item)
            self._prompts.setdefault(" ".join(prompt), index)
            if len(tokens) < min(n, min_short):
                continue  # matched by exact only
            *_, (k, grams) = _gram_hashes(tokens, n)
            hashes, owners = tables.setdefault(k, ([], []))
            hashes.append(np.unique(grams))
            owners.append(index)
        self._tables = {k: _HashTable(*lists) for k, lists in tables.items()}
        texts = (self._rouge_text(item) for item in self.items)
        self._rouge = None if rouge_threshold is None else RougeFilter(rouge_threshold, texts, workers=workers)

    @classmethod
    def from_files(cls, paths: Iterable[str | Path], **options: Any) -> Decontaminator:
        """A checker over the items of every file (see :func:`load_eval_items`); ``options`` as ``__init__``."""
        return cls([item for path in paths for item in load_eval_items(path)], **options)

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def _words(task: TaskLike) -> tuple[list[str], list[str]]:
        prompt = words(task.instruction) + words(task.input)
        return prompt, prompt + words(task.output)

    def _rouge_text(self, task: TaskLike) -> str:
        return task.instruction if self.rouge_on == "instruction" else f"{task.instruction}\n{task.input}"

    def check(self, task: TaskLike) -> ContaminationMatch | None:
        """:meth:`check_many` for one task."""
        return self.check_many([task])[0]

    def check_many(self, tasks: Sequence[TaskLike]) -> list[ContaminationMatch | None]:
        """Per task, the first measure that hits (exact, then ngram, then rouge), or None when it is clean."""
        results = [self._check_words(task) for task in tasks]
        if self._rouge is not None:
            pending = [i for i, found in enumerate(results) if found is None]
            verdicts = self._rouge.score_batch([self._rouge_text(tasks[i]) for i in pending])
            for i, verdict in zip(pending, verdicts, strict=True):
                if not verdict.kept:
                    results[i] = self.match(verdict.nearest_index, "rouge", verdict.max_score)
        return results

    def match(self, index: int, measure: Measure, score: float) -> ContaminationMatch:
        """The record naming item ``index``."""
        return ContaminationMatch(self.items[index].id, index, measure, score)

    def check_seeds(self, seeds: Sequence[TaskLike]) -> list[SeedHit]:
        """Every seed that matches an evaluation item, with its position in ``seeds``."""
        return [SeedHit(i, found) for i, found in enumerate(self.check_many(seeds)) if found is not None]

    def _check_words(self, task: TaskLike) -> ContaminationMatch | None:
        prompt, tokens = self._words(task)
        index = self._prompts.get(" ".join(prompt)) if prompt else None
        if index is not None:
            return self.match(index, "exact", 1.0)
        short_hits: list[IndexArray] = []
        for k, grams in _gram_hashes(tokens, self.n):
            table = self._tables.get(k)
            if table is None:
                continue
            owners = table.owners_of(grams)
            if k < self.n:
                short_hits.append(owners)
            elif len(owners):
                found, counts = np.unique(owners, return_counts=True)
                best = int(np.argmax(counts))  # first maximum: the lowest item index among ties
                if counts[best] >= self.min_overlap:
                    return self.match(int(found[best]), "ngram", float(counts[best]))
        if short_hits and (hits := np.concatenate(short_hits)).size:
            return self.match(int(hits.min()), "ngram", 1.0)
        return None


def load_eval_items(path: str | Path, *, label: str | None = None) -> list[EvalItem]:
    """Items of a JSONL or CSV file, or of a local folder that ``datasets`` loads (``load_from_disk``, else
    ``load_dataset``). Fields: ``instruction`` (required), ``input``, ``output``, or Self-Instruct's
    ``instances`` (one item per instance). Ids: ``label:line N`` for files (``label`` defaults to the file
    name), ``label:row N`` or ``label:split:row N`` for folders (0-based, as ``dataset[N]``), with ``#i`` for
    the i-th instance of a row that has several. Raises :class:`EvalFileError` naming file, row, field and fix."""
    path = Path(path)
    label = label or path.name
    if path.is_dir():
        rows = _dataset_rows(path, label)
    elif not path.is_file():
        raise EvalFileError(f"{path}: evaluation file not found: fix the path, or remove it from the list")
    elif (suffix := path.suffix.lower()) not in (".jsonl", ".csv"):
        raise EvalFileError(f"{path}: unknown extension '{suffix}': use .jsonl or .csv, or a folder datasets loads")
    else:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise EvalFileError(f"{path}: not UTF-8 text: save it as UTF-8") from None
        found = _csv_rows(path, text) if suffix == ".csv" else _jsonl_rows(path, text)
        rows = ((f"{path}: line {line}", f"{label}:line {line}", row) for line, row in found)
    items = [item for where, item_id, row in rows for item in _items(row, where, item_id)]
    if not items:
        raise EvalFileError(f"{path}: no rows: add evaluation items, or remove it from the list")
    return items


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            try:
                yield line, json.loads(raw)
            except json.JSONDecodeError as exc:
                raise EvalFileError(f"{path}: line {line}: invalid JSON ({exc.msg}): {_ROW_HINT}") from None


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip().lower() for name in next(reader, [])]
        if "instruction" not in header:
            shown = ", ".join(header) or "(empty)"
            raise EvalFileError(f"{path}: line 1: no column 'instruction' (header: {shown}): name the columns")
        line = reader.line_num + 1
        for row in reader:
            if any(cell.strip() for cell in row):
                yield line, dict(zip(header, row, strict=False))
            line = reader.line_num + 1  # a quoted field may span lines
    except csv.Error as exc:
        raise EvalFileError(f"{path}: line {reader.line_num}: malformed CSV ({exc}): quote such fields") from None


def _dataset_rows(path: Path, label: str) -> Iterator[tuple[str, str, Any]]:
    import datasets  # heavy (pyarrow, pandas): only for folders

    try:
        loaded: Any = datasets.load_from_disk(str(path))
    except FileNotFoundError:  # not written by save_to_disk: a folder of data files
        try:
            loaded = datasets.load_dataset(str(path))
        except Exception as exc:  # datasets raises many types for a folder it cannot read
            raise EvalFileError(
                f"{path}: no dataset in the folder ({type(exc).__name__}): save one with Dataset.save_to_disk, "
                "or put JSONL, CSV or Parquet files in it"
            ) from None
    splits = dict(loaded) if isinstance(loaded, Mapping) else {"": loaded}
    for split, dataset in splits.items():
        if "instruction" not in dataset.column_names:
            columns = ", ".join(dataset.column_names)
            raise EvalFileError(f"{path}: no column 'instruction' (columns: {columns}): rename the column to it")
        prefix = f"{label}:{split}:" if len(splits) > 1 else f"{label}:"
        yield from ((f"{path}: {prefix}row {i}", f"{prefix}row {i}", row) for i, row in enumerate(dataset))


def _text(row: Mapping[str, Any], field: str, where: str) -> str:
    value = row.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise EvalFileError(f"{where}: field '{field}' must be a string, got {type(value).__name__}: {_ROW_HINT}")
    return value.strip()


def _items(row: Any, where: str, item_id: str) -> list[EvalItem]:
    if not isinstance(row, Mapping):
        raise EvalFileError(f"{where}: expected an object, got {type(row).__name__}: {_ROW_HINT}")
    instruction = _text(row, "instruction", where)
    if not instruction:
        raise EvalFileError(
            f"{where}: field 'instruction' is {'empty' if 'instruction' in row else 'missing'}: {_ROW_HINT}"
        )
    instances = row.get("instances")
    if instances is None:
        return [EvalItem(item_id, instruction, _text(row, "input", where), _text(row, "output", where))]
    if not isinstance(instances, list) or not instances or not all(isinstance(one, Mapping) for one in instances):
        raise EvalFileError(f"{where}: field 'instances' must be a non-empty list of objects: {_ROW_HINT}")
    items = []
    for i, one in enumerate(instances):
        at, name = f"{where}: instances[{i}]", item_id if len(instances) == 1 else f"{item_id}#{i}"
        items.append(EvalItem(name, instruction, _text(one, "input", at), _text(one, "output", at)))
    return items
