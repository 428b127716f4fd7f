"""The job queue and history: one SQLite file, every state change one transaction.

A job moves queued → running → succeeded | failed | cancelled (or queued → cancelled). Claiming the next job and
cancelling a queued one are single conditional UPDATEs inside a transaction, so the worker and the API can never
both win the same job. One connection is shared by the event loop and the worker thread behind a lock; each call is
a few milliseconds at most.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
RESTART_REASON = "interrupted by server restart"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order (FIFO within a priority)
    id        TEXT NOT NULL UNIQUE,
    status    TEXT NOT NULL,
    priority  INTEGER NOT NULL,
    workflow  TEXT NOT NULL,                      -- the workflow document (JSON)
    requested TEXT,                               -- JSON list of output node ids; NULL = all output nodes
    created   REAL NOT NULL,                      -- Unix seconds
    started   REAL,
    finished  REAL,
    progress  TEXT,                               -- JSON {node, value, max}: the last progress seen
    outputs   TEXT,                               -- JSON {node id: output-node result}
    executed  TEXT,                               -- JSON list of node ids
    cached    TEXT,
    error     TEXT,                               -- JSON {node, type, message}
    seconds   REAL,                               -- the engine's run time (NULL if it never ran)
    timings   TEXT,                               -- JSON {node id: seconds} of the executed nodes
    seeds     TEXT,                               -- JSON {node id: {input: seed}}: the seeds used, drawn ones included
    client    TEXT                                -- JSON a server extension keeps with the jobs submitted through it
);
CREATE INDEX IF NOT EXISTS jobs_by_queue_order ON jobs (status, priority DESC, seq);
"""
# Columns added after the first release, with their types: a queue file written by an older version gains them
# when it is opened (ALTER TABLE ... ADD COLUMN keeps every row; old jobs read them as NULL).
_ADDED_COLUMNS = {"seconds": "REAL", "timings": "TEXT", "seeds": "TEXT", "client": "TEXT"}
_SUMMARY = "id, status, priority, created, started, finished, progress, outputs, executed, cached, error, seconds, timings, seeds"


@dataclass(frozen=True)
class Job:
    """What the worker needs to run a claimed job."""

    id: str
    workflow: dict[str, Any]
    outputs: list[str] | None


class JobStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly one `with` block.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for name, sql_type in _ADDED_COLUMNS.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {sql_type}")
            # Jobs waiting, kept up to date by the transactions that change it: /health reads it without a query,
            # so it answers at once however busy the store is (this process alone writes the locked data dir).
            self.queued = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status='queued'").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def add(self, workflow: dict[str, Any], outputs: list[str] | None = None, priority: int = 0, *,
            job_id: str | None = None, client: Any = None) -> str:
        """Queue a job; returns its id (``job_id`` when given: ValueError if a job has it already). ``client``: JSON
        that the API it came through keeps with it (e.g. the request as that API's clients sent it)."""
        job_id = job_id or uuid.uuid4().hex
        try:
            with self._transaction() as db:
                db.execute("INSERT INTO jobs (id, status, priority, workflow, requested, created, client) "
                           "VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                           (job_id, priority, json.dumps(workflow), _dump(outputs), time.time(), _dump(client)))
                self.queued += 1
        except sqlite3.IntegrityError:
            raise ValueError(f"there is already a job {job_id!r}") from None
        return job_id

    def recover(self) -> int:
        """Mark jobs left 'running' by a process that died as failed; returns how many.

        We fail them rather than re-queue them: a job that crashed the process could otherwise crash it again on
        every start, and a user who wants it again can resubmit (its finished nodes may still be cheap)."""
        error = {"node": None, "type": "Interrupted", "message": RESTART_REASON}
        with self._transaction() as db:
            return db.execute("UPDATE jobs SET status='failed', finished=?, error=? WHERE status='running'",
                              (time.time(), json.dumps(error))).rowcount

    def claim_next(self) -> Job | None:
        """Mark the highest-priority, oldest queued job running and return it (None when the queue is empty)."""
        with self._transaction() as db:
            row = db.execute("SELECT id, workflow, requested FROM jobs WHERE status='queued' "
                             "ORDER BY priority DESC, seq LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status='running', started=? WHERE id=?", (time.time(), row["id"]))
            self.queued -= 1
        return Job(row["id"], json.loads(row["workflow"]), json.loads(row["requested"]) if row["requested"] else None)

    def finish(self, job_id: str, status: str, *, progress: dict | None = None, outputs: dict | None = None,
               executed: list[str] | None = None, cached: list[str] | None = None, error: dict | None = None,
               seconds: float | None = None, timings: dict[str, float] | None = None,
               seeds: dict[str, dict[str, int]] | None = None) -> bool:
        if status not in FINISHED:
            raise ValueError(f"finish() needs one of {sorted(FINISHED)}, not {status!r}")
        with self._transaction() as db:
            return db.execute(
                "UPDATE jobs SET status=?, finished=?, progress=?, outputs=?, executed=?, cached=?, error=?, "
                "seconds=?, timings=?, seeds=? WHERE id=? AND status='running'",
                (status, time.time(), _dump(progress), _dump(outputs), _dump(executed), _dump(cached), _dump(error),
                 seconds, _dump(timings), _dump(seeds), job_id),
            ).rowcount == 1

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job that has not started; False if it is not (or no longer) queued."""
        with self._transaction() as db:
            cancelled = db.execute("UPDATE jobs SET status='cancelled', finished=? WHERE id=? AND status='queued'",
                                   (time.time(), job_id)).rowcount == 1
            self.queued -= cancelled
        return cancelled

    def get(self, job_id: str, with_workflow: bool = False, with_client: bool = False) -> dict[str, Any] | None:
        extra = (", workflow, requested" if with_workflow else "") + (", client" if with_client else "")
        rows = self._query(f"SELECT {_SUMMARY}{extra} FROM jobs WHERE id=?", (job_id,))
        return _public(rows[0]) if rows else None

    def list(self, status: str | tuple[str, ...] | None = None, limit: int = 50, offset: int = 0, *,
             with_client: bool = False, run_order: bool = False) -> list[dict[str, Any]]:
        """Jobs newest first (``run_order``: in the order the worker claims them), optionally only those with one
        of the statuses; ``with_client``: only the jobs that carry client data, with it."""
        statuses = (status,) if isinstance(status, str) else tuple(status or ())
        conditions = [f"status IN ({', '.join('?' * len(statuses))})"] if statuses else []
        if with_client:
            conditions.append("client IS NOT NULL")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        order = "priority DESC, seq" if run_order else "seq DESC"
        extra = ", client" if with_client else ""
        rows = self._query(f"SELECT {_SUMMARY}{extra} FROM jobs {where} ORDER BY {order} LIMIT ? OFFSET ?",
                           (*statuses, limit, offset))
        return [_public(row) for row in rows]

    def count(self, status: str | None = None) -> int:
        """How many jobs have this status (every job ever queued: None)."""
        if status is None:
            return self._query("SELECT COUNT(*) FROM jobs")[0][0]
        return self._query("SELECT COUNT(*) FROM jobs WHERE status=?", (status,))[0][0]


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _public(row: sqlite3.Row) -> dict[str, Any]:
    job = {key: row[key] for key in ("id", "status", "priority", "created", "started", "finished")}
    job["progress"] = _load(row["progress"], None)
    job["outputs"] = _load(row["outputs"], {})
    job["executed"] = _load(row["executed"], [])
    job["cached"] = _load(row["cached"], [])
    job["error"] = _load(row["error"], None)
    job["seconds"] = row["seconds"]
    job["timings"] = _load(row["timings"], {})
    job["seeds"] = _load(row["seeds"], {})
    if "workflow" in row.keys():
        job["workflow"] = json.loads(row["workflow"])
        job["requested_outputs"] = _load(row["requested"], None)
    if "client" in row.keys():
        job["client"] = _load(row["client"], None)
    return job


def _load(text: str | None, default: Any) -> Any:
    return default if text is None else json.loads(text)
