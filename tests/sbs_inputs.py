"""Inputs for the SBS tests: pairs, judge A as `agrl score` JSONL, judge B as an `agrl eval` JSON + predictions.

Judge A says 4 on every pair; B says 4 on even pairs (agreement) and 2 on odd ones. Titles and reasoning can
carry hostile markup, which the page must show as characters.
"""

import json
from pathlib import Path

HOSTILE_TITLE = '<script>window.pwned=1</script>"><img src=x onerror="window.pwned=2">'
HOSTILE_REASONING = '</pre><img src=x onerror="window.pwned=3"><b>bold?</b>'


def write_inputs(folder: Path, n: int = 12, hostile: bool = False) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pairs, scores, preds = [], [], []
    for i in range(n):
        title = HOSTILE_TITLE if hostile and i == 0 else f"product {i} running shoe"
        family = "brand" if i % 3 == 0 else "negation"
        pairs.append({"id": f"p{i}", "query": f"query {i}", "family": family, "label": 4,
                      "product": {"title": title, "brand": "nike", "attributes": {"color": "red"}, "price": 10 + i}})
        scores.append({"id": f"p{i}", "label": 4, "label_name": "Excellent", "score": 3.5, "tier": "Good",
                       "probabilities": {"4": 0.7, "3": 0.2, "2": 0.05, "1": 0.05}})
        b_label = 4 if i % 2 == 0 else 2
        reasoning = HOSTILE_REASONING if hostile else f"category: match\nbrand: match\ndecision: {b_label} | pair {i}"
        preds.append({"id": f"p{i}", "query": f"query {i}", "family": family, "gold": 4, "pred": b_label,
                      "correct": b_label == 4, "valid": True, "reject_reason": None, "expected_relevance": 3.1,
                      "completion": f"<label>{b_label}</label>\n<think>\n{reasoning}\n</think>"})
    paths = {"pairs": folder / "pairs.jsonl", "a": folder / "a_scores.jsonl",
             "b": folder / "b_eval.json", "b_rows": folder / "b_eval.predictions.jsonl"}
    for key, rows in (("pairs", pairs), ("a", scores), ("b_rows", preds)):
        paths[key].write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths["b"].write_text(json.dumps({"model": "runs/b", "predictions": str(paths["b_rows"]), "n": n}))
    return paths
