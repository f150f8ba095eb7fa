"""The synthetic e-commerce relevance benchmark (spec section 9): catalog, free-text queries, gold labels.

Each pair is built with INTENDED verdicts: the generator decides, say, to violate the brand or to
leave the colour out of the product data, builds the product so, then computes the gold steps from
the facts it placed and the label from the decision table. It never reads its own query text back
(the rules engine's query understanding is tested against it, tests/test_synth.py).

    splits = generate(seed=0); write("data/synth", splits)   # or: agrl data synth --out data/synth
"""

from __future__ import annotations

import random
from pathlib import Path

from agrl.core.catalog import (
    Ask,
    base_facts,
    build_product,
    catalog,
    catalog_records,
    category_verdict,
    models_of,
    relations,
    rules_config,
    steer,
    verdict_of,
)
from agrl.data.records import HARD, Record, balance, normalize_query, split_by_query, step_verdicts, write_jsonl  # noqa: F401  (synth.HARD)
from agrl.core.rules import DecisionTable, RulesEngine
from agrl.data.schemes import load_scheme

SPLITS = ("sft", "rl", "eval_balanced", "eval_wild")
SIZES = {
    "small": {"sft": 80, "rl": 240, "eval_balanced": 40, "eval_wild": 80},
    "default": {"sft": 600, "rl": 4000, "eval_balanced": 400, "eval_wild": 600},
    "large": {"sft": 2000, "rl": 16000, "eval_balanced": 1000, "eval_wild": 2000},
}
# Family shares per split. Hard families are rare in the (reasoning) SFT set and common in the RL
# set, so RL has something to learn (spec section 9); the eval sets follow a natural mix.
MIX = {
    "sft": {"plain": .26, "brand": .2, "attribute": .2, "price": .14, "model": .06, "negation": .05,
            "alternative": .05, "accessory": .04},
    "rl": {"plain": .08, "brand": .1, "attribute": .1, "price": .1, "model": .16, "negation": .16,
           "alternative": .15, "accessory": .15},
    "eval": {"plain": .15, "brand": .13, "attribute": .13, "price": .11, "model": .12, "negation": .12,
             "alternative": .12, "accessory": .12},
}
# The common families alone, as a `generate(mix=...)` split mix: what a pretrained LLM already knows
# (categories, brands, attributes, prices). recipes/demo/base.yaml adds the HARD ones at 2.5% each.
COMMON_MIX = {"plain": .3, "brand": .25, "attribute": .25, "price": .2}
DEFAULT_NOISE = 0.15


# ---------------------------------------------------------------------------- queries


def _cat_word(rng: random.Random, cat: str) -> str:
    """How a query names a category: its plural, its singular noun, or an alias from the rules config."""
    info = catalog()["categories"][cat]
    aliases = [a for a, c in rules_config()["category_aliases"].items() if c == cat and " " not in a]
    words = [cat, cat, info["noun"]] + aliases
    return rng.choice(words)


def _attr_text(name: str, value: str) -> str:
    return f"{name} {value}" if value.isdigit() else value


def _secondary(rng: random.Random, cat: str, kinds: tuple[str, ...]) -> Ask | None:
    """An optional second constraint (an attribute, a brand or a price)."""
    info = catalog()["categories"][cat]
    if rng.random() > 0.3:
        return None
    kind = rng.choice(kinds)
    if kind == "attr" and info["attributes"]:
        name = rng.choice(sorted(info["attributes"]))
        return Ask(f"attribute.{name}", f"attr:{name}", rng.choice(info["attributes"][name]))
    if kind == "brand":
        return Ask("brand", "brand", rng.choice(sorted(info["brands"])))
    return _price_ask(rng, cat)


def _price_ask(rng: random.Random, cat: str) -> Ask:
    low, high = catalog()["categories"][cat]["price"]
    step = 5 if high < 100 else 10 if high < 500 else 50
    bound = float(min(high - step, max(low + step, round(rng.uniform(low, high) / step) * step)))
    return Ask("price", "price", bound, side="under" if rng.random() < 0.8 else "over")


def _price_text(rng: random.Random, ask: Ask) -> str:
    bound = f"{ask.want:g}"
    if ask.side == "over":
        return rng.choice(["over {b}", "above {b}", "more than {b}"]).format(b=bound)
    return rng.choice(["under {b}", "under ${b}", "below {b} dollars", "less than {b}", "cheaper than {b}"]).format(
        b=bound)


