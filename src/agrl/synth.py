"""The synthetic e-commerce relevance benchmark (spec section 9): catalog, free-text queries, gold labels.

Each pair is built with INTENDED verdicts: the generator decides, say, to violate the brand or to
leave the colour out of the product data, builds the product so, then computes the gold steps from
the facts it placed and the label from the decision table. It never reads its own query text back
(the rules engine's query understanding is tested against it, tests/test_synth.py).

    splits = generate(seed=0); write("data/synth", splits)   # or: agrl data synth --out data/synth
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from agrl.data import Product, Record, balance, split_by_query, write_jsonl
from agrl.rules import DecisionTable, RulesEngine, load_config
from agrl.schemes import load_scheme

SPLITS = ("sft", "rl", "eval_balanced", "eval_wild")
SIZES = {
    "small": {"sft": 80, "rl": 240, "eval_balanced": 40, "eval_wild": 80},
    "default": {"sft": 600, "rl": 4000, "eval_balanced": 400, "eval_wild": 600},
    "large": {"sft": 2000, "rl": 16000, "eval_balanced": 1000, "eval_wild": 2000},
}
# Family shares per split. Hard families are rare in the (reasoning) SFT set and common in the RL
# set, so RL has something to learn (spec section 9); the eval sets follow a natural mix.
HARD = ("negation", "alternative", "accessory", "model")
MIX = {
    "sft": {"plain": .26, "brand": .2, "attribute": .2, "price": .14, "model": .06, "negation": .05,
            "alternative": .05, "accessory": .04},
    "rl": {"plain": .08, "brand": .1, "attribute": .1, "price": .1, "model": .16, "negation": .16,
           "alternative": .15, "accessory": .15},
    "eval": {"plain": .15, "brand": .13, "attribute": .13, "price": .11, "model": .12, "negation": .12,
             "alternative": .12, "accessory": .12},
}
PAIRS_PER_QUERY = {"sft": (1, 2), "rl": (1, 3), "eval_balanced": (2, 5), "eval_wild": (3, 6)}
DEFAULT_NOISE = 0.15


@lru_cache(maxsize=None)
def catalog() -> dict:
    return yaml.safe_load((resources.files("agrl") / "recipes" / "synth" / "catalog.yaml").read_text())


@lru_cache(maxsize=None)
def _rules_config() -> dict:
    return load_config()


@lru_cache(maxsize=None)
def _relations() -> tuple[frozenset, dict[str, str]]:
    config = _rules_config()
    return frozenset(frozenset(pair) for pair in config["substitutes"]), dict(config["accessories"])


@dataclass
class Fact:
    value: str | float | None
    place: str = "both"  # field, title, both, hidden


@dataclass(frozen=True)
class Ask:
    """One constraint the query states: its step, the product slot it reads, the wanted value."""

    step: str  # brand, model, attribute.<name>, negation, price, alternative
    slot: str  # brand, model, attr:<name>, feature:<name>, price
    want: str | float
    side: str = ""  # price: under/over
    steer: bool = True  # False: the verdict follows from other asks (brand of a named model)


# ---------------------------------------------------------------------------- products


def _models(cat: str) -> dict[str, str]:
    """model -> brand, for a category (an accessory: the models of the item it fits)."""
    info = catalog()["categories"][cat]
    if "fits" in info:
        return {m: "" for m in _models(info["fits"])}
    return {m: b for b, models in info["brands"].items() for m in models}


def _place(rng: random.Random, hidden: float = 0.1) -> str:
    r = rng.random()
    return "hidden" if r < hidden else "both" if r < hidden + 0.55 else "field" if r < hidden + 0.78 else "title"


def _base(rng: random.Random, cat: str) -> dict[str, Fact]:
    """A natural product of a category: every fact present somewhere, a few hidden."""
    info = catalog()["categories"][cat]
    brand = rng.choice(sorted(info["brands"]))
    models = sorted(_models(cat)) if "fits" in info else info["brands"][brand]
    facts = {"brand": Fact(brand, _place(rng, 0.05))}
    if models:
        facts["model"] = Fact(rng.choice(models), _place(rng, 0.1))
    for name, values in info["attributes"].items():
        facts[f"attr:{name}"] = Fact(rng.choice(values), _place(rng, 0.15))
    for name in info.get("features", ()):
        facts[f"feature:{name}"] = Fact(rng.choice(["yes", "no"]), _place(rng, 0.15))
    low, high = info["price"]
    facts["price"] = Fact(float(rng.randint(low, high)), "hidden" if rng.random() < 0.08 else "field")
    return facts


def _other(rng: random.Random, values: list, want) -> object | None:
    others = [v for v in values if v != want]
    return rng.choice(others) if others else None


def _steer(rng: random.Random, cat: str, facts: dict[str, Fact], ask: Ask, op: str) -> None:
    """Set the product's fact for an ask: `same` as wanted, `other` (a different value), or `hidden`."""
    info = catalog()["categories"][cat]
    place = "hidden" if op == "hidden" else _place(rng, 0.0)
    kind, _, name = ask.slot.partition(":")
    if kind == "price":
        low, high = info["price"]
        bound, under = float(ask.want), ask.side == "under"
        inside = (low, int(bound) - 1) if under else (int(bound) + 1, high)
        outside = (int(bound) + 1, high) if under else (low, int(bound) - 1)
        span = inside if op == "same" else outside
        value = float(rng.randint(*span)) if span[0] <= span[1] else facts["price"].value
        facts["price"] = Fact(value, "hidden" if op == "hidden" else "field")
        return
    if kind == "feature":
        value = "yes" if op == "same" else "no"
    elif kind == "brand":
        value = ask.want if op == "same" else _other(rng, sorted(info["brands"]), ask.want)
    elif kind == "model":
        value = ask.want if op == "same" else _other(rng, sorted(_models(cat)), ask.want)
    else:
        value = ask.want if op == "same" else _other(rng, info["attributes"].get(name, []), ask.want)
    if op == "hidden":
        value = facts[ask.slot].value if ask.slot in facts else None
    if value is None or (kind == "brand" and value not in info["brands"]) or (
        kind == "model" and value not in _models(cat)) or (
        kind == "attr" and value not in info["attributes"].get(name, [])):
        return  # this category cannot take that value: the fact stays as it was
    facts[ask.slot] = Fact(value, place)
    _keep_brand_and_model(rng, cat, facts, kind)


