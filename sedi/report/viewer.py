"""``sedi report``'s data viewer: a second self-contained page, ``viewer.html``, where a user reads what a run kept
and rejected and why.

Each candidate shows its instruction, input and output, its verdict with the deciding rule and what that rule
recorded (the ROUGE-L score and nearest instruction of a near-duplicate, the evaluation item a ``contaminated``
task copies, ...), its round, the in-context tasks its prompt showed (by id and text) and the training signals the
loop measured for it. The table filters by verdict, rule, round and a text search; the lineage view goes from a
seed (or any task a prompt showed) to the tasks its prompts produced, with kept and rejected counts.

No network: the CSS and JavaScript are inline (:mod:`sedi.report.viewer_assets`) and the data is embedded as JSON
in a ``<script type="application/json">`` tag, with every ``<`` escaped so that no text of the run can close it.
The database is opened read-only, as for the report.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sedi.base.redact import redact_known
from sedi.exceptions import RunDirError
from sedi.report.viewer_assets import CSS, JS, PAGE_SIZE
from sedi.store.rundir import DB_NAME, connect_readonly, unreadable
from sedi.store.signals import SIGNAL_COLUMNS, task_signals
from sedi.store.viewer_rows import viewer_candidates, viewer_seeds

# The order of a candidate's fields in the page's data (JS reads them by position: 50,000 rows of arrays are
# about half the size of the same rows as objects).
CANDIDATE_FIELDS = (
    "id", "round", "verdict", "rule", "instruction", "input", "output", "detail", "context", "problem",
    "original_output",
)  # fmt: skip


def _json(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return {"detail": text} if isinstance(default, dict) else default


def viewer_data(run_dir: Path) -> dict[str, Any]:
    """The page's data for one run: candidates (arrays in :data:`CANDIDATE_FIELDS` order, ``context`` an index
    into ``contexts``), the distinct in-context id lists, the seed pool's texts and the training signals."""
    db_path = run_dir / DB_NAME
    if not db_path.is_file():
        raise RunDirError(f"{run_dir}: no sedi run here (missing {DB_NAME}): pass a directory made by 'sedi run'")
    try:
        db = connect_readonly(db_path)
        try:
            candidates, seeds = viewer_candidates(db), viewer_seeds(db)
            try:
                signals = task_signals(db)
            except sqlite3.OperationalError:  # a run directory from before training was recorded
                signals = {}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise unreadable(db_path, exc) from None
    # A round's prompts share few distinct contexts: store each once and point to it.
    contexts: dict[str, int] = {}
    rows = []
    for c in candidates:
        context = contexts.setdefault(c.context or "[]", len(contexts))
        detail = _json(c.detail, None)
        rows.append([
            c.id, c.round, c.verdict, c.rule, c.instruction, c.input, c.output, detail, context, c.problem,
            c.original_output,
        ])  # fmt: skip
    return {
        "run": str(run_dir),
        "fields": list(CANDIDATE_FIELDS),
        "page_size": PAGE_SIZE,
        "candidates": rows,
        "contexts": [[str(task) for task in _json(text, [])] for text in contexts],
        "seeds": {s.task_id: [s.instruction, s.origin, s.added_round, s.active] for s in seeds},
        "signal_fields": list(SIGNAL_COLUMNS),
        "signals": {str(task): [getattr(sig, name) for name in SIGNAL_COLUMNS] for task, sig in signals.items()},
    }


SEED_HEAD = ("Task", "Origin", "Instruction", "Produced", "Kept", "Rejected")
SEED_WIDTHS = ("11em", "9em", "", "6em", "5em", "6em")


def render_viewer(data: dict[str, Any], title: str) -> str:
    """The self-contained page for ``data`` (see :func:`viewer_data`)."""
    # The run's own credentials blanked before "<" is escaped (a key holding "<" is still found), then "<" as \u003c:
    # JSON.parse reads it back, and no "</script>" or "<!--" in a task can end the data block.
    payload = redact_known(json.dumps(data, ensure_ascii=False, separators=(",", ":"))).replace("<", "\\u003c")
    head = ["Id", "Round", "Verdict", "Rule", "Instruction", "Input", "Output"]
    widths = ["5em", "4.5em", "6.5em", "10em", "", "", ""]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p id="summary" class="muted"></p>
<nav class="tabs"><button id="tab-candidates" class="on">Candidates</button>
<button id="tab-lineage">Lineage</button></nav>
<section id="view-candidates">
<div class="filters">
<label>Verdict <select id="f-verdict"><option value="">all</option></select></label>
<label>Rule <select id="f-rule"><option value="">all</option></select></label>
<label>Round <select id="f-round"><option value="">all</option></select></label>
<input id="f-search" type="search" placeholder="Search instruction, input and output">
<span id="f-seed" class="chip" hidden>From the prompts that showed <b id="f-seed-name"></b>
<button id="f-seed-clear" title="Show every candidate">&times;</button></span>
</div>
{_pager("cand", head, widths)}
</section>
<section id="view-lineage" hidden>
<p class="muted">Every task a generation prompt showed (the seed pool, then kept tasks shown in context), with what the
prompts that showed it produced. Pick one to list those tasks.</p>
<div class="filters"><input id="seed-search" type="search" placeholder="Search seed ids and instructions"></div>
{_pager("seeds", SEED_HEAD, SEED_WIDTHS)}
<div id="seed-picked" hidden>
<h2 id="seed-title"></h2><p><span id="seed-counts"></span>
<button id="seed-filter">Filter the candidates table by this task</button></p>
{_pager("kids", head, widths)}
</div>
</section>
<script type="application/json" id="sedi-data">{payload}</script>
<script>{JS}</script>
</body></html>
"""


def _pager(prefix: str, head: Sequence[str], widths: Sequence[str]) -> str:
    cols = "".join(
        f'<th style="width:{w}">{h}</th>' if w else f"<th>{h}</th>" for h, w in zip(head, widths, strict=True)
    )
    return (
        f'<div class="pager"><button id="{prefix}-prev">&lsaquo; Previous</button><span id="{prefix}-info"></span>'
        f'<button id="{prefix}-next">Next &rsaquo;</button></div>'
        f'<table id="{prefix}"><thead><tr>{cols}</tr></thead><tbody id="{prefix}-body"></tbody></table>'
    )


def write_viewer(run_dir: Path, page: Path, label: str | None = None) -> Path:
    """Write the viewer of ``run_dir`` to ``page``; return its path."""
    data = viewer_data(run_dir)
    text = redact_known(render_viewer(data, f"Candidates of {label or run_dir.name}"))  # the title too
    try:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise RunDirError(
            f"{page.parent}: cannot write the viewer there ({exc.strerror or exc}): pass --out with a writable folder"
        ) from None
    return page


def write_viewers(run_dirs: Sequence[Path], out_dir: Path, labels: Sequence[str] | None = None) -> list[Path]:
    """``out_dir/viewer.html`` for one run; for several (a comparison), ``out_dir/viewer-<label>.html`` each."""
    if len(run_dirs) == 1:
        return [write_viewer(run_dirs[0], out_dir / "viewer.html", labels[0] if labels else None)]
    pages: list[Path] = []
    for i, run_dir in enumerate(run_dirs):
        label = labels[i] if labels else run_dir.name
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "run"
        page = out_dir / f"viewer-{name}.html"
        if page in pages:  # two arms whose labels differ only in punctuation
            page = out_dir / f"viewer-{name}-{i + 1}.html"
        pages.append(write_viewer(run_dir, page, label))
    return pages
