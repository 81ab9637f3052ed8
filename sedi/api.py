"""The Python API: ``sedi run``, ``sedi status`` and ``sedi compare`` as functions, and a run's data as
``datasets`` and pandas objects.

::

    import sedi

    run = sedi.run("sedi.yaml", run_dir="runs/mine")   # or a dict, or a SediConfig; rerun to resume
    run.kept()      # datasets.Dataset, one row per kept task
    run.ledger()    # pandas.DataFrame, one row per teacher call (HTTP attempt)
    run.metrics()   # pandas.DataFrame, one row per round
    run.status()    # the dict `sedi status --json` prints

A thin layer over the code the ``sedi`` command runs (:func:`sedi.loop.run`, :func:`sedi.experiment.comparison.compare`,
:func:`sedi.report.summary.read_summary`), so it keeps the command's guarantees: a bad config, seed file or
run directory raises :class:`~sedi.exceptions.ConfigError` or :class:`~sedi.exceptions.RunDirError` before any
teacher request, a ledger row is written before every request, and a rerun replays paid answers from the cache.
Where the command exits with a code, the API raises the exception the command would have printed (a budget
stop is not an error: ``Run.outcome.state`` is ``"budget_exhausted"``). Reading a run never changes it.

Nothing heavy is imported until a function is called: ``import sedi`` stays as fast as ``sedi --help``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from sedi.exceptions import ConfigError

if TYPE_CHECKING:
    import datasets
    import pandas

    from sedi.base.vocabulary import ProgressHook
    from sedi.config.model import SediConfig
    from sedi.loop import RunOutcome

# What a config may be given as: a SediConfig, a mapping (nested sections or dotted keys, as ``--set`` takes them),
# a YAML file's path, or None for the embedded defaults. (Union, not |: evaluated at run time on Python 3.10.)
ConfigLike = Union["SediConfig", Mapping[str, Any], str, "os.PathLike[str]", None]


def load(config: ConfigLike = None, overrides: Sequence[str] = (), caller: str = "sedi.run") -> tuple[SediConfig, str]:
    """The config and the name its errors call it by: defaults, then the file or mapping, then ``overrides``
    (``dotted.key=value`` items, as ``--set`` takes them); one :class:`ConfigError` line when invalid."""
    from pydantic import ValidationError

    from sedi.config.model import SediConfig, _format_validation_error, apply_overrides, load_config

    if config is None or isinstance(config, str | os.PathLike):
        path = None if config is None else Path(config)
        return load_config(path, list(overrides)), "defaults" if path is None else str(path)
    if isinstance(config, SediConfig):
        if not overrides:
            return config, f"the SediConfig passed to {caller}"
        config = config.model_dump(mode="json")
    if not isinstance(config, Mapping):
        raise ConfigError(f"config: {type(config).__name__} given to {caller}: pass a SediConfig, a dict or a path")
    source = f"the config dict passed to {caller}"
    data: dict[str, Any] = copy.deepcopy({str(key): value for key, value in config.items() if "." not in str(key)})
    for key, value in config.items():
        if "." in str(key):
            _set_dotted(data, str(key), copy.deepcopy(value), source)
    apply_overrides(data, list(overrides))
    source += " with overrides" if overrides else ""
    try:
        return SediConfig.model_validate(data), source
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def _set_dotted(data: dict[str, Any], key: str, value: Any, source: str) -> None:
    """``data[a][b][c] = value`` for the key ``a.b.c`` (the value as given: no text round trip)."""
    *sections, leaf = key.split(".")
    node = data
    for part in sections:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: key {key!r}: {part!r} is a value, not a section: fix the key")
        node = child
    node[leaf] = value


@dataclass(frozen=True)
class Run:
    """A run directory, read without taking its lock: it may be finished, or running in another process.

    Every method reads the database afresh, so on a run that is still going each call sees its latest rows.
    ``outcome`` is how :func:`run` ended (``state`` and ``message``); ``None`` for a run opened with
    :func:`open_run` (its state is in ``status()["state"]``)."""

    run_dir: Path
    outcome: RunOutcome | None = None

    def status(self) -> dict[str, Any]:
        """Exactly the dict ``sedi status --json`` prints (:func:`sedi.report.summary.read_summary`)."""
        from sedi.report.summary import read_summary

        return read_summary(self.run_dir)

    def kept(self) -> datasets.Dataset:
        """The kept tasks, one row each, as ``data/kept.jsonl`` holds them: ``id``, ``instruction``, ``input``
        and ``output`` (the first instance), ``instances`` (every input/output pair), ``is_classification``,
        and where it came from: ``round``, ``call_id`` (its ledger row), ``request_key``, ``position`` (in the
        answer), ``sample_index``, ``in_context`` (the task ids its prompt showed), ``instance_request_key``."""
        import datasets

        from sedi.store.frames import kept_rows, read

        rows, features = read(self.run_dir, kept_rows), _kept_features()
        if not rows:  # from_list([]) has no columns to match the features against
            return datasets.Dataset.from_dict({name: [] for name in features}, features=features)
        extra = [name for name in rows[0] if name not in features]
        if extra:  # a column kept_records gained later: its type as inferred, the known ones as fixed
            inferred = datasets.Dataset.from_list([{name: row[name] for name in extra} for row in rows]).features
            features = datasets.Features({**features, **inferred})
        return datasets.Dataset.from_list(rows, features=features)

    def ledger(self) -> pandas.DataFrame:
        """The call ledger, one row per HTTP attempt to the teacher (the ``calls`` table: status, tokens, what
        the budget charged, latency, error), with the ``round`` and ``kind`` of its request. Its length is
        ``status()["calls"]``; answers replayed from the cache are not calls."""
        import pandas

        from sedi.store.frames import ledger_rows, read

        columns, rows = read(self.run_dir, ledger_rows)
        return pandas.DataFrame.from_records(rows, columns=columns)

    def metrics(self) -> pandas.DataFrame:
        """One row per round: ``round``, ``stage`` (the last it completed) and every number the round measured
        (cumulative ``calls`` and ``kept``, ``keep_rate``, ``heldout_loss``, diversity, seed pool, timings; a
        metric the round did not measure is NaN)."""
        import pandas

        from sedi.store.frames import metric_rows, read

        rows = read(self.run_dir, metric_rows)
        return pandas.DataFrame.from_records(rows, columns=None if rows else ["round", "stage"])


def _kept_features() -> datasets.Features:
    """Fixed column types, so that an empty run and a run whose tasks all lack in-context ids still load."""
    from datasets import Features, Value

    text = Value("string")
    return Features(
        {
            "id": text,
            "instruction": text,
            "input": text,
            "output": text,
            "instances": [{"input": text, "output": text}],  # a Python list: a list feature in every datasets >= 3
            "is_classification": Value("bool"),
            "round": Value("int64"),
            "request_key": text,
            "call_id": Value("int64"),
            "position": Value("int64"),
            "sample_index": Value("int64"),
            "in_context": [text],
            "instance_request_key": text,
        }
    )


def run(
    config: ConfigLike = None,
    run_dir: str | os.PathLike[str] = "runs/default",
    *,
    overrides: Sequence[str] = (),
    progress: ProgressHook | None = None,
) -> Run:
    """Run (or resume) the loop, as ``sedi run CONFIG --run-dir RUN_DIR --set ...`` does, and return the run.

    ``config``: a :class:`~sedi.config.model.SediConfig`, a mapping (nested sections, or dotted keys such as
    ``{"run.max_rounds": 1}``), a YAML file's path, or None for the embedded defaults; ``overrides``:
    ``dotted.key=value`` items applied last, as ``--set`` is. ``progress(stage, done, total)`` is called as the
    command's progress bars are. Raises what the command prints as ``error:`` (ConfigError, RunDirError,
    TeacherError, ...) with nothing spent on a bad input; ``KeyboardInterrupt`` leaves the run resumable."""
    from sedi.cli.serve import offline_defaults
    from sedi.loop import run as run_loop

    offline_defaults()  # as every command that loads models: nothing may try a model hub
    cfg, source = load(config, overrides)
    where = Path(run_dir)
    outcome = run_loop(cfg, where, source, progress)
    return Run(where, outcome)


def open_run(run_dir: str | os.PathLike[str]) -> Run:
    """An existing run (finished, stopped, or running in another process), read-only. A directory without a run
    database raises :class:`~sedi.exceptions.RunDirError`, as ``sedi status`` does."""
    found = Run(Path(run_dir))
    found.status()  # the one-line RunDirError now, not at the first read
    return found


@dataclass(frozen=True)
class Comparison:
    """A finished ``sedi compare``: ``table`` is ``comparison.json`` as written (each arm's means in
    ``table["arms"]``, its runs in ``table["runs"]``, the ratios over the baseline in ``table["ratios"]``)."""

    run_dir: Path
    table: dict[str, Any]

    @property
    def arms(self) -> list[str]:
        """The arms in column order, the baseline first."""
        return list(self.table["arm_order"])

    def frame(self) -> pandas.DataFrame:
        """One row per arm (index: the arm's name, baseline first), its means over the seeds as columns."""
        import pandas

        per = self.table["arms"]
        return pandas.DataFrame.from_dict({arm: per[arm] for arm in self.arms}, orient="index")

    def markdown(self) -> str:
        """The table ``sedi compare`` prints (``comparison.md``)."""
        return (self.run_dir / "comparison.md").read_text(encoding="utf-8")

    def runs(self, arm: str) -> list[Run]:
        """The runs of one arm, one per seed in order, each opened read-only."""
        if arm not in self.table["runs"]:
            raise KeyError(f"{arm!r}: not an arm of this comparison ({', '.join(self.arms)})")
        return [Run(Path(row["run_dir"])) for row in self.table["runs"][arm]]


def compare(
    config: ConfigLike = None,
    run_dir: str | os.PathLike[str] = "runs/compare",
    *,
    arms: Sequence[str] = ("self-instruct", "default"),
    stop_at: str = "kept",
    repeat: int = 1,
    parallel: bool = False,
    overrides: Sequence[str] = (),
    progress: ProgressHook | None = None,
) -> Comparison:
    """Run named arms on the same teacher, seeds, student and budget, as ``sedi compare`` does (the same
    arguments: ``arms`` first the baseline, ``stop_at`` "kept" or "budget", ``repeat`` seeds, ``parallel``),
    write ``comparison.json`` and ``comparison.md`` into ``run_dir`` and return them. An unknown arm or a bad
    config raises :class:`~sedi.exceptions.ConfigError` before any run starts."""
    from sedi.cli.serve import offline_defaults
    from sedi.experiment.arms import parse_arms
    from sedi.experiment.comparison import compare as run_compare

    offline_defaults()
    names = parse_arms(",".join(arms))
    if stop_at not in ("kept", "budget"):
        raise ConfigError(f"stop_at {stop_at!r}: use 'kept' or 'budget'")
    if repeat < 1:
        raise ConfigError(f"repeat {repeat}: run at least one seed (repeat=1)")
    cfg, source = load(config, overrides, "sedi.compare")
    where = Path(run_dir)
    run_compare(
        cfg, where, source, "kept" if stop_at == "kept" else "budget", repeat, progress, arms=names, parallel=parallel
    )
    return Comparison(where, json.loads((where / "comparison.json").read_text(encoding="utf-8")))
