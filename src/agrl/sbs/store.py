"""The study file: its SQLite schema, and every read and write after creation (study.create writes it).

`meta` holds the format, the provenance (who created it from what: input paths and hashes, seeds,
settings), the judges' names, k and the scheme; `items` each pair with both judges' outputs, its
stratum, its weight and `flipped` (judge b shown on the left); `answers` the current answer of each
rater to each item; `events` every answer, replacement and undo, in order. WAL mode (set at creation,
kept by the file), synchronous=FULL and one transaction per answer: a killed server loses no answer it
confirmed. One short-lived connection per call, so the web server's threads share nothing.

    Study("study.sqlite").answer("ana", item_id=3, choice="left")
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from agrl.errors import UserError
from agrl.files import input_file

FORMAT = "agrl-sbs/1"
CHOICES = ("left", "right", "both_good", "both_bad")
MAX_COMMENT_CHARS = 2000
MAX_RATER_CHARS = 64

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY, pair_id TEXT NOT NULL UNIQUE, query TEXT NOT NULL, product TEXT NOT NULL,
    stratum TEXT, weight REAL NOT NULL, agree INTEGER NOT NULL, flipped INTEGER NOT NULL,
    a TEXT NOT NULL, b TEXT NOT NULL);
CREATE TABLE answers (
    item_id INTEGER NOT NULL REFERENCES items(id), rater TEXT NOT NULL, choice TEXT NOT NULL,
    verdict TEXT NOT NULL, label INTEGER, comment TEXT, at TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (item_id, rater));
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, item_id INTEGER NOT NULL, rater TEXT NOT NULL, action TEXT NOT NULL,
    choice TEXT, label INTEGER, comment TEXT, at TEXT NOT NULL);
"""


