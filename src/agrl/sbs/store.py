"""The study file: its SQLite schema, and every read and write after creation (study.create writes it).

`meta` holds the format, the provenance (who created it from what: input paths and hashes, seeds,
settings), the judges' names, k, the scheme and the product fields shown; `items` each pair with both
judges' outputs, its stratum, its weight, `flipped` (judge b shown on the left) and `gold` (the known
answer of a gold item, else NULL); `raters` each rater's and the lead's name and token; `answers` the
current answer of each rater to each item; `adjudications` the lead's verdict on an item the raters
disagree on; `events` every answer, replacement, undo (with what it took back) and adjudication, in order.
WAL mode (set at creation, kept by the file), synchronous=FULL and one transaction per write: a killed
server loses no answer it confirmed. One short-lived connection per call, so the web server's threads
share nothing. A file of the first format (agrl-sbs/1) is upgraded in place when opened.

    study = Study("study.sqlite"); tokens = study.add_raters(["ana"])
    study.answer("ana", item_id=3, choice="left")
"""

from __future__ import annotations

import hmac
import html
import json
import secrets
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from agrl.errors import HTTPError, UserError
from agrl.files import input_file

FORMAT = "agrl-sbs/2"
OLD_FORMATS = ("agrl-sbs/1",)
CHOICES = ("left", "right", "both_good", "both_bad")
VERDICTS = ("b", "a", "both_good", "both_bad")  # in the judges' terms: b better, a better, both good, both bad
MAX_COMMENT_CHARS = 2000
MAX_RATER_CHARS = 64
MAX_ITEM_ID = 2**63 - 1  # SQLite's INTEGER; a larger id is no item, not an overflow
LEAD = "lead"  # the role (and default name) of whoever reads the results and adjudicates

FIRST_SCHEMA = """
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
# What agrl-sbs/2 added: gold items, latencies, raters with tokens, the lead's adjudications.
ADDED = """
ALTER TABLE items ADD COLUMN gold TEXT;
ALTER TABLE answers ADD COLUMN latency_ms INTEGER;
ALTER TABLE events ADD COLUMN latency_ms INTEGER;
CREATE TABLE raters (name TEXT PRIMARY KEY COLLATE NOCASE, role TEXT NOT NULL, token TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL);
CREATE TABLE adjudications (
    item_id INTEGER PRIMARY KEY REFERENCES items(id), lead TEXT NOT NULL, choice TEXT NOT NULL,
    verdict TEXT NOT NULL, label INTEGER, comment TEXT, at TEXT NOT NULL, seq INTEGER NOT NULL);
