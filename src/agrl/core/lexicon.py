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

from agrl.data.records import Product
from agrl.core.titles import Facts, attribute_values, facts, singular

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
    elif last.endswith("ses") and last[:-2].endswith("s"):  # lenses -> lens, buses -> bus
        forms.add(last[:-2])
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
    facts: Facts | None = None  # read from the text alone (titles.py), for a catalog of titles


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
    title_mode: bool = False  # products are read from their titles (titles.py): no category fields
    types: set[str] = field(default_factory=set)  # product types of the catalog's titles (head nouns)
    title_brands: set[str] = field(default_factory=set)  # brands read from the first words of titles
    _facts: dict[str, Facts] = field(default_factory=dict)

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
        mode = config.get("title_facts", "auto")
        untyped = sum(not p.category for p in products)
        lex.title_mode = mode == "on" or (mode == "auto" and untyped > len(products) / 2)
        if lex.title_mode:
            lex._read_titles(products, int(config.get("title_brand_min_count", 3)))
        return lex

    def _read_titles(self, products: list[Product], min_count: int) -> None:
        """Product types (title head nouns) and brands (first words shared by `min_count`+ titles)."""
        first: dict[str, int] = {}
        inside: dict[str, int] = {}  # a brand starts titles more often than it stands inside them ("heat", "air")
        prefixes: dict[tuple[str, ...], int] = {}
        for product in products:
            self.types |= self.facts(product.title).types
            words = tokens(product.title)
            for word in set(words[1:]):
                inside[word] = inside.get(word, 0) + 1
            if product.brand or not words or not words[0][0].isalpha():
                continue
            first[words[0]] = first.get(words[0], 0) + 1
            for size in (2, 3):
                if len(words) >= size:
                    prefixes[tuple(words[:size])] = prefixes.get(tuple(words[:size]), 0) + 1
        for word, count in sorted(first.items()):
            if (count < min_count or word in ("the", "a", "an", "new") or singular(word) in self.types
                    or inside.get(word, 0) > count):
                continue
            brand = (word,)
            for size in (2, 3):  # "hampton bay", "home decorators collection": a longer prefix nearly always follows
                longer = max((p for p in prefixes if len(p) == size and p[: size - 1] == brand),
                             key=lambda p: (prefixes[p], p), default=None)
                if longer is None or prefixes[longer] < 0.8 * count:
                    break
                brand = longer
            self.title_brands.add(" ".join(brand))
        for brand in sorted(self.title_brands):
            self.add(brand, "brand", brand)

    def facts(self, text: str) -> Facts:
        """titles.facts, cached (a catalog repeats titles across queries)."""
        if text not in self._facts:
            self._facts[text] = facts(text)
        return self._facts[text]

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
        read = None
        if self.title_mode:
            read = self.facts(text)
            for name, values in sorted(attribute_values(read).items()):
                attrs.setdefault(name, " + ".join(sorted(values)))
            model = model or min(read.models, default=None)
        return Query(text, self._query_category(cats, model, self.head_categories(text)), brand, model,
                     tuple(attrs.items()), tuple(negs), price, alternative, read)

    def head_categories(self, text: str) -> list[str]:
        """The categories named before the first "for" / "with" / comma: the head noun phrase's."""
        head = re.split(r"\s(?:for|with|compatible with|fits)\s|[,(]", f" {text.lower()} ")[0]
        return [m.value for m in self.scan(head) if m.kind == "category"]

    def _query_category(self, cats: list[str], model: str | None, head: list[str] = ()) -> str | None:
        accessory = [c for c in cats if c in self.accessories and self.accessories[c] in cats]
        if accessory:  # "charger for a dell laptop" asks for the charger
            return accessory[0]
        if head:  # the head noun is the last one: "camera lens" asks for a lens, "bike helmet" for a helmet
            return head[-1]
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
        # A product with only a title is read through titles.py where the catalog is one of titles.
        self.facts = lex.facts(product.title) if lex.title_mode and not product.category else None
        self.kinds: dict[str, str] = {}  # step -> kind of title evidence it rests on (confidence, titles.py)

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
        if self.facts is not None:
            return self.facts.head, "title" if self.facts.head else "none"
        found = [m.value for m in self.mentions if m.kind == "category"]
        accessory = [c for c in found if c in self.lex.accessories]
        head = self.lex.head_categories(self.product.title)
        found = accessory or head[-1:] or found  # the title's head noun: "lens cap for canon cameras" is a cap
        return (found[0], "title") if found else (None, "none")

    def brand(self) -> tuple[str | None, str]:
        if self.product.brand:
            return norm(self.product.brand), "field"
        if self.facts is not None:
            words = tokens(self.product.title)
            value = next((" ".join(words[:n]) for n in (3, 2, 1) if " ".join(words[:n]) in self.lex.title_brands), None)
            self.kinds["brand"] = "title_brand"  # counts for confidence where the verdict is not a match
            return value, "title" if value else "none"
        value = self._from_text("brand")
        return value, "title" if value else "none"

    def model(self, want: str | None = None) -> tuple[str | None, str]:
        model = product_attributes(self.product).get("model")
        if model:
            return norm(model), "field"
        value = self._from_text("model")
        if value is None and self.facts is not None and self.facts.models:
            self.kinds["model"] = "title_model"
            value = want if want in self.facts.models else min(self.facts.models)
        return value, "title" if value else "none"

    def attribute(self, name: str, want: str | None = None) -> tuple[str | None, str]:
        """The product's value of an attribute; from a title, `want` when the title states it ("1 + 1.5": each)."""
        if self.product.attributes.get(name):
            return norm(self.product.attributes[name]), "field"
        value = self._from_text("attr", name)
        if value is None and self.facts is not None:
            stated = attribute_values(self.facts).get(name)
            if stated:
                self.kinds[f"attribute.{name}"] = "title_attribute"
                wanted = set(want.split(" + ")) if want else set()
                value = want if wanted and wanted <= stated else " + ".join(sorted(stated))
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
