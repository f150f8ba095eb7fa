"""Query understanding and product facts: a lexicon built from the catalog plus configurable word lists.

The lexicon knows every brand, category (with singular/plural variants), attribute value (by
attribute name) and model string among the products it is built from, plus the word lists of the
rules config (negation, price, alternative cues). It reads free-text queries into constraints
(`Query`) and products into facts (`ProductView`: structured fields first, then title/description).

    lex = Lexicon.build(products, config); q = lex.understand("red nike running shoes under 100")
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from agrl.data import Product

_TOKEN = re.compile(r"[a-z0-9]+(?:[.\-'][a-z0-9]+)*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
YES, NO = "yes", "no"
CUE_KINDS = {"negation": "neg", "price_upper": "upper", "price_lower": "lower",
             "alternative_prefix": "alt_pre", "alternative_suffix": "alt_suf", "filler": "filler"}


def tokens(text: str) -> list[str]:
    text = re.sub(r"(\d),(\d{3})\b", r"\1\2", text.lower())  # "1,299" is one number
    return _TOKEN.findall(text.replace("$", " "))


def norm(text: str) -> str:
    return " ".join(tokens(text))


def number_forms(phrase: str) -> set[str]:
    """The phrase with its last word in singular and plural ("running shoes" <-> "running shoe")."""
    *head, last = phrase.split()
    forms = {last}
    if last.endswith(("ches", "shes", "sses", "xes")):
        forms.add(last[:-2])
    elif last.endswith("ies"):
        forms.add(last[:-3] + "y")
    elif last.endswith("s") and not last.endswith("ss"):
        forms.add(last[:-1])
    elif last.endswith(("ch", "sh", "ss", "x")):
        forms.add(last + "es")
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        forms.add(last[:-1] + "ies")
    else:
        forms.add(last + "s")
    return {" ".join([*head, form]) for form in forms}


@dataclass(frozen=True)
class Mention:
    kind: str  # category, brand, model, attr (value "name=value"), feature, number, word, or a cue kind
    value: str


@dataclass(frozen=True)
class Query:
    """The constraints a free-text query states."""

    text: str
    category: str | None = None
    brand: str | None = None
    model: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    negations: tuple[tuple[str, str], ...] = ()  # (kind, value): brand, model, attr "name=value", feature
    price: tuple[str, float] | None = None  # ("under" | "over", bound)
    alternative: tuple[str, str] | None = None  # (brand | model, value)


@dataclass
class Lexicon:
    phrases: dict[tuple[str, ...], Mention] = field(default_factory=dict)
    categories: set[str] = field(default_factory=set)
    attr_values: dict[str, set[str]] = field(default_factory=dict)
    model_category: dict[str, str] = field(default_factory=dict)
    substitutes: set[frozenset[str]] = field(default_factory=set)
    accessories: dict[str, str] = field(default_factory=dict)
    negation_suffixes: tuple[str, ...] = ()
    max_len: int = 1

    # ------------------------------------------------------------------------ building

    def add(self, phrase: str, kind: str, value: str) -> None:
        """Register a phrase; the first registration of a phrase wins (cues, then models, brands, ...)."""
        key = tuple(tokens(phrase))
        if key and key not in self.phrases:
            self.phrases[key] = Mention(kind, value)
            self.max_len = max(self.max_len, len(key))

    @classmethod
    def build(cls, products: Iterable[Product], config: dict) -> Lexicon:
        products = list(products)
        lex = cls(negation_suffixes=tuple(config.get("negation_suffixes", ())))
        for key, kind in CUE_KINDS.items():
            for phrase in config.get(key, ()):
                lex.add(phrase, kind, norm(phrase))
        brands, models, values, features = set(), {}, {}, set()
        for product in products:
            category = leaf(product.category)
            if category:
                lex.categories.add(category)
            if product.brand:
                brands.add(norm(product.brand))
            for name, value in product_attributes(product).items():
                if name == "model":
                    models.setdefault(norm(value), []).append(category)
                elif value.lower() in (YES, NO):
                    features.add(name)
                else:
                    values.setdefault(name, set()).add(norm(value))
        accessories = {norm(k): norm(v) for k, v in config.get("accessories", {}).items()}
        for model, cats in sorted(models.items()):
            lex.add(model, "model", model)
            items = {c for c in cats if c and c not in accessories}
            if len(items) == 1:
                lex.model_category[model] = items.pop()
        for brand in sorted(brands):
            lex.add(brand, "brand", brand)
        lex._add_categories(config)
        for name in sorted(features):
            for form in sorted(number_forms(name.replace("_", " "))):
                lex.add(form, "feature", name)
        for name, vals in sorted(values.items()):
            lex.attr_values[name] = vals
            for value in sorted(vals):
                if not _NUMBER.fullmatch(value):
                    lex.add(value, "attr", f"{name}={value}")
                lex.add(f"{name.replace('_', ' ')} {value}", "attr", f"{name}={value}")
        lex.accessories = {lex.canonical(k): lex.canonical(v) for k, v in accessories.items()}
        lex.substitutes = {frozenset(lex.canonical(norm(c)) for c in pair) for pair in config.get("substitutes", ())}
        return lex

    def _add_categories(self, config: dict) -> None:
        for category in sorted(self.categories):
            for form in sorted(number_forms(category)):
                self.add(form, "category", category)
        for alias, category in sorted(config.get("category_aliases", {}).items()):
            target = self.canonical(norm(category))
            if target in self.categories:
                self.add(alias, "category", target)
        # The head noun of a multi-word category names it when no other category shares it ("charger").
        heads: dict[str, set[str]] = {}
        for category in self.categories:
            if " " in category:
                for form in number_forms(category.split()[-1]):
                    heads.setdefault(form, set()).add(category)
        shared = {w for c in self.categories for w in c.split()[:-1]}
        for head, cats in sorted(heads.items()):
            if len(cats) == 1 and head not in shared:
                self.add(head, "category", next(iter(cats)))

    def canonical(self, name: str) -> str:
        """A category name as the lexicon spells it (its catalog leaf), e.g. "running shoe" -> "running shoes"."""
        mention = self.phrases.get(tuple(tokens(name)))
        return mention.value if mention is not None and mention.kind == "category" else norm(name)

    # ------------------------------------------------------------------------ reading text

    def scan(self, text: str) -> list[Mention]:
        """Longest-match reading of a text into mentions; filler words are dropped."""
        text = text.lower()
        for suffix in self.negation_suffixes:
            text = re.sub(rf"\b([a-z0-9]+){re.escape(suffix)}\b", r"without \1", text)
        words = tokens(text)
        out: list[Mention] = []
        i = 0
        while i < len(words):
            for size in range(min(self.max_len, len(words) - i), 0, -1):
                mention = self.phrases.get(tuple(words[i : i + size]))
                if mention is not None:
                    break
            else:
                size, mention = 1, Mention("number" if _NUMBER.fullmatch(words[i]) else "word", words[i])
            if mention.kind != "filler":
                out.append(mention)
            i += size
        return out

    def understand(self, text: str) -> Query:
        """Free-text query -> its constraints."""
        mentions = self.scan(text)
        alternative, alt_targets = None, set()
        for i, mention in enumerate(mentions):  # "dyson vacuum dupe": the cue names the brand before it
            if mention.kind == "alt_suf":
                j = next((j for j in range(i - 1, -1, -1) if mentions[j].kind in ("brand", "model")), None)
                if j is not None:
                    alt_targets.add(j)
                    alternative = (mentions[j].kind, mentions[j].value)
        cats, attrs, negs = [], {}, []
        brand = model = price = None
        i = 0
        while i < len(mentions):
            kind, value = mentions[i].kind, mentions[i].value
            nxt = mentions[i + 1] if i + 1 < len(mentions) else Mention("", "")
            if kind == "neg" and nxt.kind in ("brand", "model", "attr", "feature"):
                negs.append((nxt.kind, nxt.value))
                i += 2
                continue
            if kind in ("upper", "lower") and nxt.kind == "number":
                price = ("under" if kind == "upper" else "over", float(nxt.value))
                i += 2
                continue
            if kind == "alt_pre" and nxt.kind in ("brand", "model"):
                alternative = (nxt.kind, nxt.value)
                i += 2
                continue
            if i in alt_targets:
                pass
            elif kind == "category":
                cats.append(value)
            elif kind == "brand":
                brand = brand or value
            elif kind == "model":
                model = model or value
            elif kind == "attr":
                name, _, val = value.partition("=")
                attrs.setdefault(name, val)
            i += 1
        return Query(text, self._query_category(cats, model), brand, model, tuple(attrs.items()),
                     tuple(negs), price, alternative)

    def _query_category(self, cats: list[str], model: str | None) -> str | None:
        accessory = [c for c in cats if c in self.accessories and self.accessories[c] in cats]
        if accessory:  # "charger for a dell laptop" asks for the charger
            return accessory[0]
        if cats:
            return cats[0]
        return self.model_category.get(model) if model else None


def product_attributes(product: Product) -> dict[str, str]:
    """Attributes, with a top-level `model` field (kept in product.extra by the loader) read as one."""
    model = product.extra.get("model")
    return ({"model": model} if isinstance(model, str) and model.strip() else {}) | product.attributes


def leaf(category_path: str | None) -> str | None:
    """The last level of a category path, normalised: "Shoes > Running Shoes" -> "running shoes"."""
    if not category_path:
        return None
    return norm(re.split(r"[>/|]", category_path)[-1]) or None


class ProductView:
    """A product's facts: structured fields first, then what its title/description state."""

    def __init__(self, product: Product, lex: Lexicon):
        self.product, self.lex = product, lex
        self.mentions = lex.scan(" ".join(t for t in (product.title, product.description) if t))

    def _from_text(self, kind: str, name: str | None = None) -> str | None:
        for i, mention in enumerate(self.mentions):
            negated = i > 0 and self.mentions[i - 1].kind == "neg"
            if mention.kind != kind or negated:
                continue
            if name is None:
                return mention.value
            attr, _, value = mention.value.partition("=")
            if attr == name:
                return value
        return None

    def category(self) -> tuple[str | None, str]:
        if self.product.category:
            return self.lex.canonical(leaf(self.product.category) or ""), "field"
        found = [m.value for m in self.mentions if m.kind == "category"]
        accessory = [c for c in found if c in self.lex.accessories]
        found = accessory or found
        return (found[0], "title") if found else (None, "none")

    def brand(self) -> tuple[str | None, str]:
        if self.product.brand:
            return norm(self.product.brand), "field"
        value = self._from_text("brand")
        return value, "title" if value else "none"

    def model(self) -> tuple[str | None, str]:
        model = product_attributes(self.product).get("model")
        if model:
            return norm(model), "field"
        value = self._from_text("model")
        return value, "title" if value else "none"

    def attribute(self, name: str) -> tuple[str | None, str]:
        if self.product.attributes.get(name):
            return norm(self.product.attributes[name]), "field"
        value = self._from_text("attr", name)
        return value, "title" if value else "none"

    def feature(self, name: str) -> tuple[str | None, str]:
        """yes/no: does the product have this feature (armrests, sulfates, ...)?"""
        if self.product.attributes.get(name, "").lower() in (YES, NO):
            return self.product.attributes[name].lower(), "field"
        for i, mention in enumerate(self.mentions):
            if mention.kind == "feature" and mention.value == name:
                negated = i > 0 and self.mentions[i - 1].kind == "neg"
                return (NO if negated else YES), "title"
        return None, "none"
