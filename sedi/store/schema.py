"""The run database's tables: the SQL schema of ``sedi.db`` and its version.

:class:`sedi.store.db.RunStore` creates these tables when it opens a run directory and refuses a database written
with another :data:`SCHEMA_VERSION` (and adds the :data:`ADDED_COLUMNS` an older file of this version lacks).
Readers (``sedi status``, ``sedi report``) query them directly.
"""

SCHEMA_VERSION = 2

# Columns added to a table after its schema version shipped: (table, column, SQL type and default). Opening a run
# directory adds any that are missing (an additive ALTER TABLE, so the version stays and older sedi versions of the
# same schema still read and write the file); they come last in their table, as ALTER TABLE puts them.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("calls", "cached_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("calls", "batch_id", "TEXT"),
    ("calls", "base_url", "TEXT"),
    ("requests", "shape", "TEXT"),
    ("candidates", "original_output", "TEXT"),
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS configs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, digest TEXT NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL
);
-- One row per HTTP attempt. status: sent (in flight) | ok | length | error | interrupted | refused (never sent:
-- not a call, left out of every count).
-- charged_* is what the budget counts: the reported usage, or the reserved worst case when the
-- outcome is unknown (timeout, dropped connection, unreadable body, a process killed mid-request).
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL,
    http_status INTEGER,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    reserved_tokens INTEGER NOT NULL DEFAULT 0,
    reserved_cost_usd REAL NOT NULL DEFAULT 0,
    charged_tokens INTEGER NOT NULL DEFAULT 0,
    charged_cost_usd REAL NOT NULL DEFAULT 0,
    latency_s REAL,
    error_class TEXT,
    error TEXT,
    started_at REAL NOT NULL,
    cached_tokens INTEGER NOT NULL DEFAULT 0,  -- of prompt_tokens, from the provider's prompt cache (ADDED_COLUMNS)
    batch_id TEXT,  -- the Batch API job that carried the request, once created (teacher.batch_api; ADDED_COLUMNS)
    base_url TEXT,  -- the endpoint the attempt went to (one of teacher.base_urls; ADDED_COLUMNS)
    UNIQUE (request_key, attempt)
);
-- The response cache, content-addressed by request_key (see sedi.teacher.client.request_key).
CREATE TABLE IF NOT EXISTS responses (
    request_key TEXT PRIMARY KEY,
    call_id INTEGER NOT NULL REFERENCES calls(id),
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created_at REAL NOT NULL
);
-- Batch API jobs (teacher.batch_api; see sedi.teacher.batch_api). A row is written, with its lines, before anything is
-- uploaded: marker is sent as the job's metadata (sedi_job) and names its input file, so a process killed between
-- a create and its record finds the file or the job again instead of making a second one.
-- state: new | uploaded | created | ended.
CREATE TABLE IF NOT EXISTS batch_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    marker TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    state TEXT NOT NULL,
    input_file_id TEXT,
    batch_id TEXT,
    status TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
-- One line of a job: its ledger row (custom_id is 'call-<call_id>') and the request as the cache stores it.
CREATE TABLE IF NOT EXISTS batch_lines (
    call_id INTEGER PRIMARY KEY REFERENCES calls(id),
    job_id INTEGER NOT NULL REFERENCES batch_jobs(id),
    request TEXT NOT NULL
);
-- Every planned teacher request with its purpose: which round, which in-context tasks (provenance)
-- or, for instance generation, which candidate it serves.
CREATE TABLE IF NOT EXISTS requests (
    request_key TEXT PRIMARY KEY,
    round INTEGER NOT NULL,
    kind TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    candidate_id INTEGER,
    context TEXT NOT NULL DEFAULT '[]',
    parse_error TEXT,
    shape TEXT  -- a generation request's shape (sedi.config.shaping.PromptShape.name; ADDED_COLUMNS)
);
-- Every candidate task parsed from a response, with the verdict of the filters:
-- kept | rejected | pending (waiting for instances) ; rule: which filter decided; detail: JSON.
-- pooled: the instruction joined the similarity pool (it passed the heuristics and the similarity rule).
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_key TEXT NOT NULL,
    position INTEGER NOT NULL,
    round INTEGER NOT NULL,
    instruction TEXT NOT NULL,
    input TEXT NOT NULL DEFAULT '',
    output TEXT NOT NULL DEFAULT '',
    problem TEXT,
    verdict TEXT NOT NULL,
    rule TEXT,
    detail TEXT,
    pooled INTEGER NOT NULL DEFAULT 0,
    is_classification INTEGER,
    -- set when generation.repair replaced output: the output as parsed ('' when missing; ADDED_COLUMNS)
    original_output TEXT,
    UNIQUE (request_key, position)
);
CREATE TABLE IF NOT EXISTS instances (
    candidate_id INTEGER NOT NULL REFERENCES candidates(id),
    idx INTEGER NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    PRIMARY KEY (candidate_id, idx)
);
CREATE TABLE IF NOT EXISTS seed_pool (
    task_id TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    instruction TEXT NOT NULL,
    input TEXT NOT NULL DEFAULT '',
    output TEXT NOT NULL DEFAULT '',
    added_round INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS seed_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    action TEXT NOT NULL,
    round INTEGER,
    step INTEGER,
    signal REAL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL
);
-- One row per optimizer step of the student; step counts across rounds (the adapter continues).
-- task_ids: JSON list of candidate ids trained in that step; attractive: picked by the feedback rule.
CREATE TABLE IF NOT EXISTS train_steps (
    round INTEGER NOT NULL,
    step INTEGER NOT NULL,
    grad_norm REAL,
    loss REAL,
    learning_rate REAL,
    task_ids TEXT NOT NULL,
    attractive INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (round, step)
);
-- Per-example loss of each trained task after its round (a no-grad pass with the round's adapter), the
-- second training signal: logged always, used to pick promotions when feedback.promote is 'top_k'.
CREATE TABLE IF NOT EXISTS example_losses (
    round INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    loss REAL NOT NULL,
    PRIMARY KEY (round, task_id)
);
-- Training batches as composed by the diversity stage: JSON list of candidate ids per batch.
CREATE TABLE IF NOT EXISTS batches (
    round INTEGER NOT NULL,
    batch_index INTEGER NOT NULL,
    task_ids TEXT NOT NULL,
    clusters INTEGER,
    mean_cosine_distance REAL,
    PRIMARY KEY (round, batch_index)
);
-- Numbers measured at the end of each round (kept, keep_rate, heldout_loss, diversity, seed_pool_size, ...).
CREATE TABLE IF NOT EXISTS round_metrics (
    round INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (round, name)
);
-- The last stage each round completed (sedi.base.vocabulary.RoundStage), so a resumed run never redoes one.
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""
