"""Facts from a product title or a query alone: product type (head noun), numbers with units, colours,
materials, finishes, model numbers, "not included" / "only" / "kit" phrases. Pure Python, regexes only.

The rules engine reads a product that has only a title through these facts (lexicon.ProductView), and a
query's product type is its head noun: the last noun before "for" / "with" / a comma, the rest are
modifiers ("camera lens" asks for a lens, "lens cap for canon camera" for a cap).

    f = facts("Delta 1-Handle Shower Only Faucet Trim Kit in Chrome (Valve Not Included)")
    f.head, f.types, f.finishes, f.not_included   # 'kit', {'kit', 'trim'}, {'chrome'}, ('valve',)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Unit name (an attribute step: attribute.<name>) -> its spellings. A number joins its unit by a space or a
# hyphen ("12-Gauge", "1-gal.", "3/4 in.", '10"'); "x" between dimensions is no unit.
UNITS = {
    "inches": ("in", "inch", "inches", '"', "''"),
    "feet": ("ft", "feet", "foot", "'"),
    "gallons": ("gal", "gallon", "gallons"),
    "gauge": ("gauge", "ga", "awg"),
    "volts": ("v", "volt", "volts", "vac", "vdc"),
    "watts": ("w", "watt", "watts"),
    "amps": ("a", "amp", "amps", "amperes"),
    "pounds": ("lb", "lbs", "pound", "pounds"),
    "ounces": ("oz", "ounce", "ounces"),
    "quarts": ("qt", "quart", "quarts"),
    "mm": ("mm", "millimeter", "millimeters"),
    "btu": ("btu", "btus"),
    "cu_ft": ("cu ft", "cu. ft", "cubic feet", "cubic ft"),
    "sq_ft": ("sq ft", "sq. ft", "square feet", "square ft"),
    "cfm": ("cfm",),
    "degrees": ("degree", "degrees", "deg"),
    "pack": ("pack", "pk", "piece", "pieces", "pc", "count"),
}
COLORS = {
    "white", "black", "red", "blue", "green", "yellow", "brown", "gray", "grey", "silver", "gold", "beige",
    "bisque", "ivory", "almond", "tan", "orange", "pink", "purple", "clear", "cream", "biscuit", "navy",
    "charcoal", "taupe", "espresso", "cherry", "walnut", "mahogany", "teal", "turquoise",
}
MATERIALS = {
    "wood", "steel", "stainless", "aluminum", "aluminium", "copper", "brass", "plastic", "vinyl", "pvc", "cpvc",
    "pex", "ceramic", "porcelain", "glass", "concrete", "iron", "fiberglass", "granite", "marble", "resin",
    "rubber", "cedar", "oak", "pine", "maple", "bamboo", "composite", "nylon", "cotton", "polyester",
    "leather", "wicker", "acrylic", "polypropylene", "polyethylene", "poly", "galvanized", "zinc", "slate",
    "travertine", "wool", "jute", "sisal",
}
FINISHES = {
    "chrome", "nickel", "bronze", "satin", "matte", "gloss", "glossy", "semi-gloss", "flat", "eggshell",
    "polished", "brushed", "antique", "oil-rubbed", "rubbed", "pewter", "textured", "hammered", "frosted",
}
# Words that never name a product type; the head is the last word before a boundary that is none of these.
_FUNCTION = {
    "a", "an", "the", "of", "to", "on", "at", "from", "into", "over", "under", "without", "no", "not", "and",
    "or", "&", "x", "per", "plus", "up", "out", "off", "one", "two", "three", "four", "all", "new", "only",
    "kit", "set", "pack", "sample", "home", "depot", "best", "cheap", "large", "small", "big", "mini", "high",
    "low", "extra", "heavy", "duty", "indoor", "outdoor", "inch", "inches", "ft", "feet", "in", "is", "it",
    "exterior", "interior", "electric", "portable", "cordless", "wireless", "commercial", "residential",
    "decorative", "adjustable", "automatic", "replacement", "universal", "standard", "used", "modern",
} | COLORS | FINISHES
# A title's head may name a bundle ("trim kit"): the word before it is a product type of the title too.
CONTAINERS = {"kit", "set", "pack", "combo", "bundle", "pair", "assembly", "system", "collection", "package"}
_BOUNDARY = re.compile(r"\s(?:for|with|w/|in|featuring|includes|including|that|by|compatible|fits|"
                       r"replaces|and\s+(?:\d|a\b))\s|[,;|]|\s-\s|\s–\s")
_INVARIANT = {"lens", "series", "glass", "gas", "bus", "grass", "chassis", "species", "scissors", "pants",
              "shorts", "jeans", "pliers", "tongs", "clothes", "pvc", "cpvc", "brass", "moss", "canvas", "bias"}
_NUM = r"(?:\d+[- ]\d+/\d+|\d+/\d+|\d+(?:\.\d+)?|\.\d+)"
_UNIT_ALT = "|".join(sorted((re.escape(s) for spell in UNITS.values() for s in spell), key=len, reverse=True))
_MEASURE = re.compile(rf"(?<![\w./])(?P<num>{_NUM})\s*-?\s*(?P<unit>{_UNIT_ALT})(?![a-z])\.?")
_WORD = re.compile(r"[a-z][a-z'\-]*[a-z]|[a-z]")
# A model number mixes letters and digits in one part ("a19", "r22") or starts with letters then digits
# ("sc-141"); "100-light", "1-handle" and "5ton" are a count or a measure with a word, not models.
_MODEL = re.compile(r"#?\b(?:[a-z]+\d[a-z0-9]*|[a-z]+-\d[a-z0-9]*)(?:-[a-z0-9]+)*\b")
_DIMENSION = re.compile(r"\d+(?:x\d+)+")
_NOT_INCLUDED = re.compile(r"([a-z][a-z \-]*?)\s+(?:not included|sold separately|not incl\.?)")
_ONLY = re.compile(r"\b([a-z][a-z\-]+)\s+only\b")


def singular(word: str) -> str:
    """A word in its singular form by suffix rules (lenses -> lens, batteries -> battery, boxes -> box)."""
    if word in _INVARIANT or len(word) <= 3:
        return word
    if word.endswith("es") and word[:-2] in _INVARIANT:
        return word[:-2]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _number(text: str) -> float:
    """"1-1/2" -> 1.5, "3/4" -> 0.75, ".5" -> 0.5, "12" -> 12."""
    whole, frac = 0.0, text
    parts = re.split(r"[- ]", text)
    if len(parts) == 2:
        whole, frac = float(parts[0]), parts[1]
    if "/" in frac:
        top, bottom = frac.split("/")
        return round(whole + (float(top) / float(bottom) if float(bottom) else 0.0), 4)
    return round(whole + float(frac), 4)


def _unit_of(spelling: str) -> str:
    spelling = spelling.rstrip(".").replace(". ", " ")
    return next(name for name, spells in UNITS.items() if spelling in (s.replace(". ", " ") for s in spells))


def format_value(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Facts:
    """What a title or a query says on its own."""

    text: str
    head: str | None = None  # the product type: the head noun, singular
    types: frozenset[str] = frozenset()  # the head, and the word before a bundle head ("trim" of "trim kit")
    modifiers: tuple[str, ...] = ()  # the head noun phrase's other words (singular), in order
    words: frozenset[str] = frozenset()  # every word of the text, singular
    served: frozenset[str] = frozenset()  # words after "for" / "fits" / "compatible with": what it serves
    measures: dict[str, frozenset[str]] = field(default_factory=dict)  # unit -> values ("12", "0.75")
    colors: frozenset[str] = frozenset()
    materials: frozenset[str] = frozenset()
    finishes: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()  # tokens with letters and digits: "sc-141", "a19"
    not_included: tuple[str, ...] = ()  # singular head words of "X not included" / "X sold separately"
    only: tuple[str, ...] = ()  # "shower only" -> ("shower",)
    kit: bool = False


def facts(text: str) -> Facts:
    """The facts of one title or query (lower-cased; measures read before words)."""
    low = re.sub(r"(\d),(\d{3})\b", r"\1\2", text.lower().replace("’", "'").replace("”", '"'))  # 18,000 BTU
    low = " " + re.sub(r"\s+", " ", low) + " "
    measures: dict[str, set[str]] = {}
    for match in _MEASURE.finditer(low):
        unit = _unit_of(match.group("unit"))
        measures.setdefault(unit, set()).add(format_value(_number(match.group("num"))))
    bare = _MEASURE.sub(" ", low)
    not_included = tuple(singular(_words(m.group(1))[-1]) for m in _NOT_INCLUDED.finditer(bare) if _words(m.group(1)))
    only = tuple(singular(m.group(1)) for m in _ONLY.finditer(bare) if m.group(1) not in _FUNCTION)
    bare = re.sub(r"\([^)]*\)?", " ", bare)  # "(4-Pack)", "(Valve Not Included)": read above, not the type
    cut = _BOUNDARY.search(bare)
    head_part, _tail = (bare[: cut.start()], bare[cut.start():]) if cut else (bare, "")
    phrase = [singular(w) for w in _words(head_part) if not _MODEL.fullmatch(w)]
    while phrase and phrase[-1] in _FUNCTION - CONTAINERS:
        phrase.pop()
    if not phrase:  # "for outdoor use": nothing before the boundary; read the whole text
        phrase = [singular(w) for w in _words(bare) if not _MODEL.fullmatch(w) and w not in _FUNCTION]
    head = phrase[-1] if phrase else None
    types = {head} if head else set()
    if head in CONTAINERS and len(phrase) > 1:
        types.add(phrase[-2])
    words = [singular(w) for w in _words(bare)]
    served_at = re.search(r"\s(?:for|fits|compatible with|replaces)\s", bare)
    served = {singular(w) for w in _words(bare[served_at.end():])} - _FUNCTION if served_at else set()
    models = {m.group(0).lstrip("#") for m in _MODEL.finditer(bare) if not _DIMENSION.fullmatch(m.group(0))}
    return Facts(
        text=text, head=head, types=frozenset(types), modifiers=tuple(phrase[:-1]), words=frozenset(words),
        served=frozenset(served), measures={k: frozenset(v) for k, v in measures.items()},
        colors=frozenset("gray" if w == "grey" else w for w in words if w in COLORS),
        materials=frozenset(w for w in words if w in MATERIALS), finishes=frozenset(w for w in words if w in FINISHES),
        models=frozenset(models), not_included=not_included, only=only,
        kit=bool(set(_words(head_part)) & {"kit", "set", "combo", "bundle"}) or head in CONTAINERS,
    )


def _words(text: str) -> list[str]:
    return _WORD.findall(text.replace("/", " "))


def attribute_values(f: Facts) -> dict[str, frozenset[str]]:
    """Every attribute the facts state, by step name: units, color, material, finish."""
    out = dict(f.measures)
    for name, values in (("color", f.colors), ("material", f.materials), ("finish", f.finishes)):
        if values:
            out[name] = values
    return out


# ---------------------------------------------------------------------------- the product-type step

# How a query's product type stands to a title's, and how often the rules' label agrees with the human
# label for pairs read so (Home Depot train split, `bench/home_depot.py --agreement`; see docs/results.md, "Home Depot").
# A verdict is used as a gold step where its confidence reaches the rules config's gold_step_confidence.
TYPE_EVIDENCE = {
    "head": ("match", "the query's head noun is the title's, and so is every modifier of it"),
    "head_unconfirmed": ("match", "the query's head noun is the title's; a modifier of it is not in the title"),
    "no_type": ("match", "the query names no product type"),
    "modifier": ("mismatch", "the title names it only as a modifier of another type"),
    "served": ("mismatch", "the title is for it (an accessory or part)"),
    "not_included": ("mismatch", "the title says it is not included"),
    "absent": ("mismatch", "the title does not name it"),
}


def type_relation(query: Facts, title: Facts, known: set[str] | frozenset[str] | None = None,
                  ignore: frozenset[str] = frozenset()) -> tuple[str, str]:
    """(evidence kind of TYPE_EVIDENCE, the query's product type or "") for a query against a title.

    `known` are the product types of the catalog (title heads): a query head outside them names no type.
    `ignore`: modifier words other steps judge (the brand's)."""
    want = query.head
    if want is None:
        return "no_type", ""
    if want in title.not_included:
        return "not_included", want
    if want in title.types:
        loose = [m for m in query.modifiers if m not in _FUNCTION | MATERIALS | ignore and not re.search(r"\d", m)
                 and m not in title.words]
        return ("head_unconfirmed" if loose else "head"), want
    if known is not None and want not in known:
        return "no_type", ""
    if want in title.served:
        return "served", want
    if want in title.words:
        return "modifier", want
    return "absent", want

# Confidence of each kind of title evidence: the share of Home Depot train pairs whose rules label equals
# the human label among pairs whose least confident step rests on it (measured by bench/home_depot.py
# --agreement, 2026-12-01; a verdict from product fields has confidence 1).
CONFIDENCE = {
    "head": 0.74, "head_unconfirmed": 0.53, "no_type": 0.41, "not_included": 0.33, "absent": 0.25, "served": 0.22,
    "modifier": 0.15, "title_attribute": 0.62, "title_brand": 0.48, "title_model": 0.4,  # not matched (model: n 20-120, kept low)
}