def _keep_brand_and_model(rng: random.Random, cat: str, facts: dict[str, Fact], changed: str) -> None:
    """A model belongs to its brand (accessories excepted): keep the two consistent after a change."""
    info = catalog()["categories"][cat]
    if "fits" in info:
        return
    if changed == "model":
        facts["brand"] = Fact(_models(cat)[facts["model"].value], facts["brand"].place)
    elif changed == "brand":
        models = info["brands"][facts["brand"].value]
        if models:
            facts["model"] = Fact(rng.choice(models), facts.get("model", Fact(None, "both")).place)
        else:
            facts.pop("model", None)


def _title(rng: random.Random, cat: str, facts: dict[str, Fact]) -> str:
    info = catalog()["categories"][cat]
    shown = {slot: f.value for slot, f in facts.items() if f.place in ("title", "both") and f.value is not None}
    # Neutral words (no fact in them) keep titles at a natural 5-12 words without leaking facts.
    words = 1 + len(shown) + ("model" in shown) + len(info["noun"].split())
    descriptors = rng.sample(catalog()["descriptors"], min(3, max(1, 5 - words)))
    noun = " ".join(descriptors + [info["noun"]])
    head = [shown.get("brand")]
    if "fits" in info:
        head += [noun, f"for {shown['model']}" if "model" in shown else None]
    else:
        head += [shown.get("model"), noun]
    tail = []
    for slot, value in shown.items():
        kind, _, name = slot.partition(":")
        if kind == "attr":
            tail.append(f"{name} {value}" if str(value).isdigit() else str(value))
        elif kind == "feature":
            has, lacks, _ = catalog()["feature_words"][name]
            tail.append(has if value == "yes" else lacks)
    return " ".join(w for w in head if w) + "".join(f", {t}" for t in tail)


def _product(rng: random.Random, cat: str, facts: dict[str, Fact]) -> Product:
    info = catalog()["categories"][cat]
    field = {slot: f.value for slot, f in facts.items() if f.place in ("field", "both") and f.value is not None}
    attributes = {"model": field["model"]} if "model" in field else {}
    for slot, value in field.items():
        kind, _, name = slot.partition(":")
        if kind in ("attr", "feature"):
            attributes[name] = str(value)
    category = None if rng.random() < 0.08 else info["path"]  # sometimes only the title says what it is
    return Product(title=_title(rng, cat, facts), category=category, brand=field.get("brand"),
                   attributes=attributes, price=field.get("price"))


