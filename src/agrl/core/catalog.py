"""The synthetic catalog: categories, brands, models, attributes, and products built from placed facts.

A product is a set of facts (brand, model, attributes, features, price), each placed in the
structured fields, in the title, in both, or hidden. synth.py steers facts to the verdicts it
intends and reads gold verdicts back from the facts (`verdict_of`), never from text.

    facts = base_facts(rng, "sofas"); product = build_product(rng, "sofas", facts)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from agrl.data.records import Product, Record
from agrl.core.rules import load_config


@cache
def catalog() -> dict:
    return yaml.safe_load((resources.files("agrl") / "recipes" / "synth" / "catalog.yaml").read_text())


@cache
def rules_config() -> dict:
    return load_config()


@cache
def relations() -> tuple[frozenset, dict[str, str]]:
    config = rules_config()
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


def models_of(cat: str) -> dict[str, str]:
    """model -> brand, for a category (an accessory: the models of the item it fits)."""
    info = catalog()["categories"][cat]
    if "fits" in info:
        return {m: "" for m in models_of(info["fits"])}
    return {m: b for b, models in info["brands"].items() for m in models}


def _place(rng: random.Random, hidden: float = 0.1) -> str:
    r = rng.random()
    return "hidden" if r < hidden else "both" if r < hidden + 0.55 else "field" if r < hidden + 0.78 else "title"


def base_facts(rng: random.Random, cat: str) -> dict[str, Fact]:
    """A natural product of a category: every fact present somewhere, a few hidden."""
    info = catalog()["categories"][cat]
    brand = rng.choice(sorted(info["brands"]))
    models = sorted(models_of(cat)) if "fits" in info else info["brands"][brand]
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


def steer(rng: random.Random, cat: str, facts: dict[str, Fact], ask: Ask, op: str) -> None:
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
        value = ask.want if op == "same" else _other(rng, sorted(models_of(cat)), ask.want)
    else:
        value = ask.want if op == "same" else _other(rng, info["attributes"].get(name, []), ask.want)
    if op == "hidden":
        value = facts[ask.slot].value if ask.slot in facts else None
    if value is None or (kind == "brand" and value not in info["brands"]) or (
        kind == "model" and value not in models_of(cat)) or (
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
        facts["brand"] = Fact(models_of(cat)[facts["model"].value], facts["brand"].place)
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


def build_product(rng: random.Random, cat: str, facts: dict[str, Fact]) -> Product:
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


def verdict_of(ask: Ask, facts: dict[str, Fact]) -> str:
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
    substitutes, _ = relations()
    if query_cat is None or query_cat == product_cat:
        return "match"
    return "substitute" if frozenset((query_cat, product_cat)) in substitutes else "mismatch"


def catalog_records() -> list[Record]:
    """One fully structured product per brand/model and attribute value: a lexicon seed for RulesEngine."""
    out = []
    for cat, info in sorted(catalog()["categories"].items()):
        rounds = max([len(v) for v in info["attributes"].values()] + [2])
        models = sorted(models_of(cat))
        for brand in sorted(info["brands"]):
            own = models if "fits" in info else info["brands"][brand]
            for i in range(max(rounds, len(own))):
                attributes = {"model": own[i % len(own)]} if own else {}
                attributes |= {n: v[i % len(v)] for n, v in info["attributes"].items()}
                attributes |= {f: ("yes", "no")[i % 2] for f in info.get("features", ())}
                product = Product(f"{brand} {info['noun']}", info["path"], brand, attributes, float(info["price"][0]))
                out.append(Record(query=product.title, product=product, id=f"catalog-{len(out)}"))
    return out