"""
SCHEMA = FIRST_SCHEMA + ADDED


# A request the study will not take (HTTP status + message); nothing was written. The one HTTP refusal
# the service raises too (agrl.errors.HTTPError); the rating page answers it as {"detail": ...}.
Refused = HTTPError


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Study:
    """Reads and writes of a study file. One short-lived connection per call: safe across threads."""

    def __init__(self, path: str | Path):
        self.path = input_file(path, "study")
        try:
            with self._connect() as db:
                meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
                if meta.get("format") in OLD_FORMATS:
                    self._upgrade(db)
                    meta["format"] = FORMAT
                self.size = db.execute("SELECT count(*) FROM items").fetchone()[0]
        except (sqlite3.DatabaseError, ValueError):
            raise UserError(f"{path}: not an SBS study file (create one with `agrl sbs create`)") from None
        if meta.get("format") != FORMAT:
            raise UserError(f"{path}: not an SBS study file (format {meta.get('format')!r}, expected {FORMAT})")
        self.meta = meta
        self.k = int(meta["raters_per_item"])
        self.codes = [code for code, _ in meta["scheme"]["levels"]]
        self.show = meta.get("show")  # the product fields raters see; None: all but identifiers

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)  # transactions are explicit
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the request is answered
        return db

    def _upgrade(self, db: sqlite3.Connection) -> None:
        """agrl-sbs/1 -> /2 in one transaction: the new columns and tables; every answer and event kept."""
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, ADDED.split(";")):
                db.execute(statement)
            db.execute("UPDATE meta SET value = ? WHERE key = 'format'", (json.dumps(FORMAT),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- who is asking: a token per rater, one for the lead

    def add_raters(self, names: list[str]) -> dict[str, str]:
        """Give each new name a token (names differ in more than case); the lead has one from the start.
        Returns every name -> token, the lead's under LEAD; a name already there keeps its token."""
        checked = [check_rater(name) for name in names]
        for name in checked:
            if name.casefold() == LEAD:
                raise UserError(f"--rater {name}: reserved for the lead's link; choose another name")
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for name, role in [(LEAD, LEAD)] + [(name, "rater") for name in checked]:
                    db.execute("INSERT OR IGNORE INTO raters VALUES (?, ?, ?, ?)",
                               (name, role, secrets.token_urlsafe(24), now()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return {row["name"]: row["token"] for row in db.execute("SELECT name, token FROM raters ORDER BY rowid")}
        finally:
            db.close()

    def who(self, token: str | None) -> tuple[str, str] | None:
        """(name, role) of a token, None when it is no one's. Compared in constant time."""
        if not token:
            return None
        db = self._connect()
        try:
            rows = db.execute("SELECT name, role, token FROM raters").fetchall()
        finally:
            db.close()
        found = None
        for row in rows:  # every row compared: the time does not tell how much of a token was right
            if hmac.compare_digest(row["token"].encode(), token.encode()):
                found = (row["name"], row["role"])
        return found

    # -- the rater's queue

    def _open(self, rater: str) -> tuple[str, tuple]:
        """Items this rater has not answered and that are open: gold items to all, others to k raters."""
        where = ("FROM items WHERE id NOT IN (SELECT item_id FROM answers WHERE rater = ?) AND (gold IS NOT NULL "
                 "OR (SELECT count(*) FROM answers WHERE item_id = items.id) < ?)")
        return where, (rater, self.k)

    def _next_id(self, db: sqlite3.Connection, rater: str) -> int | None:
        """The first open item (study order) for this rater."""
        where, args = self._open(rater)
        row = db.execute(f"SELECT id {where} ORDER BY id LIMIT 1", args).fetchone()
        return row["id"] if row else None

    def progress(self, db: sqlite3.Connection, rater: str) -> dict:
        done = db.execute("SELECT count(*) FROM answers WHERE rater = ?", (rater,)).fetchone()[0]
        where, args = self._open(rater)
        open_ = db.execute(f"SELECT count(*) {where}", args).fetchone()[0]
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

    def _shown(self, db: sqlite3.Connection, item_id: int, rater: str | None) -> dict:
        """An item as raters see it: blinded (left/right), gold unmarked, the chosen product fields with
        HTML entities decoded (shown as text by the page, so `&lt;b&gt;` is the characters `<b>`)."""
        row = db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        a, b = json.loads(row["a"]), json.loads(row["b"])
        left, right = (b, a) if row["flipped"] else (a, b)
        previous = db.execute("SELECT choice, label, comment FROM events WHERE item_id = ? AND rater = ? "
                              "AND action IN ('answer', 'replace') ORDER BY seq DESC LIMIT 1",
                              (item_id, rater)).fetchone()
        return {
            "id": item_id,
            "query": unescape(row["query"]),
            "product": displayed(json.loads(row["product"]), self.show),
            "left": {k: unescape(left[k]) for k in ("label", "label_name", "reasoning", "score")},
            "right": {k: unescape(right[k]) for k in ("label", "label_name", "reasoning", "score")},
            "previous": dict(previous) if previous else None,  # after an undo: what was chosen before
        }

    # -- writes: one transaction each

    def _check(self, choice: str, label: int | None, comment: str | None) -> str | None:
        if choice not in CHOICES:
            raise Refused(422, f"choice: {choice!r} is not one of {', '.join(CHOICES)}")
        if label is not None and label not in self.codes:
            raise Refused(422, f"label: {label!r} is not a code of the study's scheme {self.codes}")
        if comment is not None and len(comment) > MAX_COMMENT_CHARS:
            raise Refused(422, f"comment: {len(comment)} characters, over {MAX_COMMENT_CHARS}")
        return comment.strip() or None if comment else None

    @staticmethod
    def _item(db: sqlite3.Connection, item_id: int) -> sqlite3.Row:
        item = None if not 0 <= item_id <= MAX_ITEM_ID else db.execute(
            "SELECT flipped, gold FROM items WHERE id = ?", (item_id,)).fetchone()
        if item is None:
            raise Refused(404, f"item_id: {item_id}: no such item in this study")
        return item

    def answer(self, rater: str, item_id: int, choice: str, label: int | None = None,
               comment: str | None = None, replace: bool = False, latency_ms: int | None = None) -> dict:
        """Record an answer. A second answer by the same rater needs replace=True: it then replaces the
        first, and both stay in the events log. Refused (4xx) before anything is written otherwise."""
        rater = check_rater(rater)
        comment = self._check(choice, label, comment)
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time: the checks below see what we write over
            try:
                item = self._item(db, item_id)
                old = db.execute("SELECT choice FROM answers WHERE item_id = ? AND rater = ?",
                                 (item_id, rater)).fetchone()
                if old is not None and not replace:
                    raise Refused(409, f"item {item_id}: {rater} has answered it already; "
                                       "send replace: true to replace that answer")
                taken = db.execute("SELECT count(*) FROM answers WHERE item_id = ? AND rater != ?",
                                   (item_id, rater)).fetchone()[0]
                if old is None and taken >= self.k and item["gold"] is None:
                    raise Refused(409, f"item {item_id}: already answered by {taken} rater(s), the study's k")
                verdict = _verdict(choice, bool(item["flipped"]))
                at = now()
                seq = db.execute("INSERT INTO events (item_id, rater, action, choice, label, comment, at, latency_ms) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (item_id, rater, "replace" if old else "answer",
                                                                     choice, label, comment, at, latency_ms)
                                 ).lastrowid
                db.execute("INSERT OR REPLACE INTO answers (item_id, rater, choice, verdict, label, comment, at, "
                           "seq, latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (item_id, rater, choice, verdict, label, comment, at, seq, latency_ms))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return {"item_id": item_id, "replaced": old is not None, "progress": self.progress(db, rater)}
        finally:
            db.close()

    def undo(self, rater: str) -> dict:
        """Take back this rater's latest answer; the undo event keeps what it took back (for the lead)."""
        rater = check_rater(rater)
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                last = db.execute("SELECT * FROM answers WHERE rater = ? ORDER BY seq DESC LIMIT 1",
                                  (rater,)).fetchone()
                if last is None:
                    raise Refused(409, f"{rater} has no answer to undo")
                db.execute("DELETE FROM answers WHERE item_id = ? AND rater = ?", (last["item_id"], rater))
                db.execute("INSERT INTO events (item_id, rater, action, choice, label, comment, at, latency_ms) "
                           "VALUES (?, ?, 'undo', ?, ?, ?, ?, ?)", (last["item_id"], rater, last["choice"],
                                                                    last["label"], last["comment"], now(),
                                                                    last["latency_ms"]))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return {"item": self._shown(db, last["item_id"], rater), "progress": self.progress(db, rater)}
        finally:
            db.close()

    # -- the lead: disagreements and their adjudication

    def disagreements(self) -> list[dict]:
        """Items (gold ones aside) two or more raters answered differently, as the raters saw them, with
        each answer and the lead's adjudication if there is one."""
        db = self._connect()
        try:
            ids = [r[0] for r in db.execute(  # gold items have their answer already: not the lead's to settle
                "SELECT item_id FROM answers WHERE item_id IN (SELECT id FROM items WHERE gold IS NULL) "
                "GROUP BY item_id HAVING count(*) >= 2 AND count(DISTINCT verdict) >= 2 ORDER BY item_id")]
            out = []
            for item_id in ids:
                shown = self._shown(db, item_id, None)
                shown["answers"] = [dict(r) for r in db.execute(
                    "SELECT rater, choice, label, comment FROM answers WHERE item_id = ? ORDER BY seq", (item_id,))]
                adjudicated = db.execute("SELECT lead, choice, label, comment, at FROM adjudications "
                                         "WHERE item_id = ?", (item_id,)).fetchone()
                shown["adjudication"] = dict(adjudicated) if adjudicated else None
                out.append(shown)
            return out
        finally:
            db.close()

    def adjudicate(self, lead: str, item_id: int, choice: str, label: int | None = None,
                   comment: str | None = None) -> dict:
        """The lead settles an item (the side as the raters saw it): its verdict replaces the raters' in
        the results; an `adjudicate` event records it. A later call replaces it (both logged)."""
        comment = self._check(choice, label, comment)
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                item = self._item(db, item_id)
                at = now()
                seq = db.execute("INSERT INTO events (item_id, rater, action, choice, label, comment, at) "
                                 "VALUES (?, ?, 'adjudicate', ?, ?, ?, ?)",
                                 (item_id, lead, choice, label, comment, at)).lastrowid
                db.execute("INSERT OR REPLACE INTO adjudications VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (item_id, lead, choice, _verdict(choice, bool(item["flipped"])), label, comment, at, seq))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return {"item_id": item_id, "choice": choice, "label": label}
        finally:
            db.close()

    # -- for the statistics, the export and the lead

    def rows(self) -> tuple[list[dict], list[dict]]:
        """(items, answers) as plain dicts: each item with its two outputs, its gold answer (or None) and
        the lead's adjudication (or None), each answer in judge terms."""
        db = self._connect()
        try:
            adjudications = {r["item_id"]: dict(r) for r in db.execute("SELECT * FROM adjudications")}
            items = []
            for row in db.execute("SELECT * FROM items ORDER BY id"):
                item = dict(row)
                item["a"], item["b"] = json.loads(item["a"]), json.loads(item["b"])
                item["gold"] = json.loads(item["gold"]) if item["gold"] else None
                item["adjudication"] = adjudications.get(item["id"])
                items.append(item)
            answers = [dict(r) for r in db.execute("SELECT * FROM answers ORDER BY seq")]
            return items, answers
        finally:
            db.close()

    def events(self) -> list[dict]:
        """Every event in order: answers, replacements, undos (with what they took back), adjudications."""
        db = self._connect()
        try:
            return [dict(r) for r in db.execute("SELECT * FROM events ORDER BY seq")]
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


def is_identifier(field: str) -> bool:
    """Keys that identify a product rather than describe it (product_uid, asin's id, ...): not shown."""
    return field == "id" or field.endswith(("_id", "_uid"))


def unescape(value):
    """HTML entities decoded in every string of a value (`&amp;` -> `&`): catalogues store them encoded."""
    if isinstance(value, str):
        return html.unescape(value)
    if isinstance(value, dict):
        return {k: unescape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescape(v) for v in value]
    return value


def displayed(product: dict, show: list[str] | None) -> dict:
    """The product fields raters see: `show` in its order, else every field but identifiers."""
    keys = show if show else [k for k in product if not is_identifier(k)]
    return {k: unescape(product[k]) for k in keys if k in product}