def _verdict(ask: Ask, facts: dict[str, Fact]) -> str:
    """The gold verdict of an ask, from the facts the generator placed (not from any text)."""
    fact = facts.get(ask.slot)
    if fact is None or fact.value is None or fact.place == "hidden":
        return "unknown"
    if ask.step == "price":
        holds = fact.value <= ask.want if ask.side == "under" else fact.value >= ask.want
        return "match" if holds else "mismatch"
    same = fact.value == ask.want
    if ask.step == "negation":
        return "violated" if same else "respected"
    if ask.step == "alternative":
        return "mismatch" if same else "match"
    return "match" if same else "mismatch"


def category_verdict(query_cat: str | None, product_cat: str) -> str:
    substitutes, _ = _relations()
    if query_cat is None or query_cat == product_cat:
        return "match"
    return "substitute" if frozenset((query_cat, product_cat)) in substitutes else "mismatch"


# ---------------------------------------------------------------------------- queries


def _cat_word(rng: random.Random, cat: str) -> str:
    """How a query names a category: its plural, its singular noun, or an alias from the rules config."""
    info = catalog()["categories"][cat]
    aliases = [a for a, c in _rules_config()["category_aliases"].items() if c == cat and " " not in a]
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


def _phrase(rng: random.Random, cat: str, extra: Ask | None, core: str) -> str:
    """Wrap a core phrase with a secondary constraint: a brand or value before it, a price after."""
    if extra is None:
        return core
    if extra.step == "price":
        return f"{core} {_price_text(rng, extra)}"
    if extra.step == "brand":
        return f"{extra.want} {core}"
    name = extra.step.split(".", 1)[1]
    return f"{core} {_attr_text(name, extra.want)}" if extra.want.isdigit() else f"{extra.want} {core}"


def _query(rng: random.Random, family: str) -> tuple[str, str | None, list[Ask]]:
    """(query text, the category it asks for, its constraints) for one family."""
    cats = catalog()["categories"]
    plain = [c for c in sorted(cats) if "fits" not in cats[c]]
    if family == "accessory":
        cat = rng.choice([c for c in sorted(cats) if "fits" in cats[c]])
    elif family == "model":
        cat = rng.choice([c for c in plain if _models(c)])
    else:
        cat = rng.choice(plain)
    word = _cat_word(rng, cat)
    info = cats[cat]
    if family == "plain":
        return rng.choice(["{c}", "{c}", "best {c}", "buy {c}", "new {c}", "{c} sale"]).format(c=word), cat, []
    if family in ("brand", "price", "attribute"):
        return _constraint_query(rng, family, cat, word)
    if family == "model":
        model, brand = rng.choice(sorted(_models(cat).items()))
        extra = _secondary(rng, cat, ("attr", "price"))
        form = rng.choice(["{m}", "{b} {m}", "{m} {n}", "{b} {m} {n}"])
        core = form.format(m=model, b=brand, n=word)
        asks = [Ask("model", "model", model)] + ([Ask("brand", "brand", brand, steer=False)] if "{b}" in form else [])
        return _phrase(rng, cat, extra, core), cat, asks + ([extra] if extra else [])
    if family == "accessory":
        model = rng.choice(sorted(_models(cat)))
        noun = rng.choice({"phone cases": ["case", "phone case", "cover"],
                           "laptop chargers": ["charger", "laptop charger", "power adapter"]}[cat])
        asks = [Ask("model", "model", model)]
        if rng.random() < 0.25:
            brand = rng.choice(sorted(info["brands"]))
            asks.append(Ask("brand", "brand", brand))
            core = f"{brand} {noun} for {model}"
        else:
            core = rng.choice(["{m} {a}", "{a} for {m}"]).format(m=model, a=noun)
        extra = _secondary(rng, cat, ("attr", "price"))
        return _phrase(rng, cat, extra, core), cat, asks + ([extra] if extra else [])
    if family == "negation":
        return _negation_query(rng, cat, word)
    target = rng.choice(sorted(info["brands"]))  # alternative
    core = rng.choice(["alternative to {b} {c}", "{c} like {b}", "{b} {c} dupe", "{c} instead of {b}",
                       "{c} similar to {b}"]).format(b=target, c=word)
    extra = _secondary(rng, cat, ("attr", "price"))
    if extra is not None and extra.step != "price":
        core = f"{core} in {_attr_text(extra.step.split('.', 1)[1], extra.want)}"
    elif extra is not None:
        core = f"{core} {_price_text(rng, extra)}"
    return core, cat, [Ask("alternative", "brand", target)] + ([extra] if extra else [])