def _phrase(rng: random.Random, extra: Ask | None, core: str, prefix: bool = True) -> str:
    """Add a secondary constraint to a query: a brand or a value word before it, a price or "size 8" after."""
    if extra is None:
        return core
    if extra.step == "price":
        return f"{core} {_price_text(rng, extra)}"
    if extra.step == "brand":
        return f"{extra.want} {core}"
    text = _attr_text(extra.step.split(".", 1)[1], extra.want)
    if extra.want.isdigit():
        return f"{core} {text}"
    return f"{text} {core}" if prefix else f"{core} in {text}"


def _query(rng: random.Random, family: str) -> tuple[str, str, list[Ask]]:
    """(query text, the category it asks for, its constraints) for one family."""
    cats = catalog()["categories"]
    if family == "accessory":
        cat = rng.choice([c for c in sorted(cats) if "fits" in cats[c]])
    else:
        cat = rng.choice([c for c in sorted(cats) if "fits" not in cats[c] and (family != "model" or models_of(c))])
    word = _cat_word(rng, cat)
    if family == "plain":
        return rng.choice(["{c}", "{c}", "best {c}", "buy {c}", "new {c}", "{c} sale"]).format(c=word), cat, []
    if family == "attribute":
        return _attribute_query(rng, cat, word)
    extra = _secondary(rng, cat, ("attr", "brand") if family == "price" else ("attr", "price"))
    text, asks, prefix = QUERY_BUILDERS[family](rng, cat, word)
    return _phrase(rng, extra, text, prefix), cat, asks + ([extra] if extra else [])


def _brand_query(rng: random.Random, cat: str, word: str) -> tuple[str, list[Ask], bool]:
    brand = rng.choice(sorted(catalog()["categories"][cat]["brands"]))
    text = rng.choice(["{b} {c}", "{b} {c}", "{c} by {b}", "{c} from {b}"]).format(b=brand, c=word)
    return text, [Ask("brand", "brand", brand)], True


def _price_query(rng: random.Random, cat: str, word: str) -> tuple[str, list[Ask], bool]:
    ask = _price_ask(rng, cat)
    return f"{word} {_price_text(rng, ask)}", [ask], True


def _model_query(rng: random.Random, cat: str, word: str) -> tuple[str, list[Ask], bool]:
    model, brand = rng.choice(sorted(models_of(cat).items()))
    form = rng.choice(["{m}", "{b} {m}", "{m} {n}", "{b} {m} {n}"])
    named_brand = [Ask("brand", "brand", brand, steer=False)] if "{b}" in form else []  # follows the model
    return form.format(m=model, b=brand, n=word), [Ask("model", "model", model)] + named_brand, True


def _accessory_query(rng: random.Random, cat: str, word: str) -> tuple[str, list[Ask], bool]:
    model = rng.choice(sorted(models_of(cat)))
    noun = rng.choice(catalog()["categories"][cat]["query_nouns"])
    if rng.random() < 0.25:
        brand = rng.choice(sorted(catalog()["categories"][cat]["brands"]))
        return f"{brand} {noun} for {model}", [Ask("model", "model", model), Ask("brand", "brand", brand)], True
    return rng.choice(["{m} {a}", "{a} for {m}"]).format(m=model, a=noun), [Ask("model", "model", model)], True


def _alternative_query(rng: random.Random, cat: str, word: str) -> tuple[str, list[Ask], bool]:
    target = rng.choice(sorted(catalog()["categories"][cat]["brands"]))
    text = rng.choice(["alternative to {b} {c}", "{c} like {b}", "{b} {c} dupe", "{c} instead of {b}",
                       "{c} similar to {b}"]).format(b=target, c=word)
    return text, [Ask("alternative", "brand", target)], False  # "red alternative to ..." reads badly


def _negation_query(rng: random.Random, cat: str, word: str) -> tuple[str, list[Ask], bool]:
    info = catalog()["categories"][cat]
    if info.get("features") and rng.random() < 0.75:
        name = rng.choice(info["features"])
        free = catalog()["feature_words"][name][2]
        forms = ["{c} without {f}", "{c} with no {f}", "{c} no {f}"] + (["{c} free of {f}"] if free else [])
        text = rng.choice(forms).format(c=word, f=name.replace("_", " "))
        return (f"{free}-free {word}" if free and rng.random() < 0.5 else text), [
            Ask("negation", f"feature:{name}", "yes")], True
    brand = rng.choice(sorted(info["brands"]))
    text = rng.choice(["{c} not {b}", "{c} not by {b}", "{c} other than {b}"]).format(c=word, b=brand)
    return text, [Ask("negation", "brand", brand)], True