class Refused(Exception):
    """A request the study will not take (HTTP status + message); nothing was written."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Study:
    """Reads and writes of a study file. One short-lived connection per call: safe across threads."""

    def __init__(self, path: str | Path):
        self.path = input_file(path, "study")
        try:
            with self._connect() as db:
                meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
                self.size = db.execute("SELECT count(*) FROM items").fetchone()[0]
        except (sqlite3.DatabaseError, ValueError):
            raise UserError(f"{path}: not an SBS study file (create one with `agrl sbs create`)") from None
        if meta.get("format") != FORMAT:
            raise UserError(f"{path}: not an SBS study file (format {meta.get('format')!r}, expected {FORMAT})")
        self.meta = meta
        self.k = int(meta["raters_per_item"])
        self.codes = [code for code, _ in meta["scheme"]["levels"]]

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)  # transactions are explicit
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the request is answered
        return db

    # -- the rater's queue

    def _next_id(self, db: sqlite3.Connection, rater: str) -> int | None:
        """The first item (study order) this rater has not answered and fewer than k raters have."""
        row = db.execute(
            "SELECT id FROM items WHERE id NOT IN (SELECT item_id FROM answers WHERE rater = ?) "
            "AND (SELECT count(*) FROM answers WHERE item_id = items.id) < ? ORDER BY id LIMIT 1",
            (rater, self.k),
        ).fetchone()
        return row["id"] if row else None

    def progress(self, db: sqlite3.Connection, rater: str) -> dict:
        done = db.execute("SELECT count(*) FROM answers WHERE rater = ?", (rater,)).fetchone()[0]
        open_ = db.execute(
            "SELECT count(*) FROM items WHERE id NOT IN (SELECT item_id FROM answers WHERE rater = ?) "
            "AND (SELECT count(*) FROM answers WHERE item_id = items.id) < ?",
            (rater, self.k),
        ).fetchone()[0]
        return {"done": done, "total": done + open_}

    def next_for(self, rater: str) -> dict:
        """What the page shows next: the item (blinded: left/right) or none, and the rater's progress."""
        rater = check_rater(rater)
        db = self._connect()
        try:
            item_id = self._next_id(db, rater)
            return {"item": None if item_id is None else self._shown(db, item_id, rater),
                    "progress": self.progress(db, rater)}
        finally:
            db.close()

    def _shown(self, db: sqlite3.Connection, item_id: int, rater: str) -> dict:
        row = db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        a, b = json.loads(row["a"]), json.loads(row["b"])
        left, right = (b, a) if row["flipped"] else (a, b)
        previous = db.execute("SELECT choice, label, comment FROM events WHERE item_id = ? AND rater = ? "
                              "AND action != 'undo' ORDER BY seq DESC LIMIT 1", (item_id, rater)).fetchone()
        return {
            "id": item_id,
            "query": row["query"],
            "product": json.loads(row["product"]),
            "left": {k: left[k] for k in ("label", "label_name", "reasoning", "score")},
            "right": {k: right[k] for k in ("label", "label_name", "reasoning", "score")},
            "previous": dict(previous) if previous else None,  # after an undo: what was chosen before
        }

    # -- writes: one transaction each

    def answer(self, rater: str, item_id: int, choice: str, label: int | None = None,
               comment: str | None = None, replace: bool = False) -> dict:
        """Record an answer. A second answer by the same rater needs replace=True: it then replaces the
        first, and both stay in the events log. Refused (4xx) before anything is written otherwise."""
        rater = check_rater(rater)
        if choice not in CHOICES:
            raise Refused(422, f"choice: {choice!r} is not one of {', '.join(CHOICES)}")
        if label is not None and label not in self.codes:
            raise Refused(422, f"label: {label!r} is not a code of the study's scheme {self.codes}")
        if comment is not None and len(comment) > MAX_COMMENT_CHARS:
            raise Refused(422, f"comment: {len(comment)} characters, over {MAX_COMMENT_CHARS}")
        comment = comment.strip() or None if comment else None
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time: the checks below see what we write over
            try:
                item = db.execute("SELECT flipped FROM items WHERE id = ?", (item_id,)).fetchone()
                if item is None:
                    raise Refused(404, f"item {item_id}: no such item in this study")
                old = db.execute("SELECT choice FROM answers WHERE item_id = ? AND rater = ?",
                                 (item_id, rater)).fetchone()
                if old is not None and not replace:
                    raise Refused(409, f"item {item_id}: {rater} has answered it already; "
                                       "send replace: true to replace that answer")
                taken = db.execute("SELECT count(*) FROM answers WHERE item_id = ? AND rater != ?",
                                   (item_id, rater)).fetchone()[0]
                if old is None and taken >= self.k:
                    raise Refused(409, f"item {item_id}: already answered by {taken} rater(s), the study's k")
                verdict = _verdict(choice, bool(item["flipped"]))
                at = now()
                seq = db.execute("INSERT INTO events (item_id, rater, action, choice, label, comment, at) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (item_id, rater, "replace" if old else "answer", choice, label, comment, at)
                                 ).lastrowid
                db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (item_id, rater, choice, verdict, label, comment, at, seq))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return {"item_id": item_id, "replaced": old is not None, "progress": self.progress(db, rater)}
        finally:
            db.close()

    def undo(self, rater: str) -> dict:
        """Take back this rater's latest answer (logged); the page then shows that item again."""
        rater = check_rater(rater)
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                last = db.execute("SELECT item_id FROM answers WHERE rater = ? ORDER BY seq DESC LIMIT 1",
                                  (rater,)).fetchone()
                if last is None:
                    raise Refused(409, f"{rater} has no answer to undo")
                db.execute("DELETE FROM answers WHERE item_id = ? AND rater = ?", (last["item_id"], rater))
                db.execute("INSERT INTO events (item_id, rater, action, at) VALUES (?, ?, 'undo', ?)",
                           (last["item_id"], rater, now()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return {"item": self._shown(db, last["item_id"], rater), "progress": self.progress(db, rater)}
        finally:
            db.close()

    # -- for the statistics

    def rows(self) -> tuple[list[dict], list[dict]]:
        """(items, answers) as plain dicts: each item with its two outputs, each answer in judge terms."""
        db = self._connect()
        try:
            items = []
            for row in db.execute("SELECT * FROM items ORDER BY id"):
                item = dict(row)
                item["a"], item["b"] = json.loads(item["a"]), json.loads(item["b"])
                items.append(item)
            answers = [dict(r) for r in db.execute("SELECT * FROM answers ORDER BY seq")]
            return items, answers
        finally:
            db.close()


def _verdict(choice: str, flipped: bool) -> str:
    """The page's side -> the judge it showed: left is judge a unless the item was flipped."""
    if choice == "left":
        return "b" if flipped else "a"
    if choice == "right":
        return "a" if flipped else "b"
    return choice


def check_rater(rater: object) -> str:
    name = rater.strip() if isinstance(rater, str) else ""
    if not name:
        raise Refused(422, "rater: give your name")
    if len(name) > MAX_RATER_CHARS or not name.isprintable():
        raise Refused(422, f"rater: at most {MAX_RATER_CHARS} printable characters")
    return name