def _constraint_query(rng: random.Random, family: str, cat: str, word: str) -> tuple[str, str, list[Ask]]:
    info = catalog()["categories"][cat]
    if family == "brand":
        brand = rng.choice(sorted(info["brands"]))
        core = rng.choice(["{b} {c}", "{b} {c}", "{c} by {b}", "{c} from {b}"]).format(b=brand, c=word)
        extra = _secondary(rng, cat, ("attr", "price"))
        return _phrase(rng, cat, extra, core), cat, [Ask("brand", "brand", brand)] + ([extra] if extra else [])
    if family == "price":
        ask = _price_ask(rng, cat)
        extra = _secondary(rng, cat, ("attr", "brand"))
        core = _phrase(rng, cat, extra, word)
        return f"{core} {_price_text(rng, ask)}", cat, [ask] + ([extra] if extra else [])
    names = sorted(info["attributes"])
    chosen = rng.sample(names, 2 if len(names) > 1 and rng.random() < 0.25 else 1)
    asks = [Ask(f"attribute.{n}", f"attr:{n}", rng.choice(info["attributes"][n])) for n in chosen]
    words = [a.want for a in asks if not a.want.isdigit()]
    after = [_attr_text(a.step.split(".", 1)[1], a.want) for a in asks if a.want.isdigit()]
    if not after and len(words) == 1 and rng.random() < 0.3:
        text = f"{word} in {words[0]}"
    else:
        text = " ".join(words + [word] + after)
    ordered = [a for a in asks if not a.want.isdigit()] + [a for a in asks if a.want.isdigit()]
    return text, cat, ordered


def _negation_query(rng: random.Random, cat: str, word: str) -> tuple[str, str, list[Ask]]:
    info = catalog()["categories"][cat]
    features = info.get("features", [])
    extra = _secondary(rng, cat, ("attr", "price"))
    if features and rng.random() < 0.75:
        name = rng.choice(features)
        free = catalog()["feature_words"][name][2]
        shown = name.replace("_", " ")
        forms = ["{c} without {f}", "{c} with no {f}", "{c} no {f}"] + (["{c} free of {f}"] if free else [])
        core = (f"{free}-free {word}" if free and rng.random() < 0.5 else rng.choice(forms).format(c=word, f=shown))
        ask = Ask("negation", f"feature:{name}", "yes")
    else:
        brand = rng.choice(sorted(info["brands"]))
        core = rng.choice(["{c} not {b}", "{c} not by {b}", "{c} without {b}"]).format(c=word, b=brand)
        ask = Ask("negation", "brand", brand)
    if extra is not None and extra.step == "price":
        core = f"{core} {_price_text(rng, extra)}"
    elif extra is not None:
        name = extra.step.split(".", 1)[1]
        core = f"{core} {_attr_text(name, extra.want)}" if extra.want.isdigit() else f"{extra.want} {core}"
    return core, cat, [ask] + ([extra] if extra else [])


# ---------------------------------------------------------------------------- pairs and splits

_STEP_ORDER = ("category", "brand", "model", "attribute", "negation", "price", "alternative")
_OPS_PRIMARY = (("same", 0.42), ("other", 0.33), ("hidden", 0.25))
_OPS_SECONDARY = (("same", 0.7), ("other", 0.15), ("hidden", 0.15))


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([w for w, _ in weighted], [p for _, p in weighted])[0]


def _product_category(rng: random.Random, family: str, cat: str) -> tuple[str, bool]:
    """The product's category for a pair, and whether it is the item/accessory twin of the query's."""
    cats = catalog()["categories"]
    substitutes, _ = _relations()
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
    facts = _base(rng, product_cat)
    verdict = category_verdict(cat, product_cat)
    ordered = sorted(asks, key=lambda a: a.slot != "model")  # a model fixes its brand: steer it first
    for ask in ordered:
        if not ask.steer:
            continue
        if verdict != "mismatch":
            weights = _OPS_PRIMARY if ask is asks[0] else _OPS_SECONDARY
            _steer(rng, product_cat, facts, ask, _pick(rng, weights))
        elif twin and ask.slot == "model" and rng.random() < 0.7:  # "iphone 15" vs an iphone 15 case
            _steer(rng, product_cat, facts, ask, "same")
    steps = {"category": verdict}
    for ask in sorted(asks, key=lambda a: _STEP_ORDER.index(a.step.split(".")[0])):
        steps[ask.step] = _verdict(ask, facts)
    label, _ = table.decide(steps, load_scheme("default"))
    return Record(query=query, product=_product(rng, product_cat, facts), label=label, steps=steps, family=family)


