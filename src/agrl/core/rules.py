"""Rules engine: atomic rules (one reasoning step each), the decision table, query understanding.

One code path serves four purposes (spec section 2): step ground truth for dense rewards, teacher
reasoning for SFT, guidance for Adaptive Guided Replay, and rule adherence of a model's output.

    table = DecisionTable.default(); table.decide({"category": "match", "brand": "mismatch"}, scheme)
    engine = RulesEngine.from_records(records); engine.judge(record).label; engine.guidance(record, 2)
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from agrl.data.records import Record, step_verdicts
from agrl.errors import UserError
from agrl.files import yaml_file
from agrl.core.lexicon import YES, Lexicon, ProductView, Query
from agrl.core.output import Judgement, Step, render
from agrl.data.schemes import DEFAULT, OUTCOMES, Scheme, load_scheme
from agrl.core.titles import CONFIDENCE, TYPE_EVIDENCE, type_relation

# ---------------------------------------------------------------------------- decision table

Condition = Callable[[dict[str, str]], bool]
CONDITIONS: dict[str, Condition] = {}


def register_condition(name: str) -> Callable[[Condition], Condition]:
    """Register a decision-table condition under a name usable from YAML."""

    def wrap(fn: Condition) -> Condition:
        CONDITIONS[name] = fn
        return fn

    return wrap


@register_condition("category_mismatch")
def _category_mismatch(verdicts: dict[str, str]) -> bool:
    return verdicts.get("category") == "mismatch"


@register_condition("any_violation")
def _any_violation(verdicts: dict[str, str]) -> bool:
    return any(v in ("mismatch", "violated") for v in verdicts.values())


@register_condition("any_unknown_or_substitute")
def _any_unknown(verdicts: dict[str, str]) -> bool:
    return verdicts.get("category") == "substitute" or "unknown" in verdicts.values()


@register_condition("always")
def _always(verdicts: dict[str, str]) -> bool:
    return True


REASONS = {
    "off_category": "the product type does not serve the query",
    "violation": "a stated constraint is violated",
    "uncertain": "a constraint is unconfirmed or the product is a substitute",
    "all_match": "every stated constraint holds",
}


@dataclass(frozen=True)
class DecisionRow:
    condition: str
    outcome: str


@dataclass(frozen=True)
class DecisionTable:
    """Ordered rows: the first whose condition holds gives the outcome; the scheme maps it to a level."""

    rows: tuple[DecisionRow, ...]

    def __post_init__(self):
        for row in self.rows:
            if row.condition not in CONDITIONS:
                raise UserError(f"decision table: unknown condition {row.condition!r} (known: {sorted(CONDITIONS)})")
            if row.outcome not in OUTCOMES:
                raise UserError(f"decision table: unknown outcome {row.outcome!r} (known: {list(OUTCOMES)})")
        if not self.rows or self.rows[-1].condition != "always":
            raise UserError("decision table: the last row must have condition 'always'")

    @classmethod
    def default(cls) -> DecisionTable:
        return cls.from_list(
            [
                {"if": "category_mismatch", "then": "off_category"},
                {"if": "any_violation", "then": "violation"},
                {"if": "any_unknown_or_substitute", "then": "uncertain"},
                {"if": "always", "then": "all_match"},
            ]
        )

    @classmethod
    def from_list(cls, rows: list[dict]) -> DecisionTable:
        if not isinstance(rows, list) or not all(isinstance(r, dict) and {"if", "then"} <= set(r) for r in rows):
            raise UserError("decision_table: must be a list of {if: CONDITION, then: OUTCOME} rows")
        return cls(tuple(DecisionRow(str(r["if"]), str(r["then"])) for r in rows))

    def outcome(self, verdicts: dict[str, str]) -> str:
        return next(row.outcome for row in self.rows if CONDITIONS[row.condition](verdicts))

    def decide(self, verdicts: dict[str, str], scheme: Scheme) -> tuple[int, str]:
        """(label, short reason) for a set of step verdicts."""
        outcome = self.outcome(verdicts)
        return scheme.outcomes[outcome], REASONS[outcome]

    def adheres(self, verdicts: dict[str, str], label: int, scheme: Scheme) -> bool:
        """Rule adherence: do these verdicts imply this label under the table?"""
        return self.decide(verdicts, scheme)[0] == label


# ---------------------------------------------------------------------------- atomic rules

RuleFn = Callable[[Query, ProductView], list[Step]]
RULES: dict[str, RuleFn] = {}


def register_rule(name: str) -> Callable[[RuleFn], RuleFn]:
    """Register an atomic rule: f(query, product view) -> its steps (none when the query states nothing)."""

    def wrap(fn: RuleFn) -> RuleFn:
        RULES[name] = fn
        return fn

    return wrap


def resolve_rule(name: str) -> RuleFn:
    """A registered rule name, or "package.module:function"."""
    if not isinstance(name, str):
        raise UserError(f"rules config: rules: {name!r} is not a rule name")
    if name in RULES:
        return RULES[name]
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr.isidentifier():
        raise UserError(f"rules config: unknown rule {name!r} (registered: {sorted(RULES)}; or use module:function)")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise UserError(f"rules config: cannot load rule {name!r}: {err}") from None
    if fn in RULES.values():  # registered by its module on import
        return fn
    try:
        inspect.signature(fn).bind(None, None)
    except (TypeError, ValueError):  # not callable, or not f(query, product view)
        raise UserError(f"rules config: {name!r} is not a rule: a rule is f(query, view) -> list[Step]") from None
    return fn


def _title(source: str) -> str:
    return " (title)" if source == "title" else ""


def _compare(step: str, want: str, got: str | None, source: str) -> Step:
    if got is None:
        return Step(step, "unknown", f"{want} not stated")
    if got == want:
        return Step(step, "match", want + _title(source))
    return Step(step, "mismatch", f"{want} vs {got}{_title(source)}")


@register_rule("category")
def category_rule(query: Query, view: ProductView) -> list[Step]:
    if query.facts is not None and view.facts is not None:  # a catalog of titles: head noun against head noun
        kind, want = type_relation(query.facts, view.facts, view.lex.types, frozenset((query.brand or "").split()))
        view.kinds["category"] = kind
        got = view.facts.head or "unknown type"
        evidence = {"head": f"{want} (title)", "head_unconfirmed": f"{want} (title)", "no_type": "no type asked",
                    "not_included": f"{want} not included (title)"}.get(kind, f"{want} vs {got} (title)")
        return [Step("category", TYPE_EVIDENCE[kind][0], evidence)]
    got, source = view.category()
    if query.category is None:
        return [Step("category", "match", "no type asked")]
    if got == query.category:
        return [Step("category", "match", got + _title(source))]
    verdict = "substitute" if frozenset((got, query.category)) in view.lex.substitutes else "mismatch"
    return [Step("category", verdict, f"{query.category} vs {got or 'unknown type'}{_title(source)}")]


@register_rule("brand")
def brand_rule(query: Query, view: ProductView) -> list[Step]:
    return [] if query.brand is None else [_compare("brand", query.brand, *view.brand())]


@register_rule("model")
def model_rule(query: Query, view: ProductView) -> list[Step]:
    return [] if query.model is None else [_compare("model", query.model, *view.model(query.model))]


@register_rule("attribute")
def attribute_rule(query: Query, view: ProductView) -> list[Step]:
    return [_compare(f"attribute.{name}", value, *view.attribute(name, value)) for name, value in query.attributes]


def _has(view: ProductView, kind: str, value: str) -> bool | None:
    """Does the product have the negated thing? None when its data does not say."""
    if kind == "feature":
        got, _ = view.feature(value)
        return None if got is None else got == YES
    if kind == "attr":
        name, _, value = value.partition("=")
        got, _ = view.attribute(name)
    else:
        got, _ = view.brand() if kind == "brand" else view.model()
    return None if got is None else got == value


@register_rule("negation")
def negation_rule(query: Query, view: ProductView) -> list[Step]:
    if not query.negations:
        return []
    found = [(value.partition("=")[2] or value, _has(view, kind, value)) for kind, value in query.negations]
    found = [(what.replace("_", " "), has) for what, has in found]
    if any(has for _, has in found):
        return [Step("negation", "violated", "; ".join(f"has {w}" for w, has in found if has))]
    if any(has is None for _, has in found):
        return [Step("negation", "unknown", "; ".join(f"{w} not stated" for w, has in found if has is None))]
    return [Step("negation", "respected", "; ".join(f"no {w}" for w, _ in found))]


@register_rule("price")
def price_rule(query: Query, view: ProductView) -> list[Step]:
    if query.price is None:
        return []
    side, bound = query.price
    price = view.product.price
    if price is None:
        return [Step("price", "unknown", "price not stated")]
    holds = price <= bound if side == "under" else price >= bound
    return [Step("price", "match" if holds else "mismatch", f"{price:g} vs {side} {bound:g}")]


@register_rule("alternative")
def alternative_rule(query: Query, view: ProductView) -> list[Step]:
    if query.alternative is None:
        return []
    kind, target = query.alternative
    got, source = view.brand() if kind == "brand" else view.model()
    if got is None:
        return [Step("alternative", "unknown", f"{kind} not stated")]
    if got == target:
        return [Step("alternative", "mismatch", f"is {target}{_title(source)}")]
    return [Step("alternative", "match", f"{got} not {target}{_title(source)}")]


# ---------------------------------------------------------------------------- the engine


# A judged or gold verdict has exactly the shape of a parsed completion: label, steps, reason.
Verdict = Judgement


def load_config(path: str | Path | None = None) -> dict:
    """The default rules config, with the top-level keys of a user YAML file replacing its own."""
    default = resources.files("agrl") / "recipes" / "rules" / "default.yaml"
    config = yaml.safe_load(default.read_text())
    if path is None:
        return config
    user = yaml_file(path, "rules config") or {}
    if not isinstance(user, dict):
        raise UserError(f"{path}: a rules config must be a mapping of keys to values")
    unknown = set(user) - set(config)
    if unknown:
        raise UserError(f"{path}: unknown rules config key(s) {sorted(unknown)} (known: {sorted(config)})")
    config = config | user
    _check_config(config, str(path))
    return config


SCALAR_KEYS = ("title_facts", "title_brand_min_count", "gold_step_confidence")


def _check_config(config: dict, where: str) -> None:
    """The shapes lexicon.py and the engine read, so a bad file fails here, naming the key."""
    if not isinstance(config["rules"], list) or not config["rules"]:
        raise UserError(f"{where}: rules: must list at least one rule (with none, every pair gets the top label)")
    if len(set(map(str, config["rules"]))) != len(config["rules"]):
        raise UserError(f"{where}: rules: a rule is listed twice (each writes its steps once)")
    if "category" not in config["rules"]:
        raise UserError(f"{where}: rules: must include 'category' (every reasoning states the category verdict)")
    for key in ("substitutes",):
        pairs = config[key] or []
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise UserError(f"{where}: {key}: must be a list of [category, category] pairs")
    for key in ("accessories", "category_aliases"):
        if not isinstance(config[key] or {}, dict):
            raise UserError(f"{where}: {key}: must be a mapping of name: category")
    if config.get("title_facts", "auto") not in ("auto", "on", "off"):
        raise UserError(f"{where}: title_facts: must be auto, on or off, got {config['title_facts']!r}")
    count = config.get("title_brand_min_count", 3)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"{where}: title_brand_min_count: must be an integer >= 1, got {count!r}")
    threshold = config.get("gold_step_confidence", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise UserError(f"{where}: gold_step_confidence: must be a number in [0, 1], got {threshold!r}")
    for key, value in config.items():
        if key in SCALAR_KEYS:
            continue
        if key not in ("rules", "decision_table", "substitutes", "accessories", "category_aliases") and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise UserError(f"{where}: {key}: must be a list of words or phrases (quote yes/no/on/off)")


# What decides a pair, per decision outcome: the steps whose verdicts trigger its row.
_DECIDING = {"off_category": ("mismatch",), "violation": ("mismatch", "violated"),
             "uncertain": ("unknown", "substitute")}


class RulesEngine:
    """Step verdicts, labels, teacher reasoning and guidance for records, from one set of rules."""

    def __init__(self, lexicon: Lexicon, table: DecisionTable, rules: list[RuleFn], scheme: Scheme):
        self.lexicon, self.table, self.rules, self.scheme = lexicon, table, rules, scheme
        self.names = [getattr(rule, "__name__", "rule") for rule in rules]  # for messages about a rule
        self._queries: dict[str, Query] = {}
        self.gold_step_confidence = 0.0  # rules config: below it, a labelled record's rules steps are no gold steps

    @classmethod
    def from_records(cls, records: Iterable[Record], scheme: Scheme | None = None,
                     config: str | None = None) -> RulesEngine:
        """An engine whose lexicon comes from the products of these records."""
        cfg = load_config(config)
        rules = [resolve_rule(name) for name in cfg["rules"]]
        table = DecisionTable.from_list(cfg["decision_table"])
        lexicon = Lexicon.build((r.product for r in records), cfg)
        engine = cls(lexicon, table, rules, scheme or load_scheme(DEFAULT))
        engine.names = [str(name) for name in cfg["rules"]]
        engine.gold_step_confidence = float(cfg.get("gold_step_confidence", 0.0))
        return engine

    def understand(self, query: str) -> Query:
        if query not in self._queries:
            self._queries[query] = self.lexicon.understand(query)
        return self._queries[query]

    def judge(self, record: Record) -> Verdict:
        """The rules' verdicts on a record from its free-text query and its product data."""
        return self.assess(record)[0]

    def assess(self, record: Record) -> tuple[Verdict, float, str | None]:
        """The rules' verdict, its confidence and the kind of evidence that sets it: confidence 1 (kind None)
        from product fields; from a title, the least confident kind of title evidence its steps rest on
        (titles.CONFIDENCE)."""
        query, view = self.understand(record.query), ProductView(record.product, self.lexicon)
        steps: list[Step] = []
        for name, rule in zip(self.names, self.rules):
            written = rule(query, view)
            # A user's rule is data we cannot trust: a bad step is a UserError naming the rule, not an assert.
            if not isinstance(written, (list, tuple)) or not all(isinstance(s, Step) for s in written):
                raise UserError(f"rule {name!r} returned {written!r}; a rule returns a list of Step")
            for step in written:
                if step.verdict not in (step_verdicts(step.name) or ()):
                    raise UserError(f"rule {name!r} wrote step {step.name}={step.verdict!r}, not a known step/verdict")
                if any(step.name == s.name for s in steps):
                    raise UserError(f"rule {name!r} wrote step {step.name!r}, which another rule already wrote")
            steps.extend(written)
        verdicts = {step.name: step.verdict for step in steps}
        label, reason = self.table.decide(verdicts, self.scheme)
        # The type step's evidence always counts; another title fact only where it does not match (a title
        # that states the asked-for value is good evidence; one that states another value, or none, is weak).
        weak = {step.name for step in steps if step.name == "category" or step.verdict != "match"}
        kinds = sorted((CONFIDENCE[kind], kind) for name, kind in view.kinds.items() if name in weak)
        confidence, kind = kinds[0] if kinds else (1.0, None)
        return Verdict(label, tuple(steps), reason), confidence, kind

    def gold(self, record: Record) -> Verdict:
        """The record's own label/steps where present (evidence from the rules), else the rules' verdict.

        A labelled record without steps takes the rules' steps as gold only where their confidence
        reaches `gold_step_confidence`; below it, it has no gold steps (reward shaping and guidance
        then rest on the label alone)."""
        judged, confidence, _ = self.assess(record)
        if record.label is None and record.steps is None:
            return judged
        steps = judged.steps if confidence >= self.gold_step_confidence else ()
        if record.steps is not None:
            mine = {step.name: step for step in judged.steps}
            steps = tuple(
                Step(name, verdict, mine[name].evidence if name in mine and mine[name].verdict == verdict else "")
                for name, verdict in record.steps.items()
            )
        verdicts = {step.name: step.verdict for step in steps}
        label, reason = self.table.decide(verdicts, self.scheme)
        if record.label is not None and record.label != label:
            label = record.label
            reason = next((REASONS[o] for o, code in self.scheme.outcomes.items() if code == label), "")
        return Verdict(label, steps, reason)

    def gold_steps(self, record: Record) -> dict[str, str] | None:
        """The gold verdicts as {step: verdict} (category + every step that applies): the one source
        of gold steps for rewards (the RL rows' `steps`) and eval's step accuracy. None where a
        labelled record has none (the rules' confidence is below gold_step_confidence): the dense
        rewards then stay off and the label alone is rewarded."""
        steps = self.gold(record).steps
        if not steps and record.steps is None and record.label is not None:
            return None
        return {step.name: step.verdict for step in steps}

    def teacher_reasoning(self, record: Record) -> str:
        """SFT's target: the gold verdict rendered. Where the rules' steps are below gold_step_confidence
        but imply the gold label, they are still rendered (the reasoning stays whole and consistent);
        where they imply another label, only the label and decision are."""
        gold = self.gold(record)
        if not gold.steps and record.steps is None:
            judged = self.judge(record)
            if judged.label == gold.label:
                gold = judged
        return render(gold.label, gold.steps, gold.reason)

    def guidance(self, record: Record, level: int) -> str:
        """One line: 1 names the deciding rules; 2 adds the gold step verdicts; 3 adds the gold label."""
        assert level in (1, 2, 3), f"guidance level must be 1, 2 or 3, got {level}"
        gold = self.gold(record)
        outcome = self.table.outcome(gold.verdicts)
        wanted = _DECIDING.get(outcome)
        deciding = [s.name for s in gold.steps if wanted is None or s.verdict in wanted]
        if outcome == "off_category":
            deciding = ["category"]
        parts = ["check: " + ", ".join(deciding or [s.name for s in gold.steps] or ["category"])]
        if level >= 2:
            parts.append("verdicts: " + ", ".join(
                f"{s.name}={s.verdict}" + (f" ({s.evidence})" if s.evidence else "") for s in gold.steps))
        if level >= 3:
            parts.append(f"label: {gold.label}" + (f" ({gold.reason})" if gold.reason else ""))
        return " | ".join(parts)

    def adheres(self, judgement: Judgement) -> bool:
        """Do the judgement's own verdicts imply its own label under the decision table?"""
        return self.table.adheres(judgement.verdicts, judgement.label, self.scheme)