def _attribute_query(rng: random.Random, cat: str, word: str) -> tuple[str, str, list[Ask]]:
    """One or two attribute values: words before the category ("red silk dress"), numbers after ("size 8")."""
    info = catalog()["categories"][cat]
    chosen = rng.sample(sorted(info["attributes"]), 2 if len(info["attributes"]) > 1 and rng.random() < 0.25 else 1)
    asks = [Ask(f"attribute.{n}", f"attr:{n}", rng.choice(info["attributes"][n])) for n in chosen]
    asks.sort(key=lambda a: a.want.isdigit())  # the order they are stated in
    words = [a.want for a in asks if not a.want.isdigit()]
    after = [_attr_text(a.step.split(".", 1)[1], a.want) for a in asks if a.want.isdigit()]
    if not after and len(words) == 1 and rng.random() < 0.3:
        return f"{word} in {words[0]}", cat, asks
    return " ".join(words + [word] + after), cat, asks


QUERY_BUILDERS = {"brand": _brand_query, "price": _price_query, "model": _model_query,
                  "accessory": _accessory_query, "alternative": _alternative_query, "negation": _negation_query}


# ---------------------------------------------------------------------------- pairs and splits

_STEP_ORDER = ("category", "brand", "model", "attribute", "negation", "price", "alternative")
_OPS_PRIMARY = (("same", 0.42), ("other", 0.33), ("hidden", 0.25))
_OPS_SECONDARY = (("same", 0.7), ("other", 0.15), ("hidden", 0.15))


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([w for w, _ in weighted], [p for _, p in weighted])[0]


def _product_category(rng: random.Random, family: str, cat: str) -> tuple[str, bool]:
    """The product's category for a pair, and whether it is the item/accessory twin of the query's."""
    cats = catalog()["categories"]
    substitutes, _ = relations()
    subs = sorted(c for pair in substitutes if cat in pair for c in pair if c != cat)
    r = rng.random()
    if r < 0.2:
        twins = [cats[cat]["fits"]] if "fits" in cats[cat] else [c for c in sorted(cats) if cats[c].get("fits") == cat]
        if twins and family in ("accessory", "model") and rng.random() < 0.6:
            return rng.choice(twins), True
        return rng.choice([c for c in sorted(cats) if c != cat and c not in subs]), False
    if subs and r < 0.2 + (0.5 if family == "plain" else 0.15):
        return rng.choice(subs), False
    return cat, False


def _pair(rng: random.Random, family: str, query: str, cat: str, asks: list[Ask], table: DecisionTable) -> Record:
    product_cat, twin = _product_category(rng, family, cat)
    facts = base_facts(rng, product_cat)
    verdict = category_verdict(cat, product_cat)
    ordered = sorted(asks, key=lambda a: a.slot != "model")  # a model fixes its brand: steer it first
    for ask in ordered:
        if not ask.steer:
            continue
        if verdict != "mismatch":
            weights = _OPS_PRIMARY if ask is asks[0] else _OPS_SECONDARY
            steer(rng, product_cat, facts, ask, _pick(rng, weights))
        elif twin and ask.slot == "model" and rng.random() < 0.7:  # "iphone 15" vs an iphone 15 case
            steer(rng, product_cat, facts, ask, "same")
    steps = {"category": verdict}
    for ask in sorted(asks, key=lambda a: _STEP_ORDER.index(a.step.split(".")[0])):
        steps[ask.step] = verdict_of(ask, facts)
    label, _ = table.decide(steps, load_scheme("default"))
    return Record(query=query, product=build_product(rng, product_cat, facts), label=label, steps=steps, family=family)


def _pool(rng: random.Random, family: str, pairs: int, table: DecisionTable, owner: dict[str, str]) -> list[Record]:
    """Pairs of one family, 1-5 per query. A query text another family already wrote is skipped
    ("apple laptops under 900" is both a brand and a price query), so splitting each family's pool
    by query keeps every query in one split. `owner` may hold excluded queries (owned by no family)."""
    out: list[Record] = []
    tries = 0
    while len(out) < pairs:
        tries += 1
        if tries > 200 * (pairs + 10):
            raise ValueError(f"synth: cannot find {pairs} pairs of family {family!r} with queries not excluded")
        query, cat, asks = _query(rng, family)
        if owner.setdefault(normalize_query(query), family) != family:
            continue
        out.extend(_pair(rng, family, query, cat, asks, table) for _ in range(rng.randint(1, 5)))
    return out