def _pool(rng: random.Random, family: str, pairs: int, table: DecisionTable) -> list[Record]:
    out: list[Record] = []
    while len(out) < pairs:
        query, cat, asks = _query(rng, family)
        out.extend(_pair(rng, family, query, cat, asks, table) for _ in range(rng.randint(1, 5)))
    return out


def _add_noise(rng: random.Random, record: Record, table: DecisionTable) -> None:
    """Label noise (a wrong label over right steps) or a reasoning error (a flipped step, label follows)."""
    from agrl.data import step_verdicts

    clean_label, clean_steps = record.label, dict(record.steps)
    if rng.random() < 0.5:
        record.label = rng.choice([c for c in (1, 2, 3, 4) if c != record.label])
    else:
        name = rng.choice(sorted(record.steps))
        record.steps[name] = rng.choice([v for v in step_verdicts(name) if v not in ("n/a", record.steps[name])])
        record.label, _ = table.decide(record.steps, load_scheme("default"))
    record.extra["clean_label"] = clean_label
    if record.steps != clean_steps:
        record.extra["clean_steps"] = clean_steps


def catalog_records() -> list[Record]:
    """One fully structured product per brand/model and attribute value: a lexicon seed for RulesEngine."""
    out = []
    for cat, info in sorted(catalog()["categories"].items()):
        rounds = max([len(v) for v in info["attributes"].values()] + [2])
        models = sorted(_models(cat))
        for brand in sorted(info["brands"]):
            own = models if "fits" in info else info["brands"][brand]
            for i in range(max(rounds, len(own))):
                attributes = {"model": own[i % len(own)]} if own else {}
                attributes |= {n: v[i % len(v)] for n, v in info["attributes"].items()}
                attributes |= {f: ("yes", "no")[i % 2] for f in info.get("features", ())}
                product = Product(f"{brand} {info['noun']}", info["path"], brand, attributes, float(info["price"][0]))
                out.append(Record(query=product.title, product=product, id=f"catalog-{len(out)}"))
    return out


def generate(seed: int = 0, sizes: dict | None = None, noise: float = DEFAULT_NOISE) -> dict[str, list[Record]]:
    """The four splits (sft, rl, eval_balanced, eval_wild); deterministic under the seed."""
    sizes = {**SIZES["default"], **(sizes or {})}
    rng = random.Random(seed)
    table = DecisionTable.from_list(_rules_config()["decision_table"])
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    for family in MIX["eval"]:
        want = {s: round(sizes[s] * MIX["eval" if s.startswith("eval") else s][family]) for s in SPLITS}
        pool_sizes = {s: n * (3 if s == "eval_balanced" else 1) for s, n in want.items()}
        pool = _pool(rng, family, round(1.5 * sum(pool_sizes.values())), table)
        parts = split_by_query(pool, {s: n for s, n in pool_sizes.items() if n}, seed=seed)
        for name, records in parts.items():
            rng.shuffle(records)
            splits[name].extend(records if name == "eval_balanced" else records[: want[name]])
    per_class = sizes["eval_balanced"] // 4
    splits["eval_balanced"] = balance(splits["eval_balanced"], seed=seed, per_class=per_class)
    for name in SPLITS:
        rng.shuffle(splits[name])
        for i, record in enumerate(splits[name]):
            record.id = f"{name}-{i:05d}"
    _add_reasoning(rng, splits["sft"], table, noise, [r for s in splits.values() for r in s])
    return splits


def _add_reasoning(rng: random.Random, sft: list[Record], table: DecisionTable, noise: float,
                   everything: list[Record]) -> None:
    """Teacher reasoning for the SFT rows (rendered from their gold, noisy on a `noise` share of rows)."""
    engine = RulesEngine.from_records(everything + catalog_records())
    for record in sft:
        if rng.random() < noise:
            _add_noise(rng, record, table)
        record.extra["reasoning"] = engine.teacher_reasoning(record)


def write(out_dir: str | Path, splits: dict[str, list[Record]]) -> dict[str, Path]:
    """Write each split as OUT_DIR/<split>.jsonl."""
    out_dir = Path(out_dir)
    paths = {}
    for name, records in splits.items():
        paths[name] = out_dir / f"{name}.jsonl"
        write_jsonl(records, paths[name])
    return paths