def label_records(records: list[Record], engine: RulesEngine) -> tuple[list[Record], list[tuple[Record, Verdict]]]:
    """Fill label and steps from the rules where a record has none; keep gold labels.

    Returns the records and the (record, rules verdict) pairs where the rules disagree with a gold label.
    Steps are filled for a labelled record only when the rules agree with its label, confidently
    (engine.gold_step_confidence).
    """
    disagreements = []
    for record in records:
        verdict, confidence, _ = engine.assess(record)
        if record.label is not None and record.label != verdict.label:
            disagreements.append((record, verdict))
            continue
        gold_label = record.label is not None
        if record.label is None:  # steps given without a label: the table decides from those steps
            record.label = engine.gold(record).label
        if record.steps is None and (not gold_label or confidence >= engine.gold_step_confidence):
            record.steps = verdict.verdicts
    return records, disagreements


def label_file(file: str, out: str, scheme: str | None, rules: str | None
               ) -> tuple[list[Record], int, list[tuple[Record, Verdict]]]:
    """`agrl data label`: FILE checked (readable, not empty, OUT distinct from it and writable), read in
    its scheme (data.resolve_scheme), label and steps filled by the rules where missing, written to OUT.
    Returns the records, how many the rules labelled, and the gold labels the rules disagree with."""
    from agrl.core.output import check_reasoning
    from agrl.data.records import check_not_empty, check_source, load_records, resolve_scheme, write_jsonl
    from agrl.files import distinct, output_file

    check_source(file)
    check_not_empty(file)
    distinct({"OUT": out}, {"FILE": file, "--rules": rules})
    output_file(out, "OUT")
    scheme = resolve_scheme(file, scheme)
    records = load_records(file, load_scheme(scheme), checks=[check_reasoning])
    engine = RulesEngine.from_records(records, load_scheme(scheme), rules)
    unlabelled = sum(r.label is None for r in records)
    records, disagreements = label_records(records, engine)
    write_jsonl(records, out)
    return records, unlabelled, disagreements