def _add_noise(rng: random.Random, record: Record, table: DecisionTable, label_share: float) -> None:
    """Label noise (a wrong label over right steps) or a reasoning error (a flipped step, label follows)."""
    clean_label, clean_steps = record.label, dict(record.steps)
    if rng.random() < label_share:
        record.label = rng.choice([c for c in (1, 2, 3, 4) if c != record.label])
    else:
        name = rng.choice(sorted(record.steps))
        record.steps[name] = rng.choice([v for v in step_verdicts(name) if v not in ("n/a", record.steps[name])])
        record.label, _ = table.decide(record.steps, load_scheme("default"))
    record.extra["clean_label"] = clean_label
    if record.steps != clean_steps:
        record.extra["clean_steps"] = clean_steps


def generate(seed: int = 0, sizes: dict | None = None, noise: float = DEFAULT_NOISE,
             label_noise_share: float = 0.5, mix: dict[str, dict[str, float]] | None = None,
             exclude_queries: set[str] = frozenset()) -> dict[str, list[Record]]:
    """The four splits (sft, rl, eval_balanced, eval_wild); deterministic under the seed.

    `noise`: share of SFT rows made noisy; `label_noise_share` of those get a wrong label over right
    steps, the rest a reasoning error (one flipped step verdict, the label following it).
    `mix`: family shares per split ("sft", "rl", "eval") replacing `MIX`'s; a family left out gets none.
    `exclude_queries`: normalised queries no split may use (another benchmark's eval queries).
    """
    sizes = {**SIZES["default"], **(sizes or {})}
    mixes = {**MIX, **(mix or {})}
    rng = random.Random(seed)
    table = DecisionTable.from_list(rules_config()["decision_table"])
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    owner: dict[str, str] = dict.fromkeys(exclude_queries, "")  # query -> the family that wrote it
    for family in MIX["eval"]:
        want = {s: round(sizes[s] * mixes["eval" if s.startswith("eval") else s].get(family, 0)) for s in SPLITS}
        if not any(want.values()):
            continue
        pool_sizes = {s: n * (3 if s == "eval_balanced" else 1) for s, n in want.items()}
        pool = _pool(rng, family, round(1.5 * sum(pool_sizes.values())), table, owner)
        parts = split_by_query(pool, {s: n for s, n in pool_sizes.items() if n}, seed=seed)
        for name, records in parts.items():
            rng.shuffle(records)
            splits[name].extend(records if name == "eval_balanced" else records[: want[name]])
    if splits["eval_balanced"]:
        splits["eval_balanced"] = balance(splits["eval_balanced"], seed=seed, per_class=sizes["eval_balanced"] // 4)
    for name in SPLITS:
        rng.shuffle(splits[name])
        for i, record in enumerate(splits[name]):
            record.id = f"{name}-{i:05d}"
    engine = RulesEngine.from_records([r for s in splits.values() for r in s] + catalog_records())
    for record in splits["sft"]:  # teacher reasoning, rendered from the (possibly noisy) gold
        if rng.random() < noise:
            _add_noise(rng, record, table, label_noise_share)
        record.extra["reasoning"] = engine.teacher_reasoning(record)
    return splits


def eval_queries(splits: dict[str, list[Record]]) -> set[str]:
    """The normalised queries of the eval splits (to keep another benchmark's training data off them)."""
    return {normalize_query(r.query) for name in SPLITS if name.startswith("eval") for r in splits[name]}


def write(out_dir: str | Path, splits: dict[str, list[Record]]) -> dict[str, Path]:
    """Write each split as OUT_DIR/<split>.jsonl."""
    out_dir = Path(out_dir)
    paths = {}
    for name, records in splits.items():
        paths[name] = out_dir / f"{name}.jsonl"
        write_jsonl(records, paths[name])
    return paths


def write_benchmark(out: str | Path, seed: int, size: str, noise: float, force: bool
                    ) -> tuple[dict[str, list[Record]], dict[str, Path]]:
    """`agrl data synth`: --noise checked, OUT empty (or --force), the splits generated and written."""
    from agrl.errors import UserError
    from agrl.files import empty_dir

    if not 0.0 <= noise <= 1.0:  # NaN fails this too
        raise UserError(f"--noise {noise}: must be a share in [0, 1]")
    empty_dir(out, "data", force)
    splits = generate(seed=seed, sizes=SIZES[size], noise=noise)
    return splits, write(out, splits)
