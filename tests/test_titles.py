"""Facts from titles and queries (titles.py), the head-noun reading of queries (issue 11 item 6), the
title mode of the rules engine, gold_step_confidence and `agrl data agreement`. Every case is hand-written.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_titles.py
"""

import json

import pytest
from typer.testing import CliRunner

from agrl.cli import app
from agrl.data.records import Product, Record, parse_record, write_jsonl
from agrl.core.rules import RulesEngine, label_records, load_config
from agrl.data.schemes import load_scheme
from agrl.core.titles import facts, singular, type_relation

THREE = load_scheme("three_level")

# (text, expected facts). `types` is the head and, for a bundle head (kit, set), the word before it.
CASES = [
    # product type = head noun; the rest are modifiers
    ("camera lens", {"head": "lens", "modifiers": ("camera",)}),
    ("canon camera", {"head": "camera", "modifiers": ("canon",)}),
    ("lens cap for canon camera", {"head": "cap", "served": {"canon", "camera"}}),
    ("bike helmet", {"head": "helmet"}),
    ("helmet for kids bike", {"head": "helmet"}),
    ("Canon EF 50mm f/1.8 STM Lens", {"head": "lens", "measures": {"mm": {"50"}}}),
    ("Simpson Strong-Tie 12-Gauge Angle", {"head": "angle", "measures": {"gauge": {"12"}}}),
    ("angle bracket", {"head": "bracket"}),
    ("l bracket", {"head": "bracket"}),
    ("rain shower head", {"head": "head", "modifiers": ("rain", "shower")}),
    ("Glacier Bay Mandouri 3-Spray Rain Shower Head in Chrome", {"head": "head", "finishes": {"chrome"}}),
    ("Delta Vero 1-Handle Shower Only Faucet Trim Kit in Chrome (Valve Not Included)",
     {"head": "kit", "types": {"kit", "trim"}, "finishes": {"chrome"}, "not_included": ("valve",),
      "only": ("shower",), "kit": True}),
    ("American Standard Berwick 1-Handle Shower Faucet Trim Kit (Valve Sold Separately)",
     {"head": "kit", "not_included": ("valve",), "kit": True}),
    ("Whirlpool 1.9 cu. ft. Over the Range Microwave in Bisque",
     {"head": "microwave", "measures": {"cu_ft": {"1.9"}}, "colors": {"bisque"}}),
    ("BEHR Premium Textured DeckOver 1-gal. #SC-141 Tugboat Wood and Concrete Coating",
     {"head": "coating", "measures": {"gallons": {"1"}}, "models": {"sc-141"}, "materials": {"wood", "concrete"}}),
    ("5 gallon bucket", {"head": "bucket", "measures": {"gallons": {"5"}}}),
    ("Homer 5 Gal. Orange Bucket", {"head": "bucket", "measures": {"gallons": {"5"}}, "colors": {"orange"}}),
    ("KBI 1/2 in. x 1-1/4 in. CPVC CTS Reducer Bushing",
     {"head": "bushing", "measures": {"inches": {"0.5", "1.25"}}, "materials": {"cpvc"}}),
    ("1 1/2 in x 1 in bushing", {"head": "bushing", "measures": {"inches": {"1.5", "1"}}}),
    ('3/4" copper pipe', {"head": "pipe", "measures": {"inches": {"0.75"}}, "materials": {"copper"}}),
    ("Everbilt 3/4 in. x 10 ft. Copper Type M Pipe", {"head": "pipe", "measures": {"inches": {"0.75"}, "feet": {"10"}}}),
    ("60-Watt A19 LED Light Bulb (4-Pack)", {"head": "bulb", "measures": {"watts": {"60"}, "pack": {"4"}},
                                             "models": {"a19"}}),
    ("60w light bulbs", {"head": "bulb", "measures": {"watts": {"60"}}}),
    ("led light bulb 100 watt", {"head": "bulb", "measures": {"watts": {"100"}}}),  # a trailing measure is no type
    ("Southwire 500 ft. 12/2 Solid Romex NM-B W/G Wire", {"head": "wire", "measures": {"feet": {"500"}}}),
    ("12 gauge wire", {"head": "wire", "measures": {"gauge": {"12"}}}),
    ("14 awg wire", {"measures": {"gauge": {"14"}}}),
    ("GREE 18,000 BTU (1.5Ton) Ductless Mini Split Air Conditioner with Inverter, Heat, Remote 208-230V",
     {"head": "conditioner", "measures": {"btu": {"18000"}, "volts": {"230"}}}),
    ("LG Electronics 5,000 BTU 115-Volt Window Air Conditioner", {"head": "conditioner",
                                                                  "measures": {"btu": {"5000"}, "volts": {"115"}}}),
    ("20 volt drill", {"head": "drill", "measures": {"volts": {"20"}}}),
    ("DEWALT 20-Volt Max Lithium-Ion Cordless Drill/Driver Kit", {"measures": {"volts": {"20"}}, "kit": True}),
    ("15 amp breaker", {"head": "breaker", "measures": {"amps": {"15"}}}),
    ("Square D QO 15 Amp Single-Pole Circuit Breaker", {"head": "breaker", "measures": {"amps": {"15"}}}),
    ("Jackson 5.75 cu. ft. Heavy-Duty Corrosion-Proof Poly Wheelbarrow", {"head": "wheelbarrow",
                                                                          "measures": {"cu_ft": {"5.75"}}}),
    ("wheelbarrows", {"head": "wheelbarrow"}),
    ("Nourison Aloha Blue 9 ft. 6 in. x 13 ft. Indoor/Outdoor Area Rug",
     {"head": "rug", "colors": {"blue"}, "measures": {"feet": {"9", "13"}, "inches": {"6"}}}),
    ("indoor outdoor rug 8' x 10'", {"head": "rug", "measures": {"feet": {"8", "10"}}}),
    ('10" tile saw', {"head": "saw", "measures": {"inches": {"10"}}, "modifiers": ("tile",)}),
    (("Stanley Doors 32 in. x 80 in. Colonial 9 Lite 2-Panel Prefinished White Steel Prehung Front Door with "
     "Internal Grille and Brickmold"), {"head": "door", "colors": {"white"}, "materials": {"steel"}}),
    ("doors exterior", {"head": "door"}),
    ("white vanity", {"head": "vanity", "colors": {"white"}}),
    ("brushed nickel cabinet pulls", {"head": "pull", "finishes": {"brushed", "nickel"}}),
    ("oil rubbed bronze faucet", {"head": "faucet", "finishes": {"rubbed", "bronze"}}),
    ("stainless steel kitchen sink", {"head": "sink", "materials": {"stainless", "steel"}}),
    ("grey porcelain tile", {"head": "tile", "colors": {"gray"}, "materials": {"porcelain"}}),
    ("Daltile Folkstone Sandy Beach 12 in. x 12 in. x 8 mm Porcelain Brick-Joint Mosaic Tile",
     {"head": "tile", "measures": {"inches": {"12"}, "mm": {"8"}}, "materials": {"porcelain"}}),
    ("satin black spray paint", {"head": "paint", "colors": {"black"}, "finishes": {"satin"}}),
    ("Rust-Oleum Universal 12 oz. All Surface Satin Black Spray Paint and Primer in One",
     {"measures": {"ounces": {"12"}}, "colors": {"black"}}),
    ("semi-gloss interior paint", {"head": "paint", "finishes": {"semi-gloss"}}),
    ("cedar fence pickets", {"head": "picket", "materials": {"cedar"}}),
    ("batteries", {"head": "battery"}),
    ("lenses", {"head": "lens"}),
    ("glass", {"head": "glass"}),
    ("boxes", {"head": "box"}),
    ("brushes", {"head": "brush"}),
    ("Honeywell 20 in. x 25 in. x 1 in. Superior Allergen Pleated FPR 9 Air Filter (2-Pack)",
     {"head": "filter", "measures": {"inches": {"20", "25", "1"}}}),
    ("air filter 20x25x1", {"head": "filter", "models": set()}),
    ("GearWrench 3/8 in. Drive Metric Ball Hex Set (7-Piece)", {"head": "set", "types": {"set", "hex"}, "kit": True}),
    ("Progress Lighting Gather Collection 5-Light Brushed Nickel Vanity Fixture",
     {"head": "fixture", "finishes": {"brushed", "nickel"}, "models": set()}),
    ("Hampton Bay Edington Woven Back Patio Dining Chair with Custom Cushion (2-Pack)", {"head": "chair"}),
    ("Prime-Line Internal Door Handle Set, Keyed, Wood Pull, Gray", {"head": "set", "types": {"set", "handle"},
                                                                      "colors": {"gray"}}),
    ("locks for sliding doors", {"head": "lock", "served": {"sliding", "door"}}),
    ("cover for outdoor furniture", {"head": "cover"}),
    ("for outdoor use", {"head": "use"}),
    ("gas fire pit column", {"head": "column", "modifiers": ("gas", "fire", "pit")}),
    ("Armstrong Imperial Texture VCT Polar White Standard Excelon Commercial Vinyl Tile - 6 in. x 6 in. Sample",
     {"head": "tile", "materials": {"vinyl"}, "colors": {"white"}}),
    ("Leviton Decora 15 Amp Single-Pole Switch - White", {"head": "switch", "measures": {"amps": {"15"}},
                                                          "colors": {"white"}}),
    ("r22 refrigerant", {"head": "refrigerant", "models": {"r22"}}),
    ("1-Handle 3-Spray 100-Light", {"models": set()}),  # counts with a word are no model numbers
    ("", {"head": None}),
    ("3/4", {"head": None}),
]


@pytest.mark.parametrize("text, expected", CASES, ids=[c[0][:40] or "empty" for c in CASES])
def test_facts_of_handwritten_titles_and_queries(text, expected):
    f = facts(text)
    for name, want in expected.items():
        got = getattr(f, name)
        if name == "measures":
            got = {unit: set(values) for unit, values in got.items() if unit in want}
        elif isinstance(got, frozenset):
            got = set(got)
        if name == "served":
            assert want <= got, (name, got)
        else:
            assert got == want, (name, got)


def test_enough_handwritten_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("word, one", [("lenses", "lens"), ("lens", "lens"), ("batteries", "battery"),
                                       ("boxes", "box"), ("glass", "glass"), ("doors", "door"), ("bus", "bus")])
def test_singular(word, one):
    assert singular(word) == one


@pytest.mark.parametrize(
    "query, title, kind",
    [
        ("camera lens", "Canon EF 50mm f/1.8 STM Camera Lens", "head"),  # asks for a lens: a lens is one
        ("camera lens", "Canon EF 50mm f/1.8 STM Lens", "head_unconfirmed"),  # a lens; "camera" is not stated
        ("canon camera lens", "Canon EF 50mm Camera Lens", "head"),  # canon: the brand step's word, if a brand
        ("camera lens", "Canon EOS Rebel T7 DSLR Camera", "absent"),  # the camera is not the lens
        ("canon camera", "Canon EOS Rebel T7 DSLR Camera", "head"),
        ("canon camera", "Canon Lens Cap for EOS Camera", "served"),  # a cap for a camera is no camera
        ("canon camera", "Camera Lens Cap 58mm", "modifier"),
        ("bike helmet", "Giro Bike Helmet, Matte Black", "head"),
        ("bike helmet", "Schwinn Mountain Bike", "absent"),
        ("helmet for bike", "Giro Helmet", "head"),
        ("shower valve", "Delta Shower Faucet Trim Kit (Valve Not Included)", "not_included"),
        ("faucet trim kit", "Delta Shower Faucet Trim Kit (Valve Not Included)", "head"),
        ("faucet trim", "Delta Shower Faucet Trim Kit", "head"),  # the word before a bundle head is a type
        ("20 volt", "DEWALT 20-Volt Max Drill", "no_type"),  # the query names no product type
    ],
)
def test_type_relation(query, title, kind):
    assert type_relation(facts(query), facts(title))[0] == kind


# ---------------------------------------------------------------------------- catalog mode (issue 11 item 6)


def catalog_records():
    rows = [
        ("cam", "Canon EOS Rebel T7 DSLR Camera", "Electronics > Cameras", "Canon"),
        ("lens", "Canon EF 50mm f/1.8 STM Lens", "Electronics > Lenses", "Canon"),
        ("cap", "Canon Lens Cap E-58", "Electronics > Lens Caps", "Canon"),
        ("bike", "Schwinn Mountain Bike", "Sports > Bikes", "Schwinn"),
        ("helmet", "Giro Helmet, Matte Black", "Sports > Helmets", "Giro"),
    ]
    return {rid: Record("x", Product(title, category, brand), id=rid) for rid, title, category, brand in rows}


@pytest.mark.parametrize(
    "query, product, verdict",
    [
        ("camera lens", "lens", "match"),  # the head noun is lens: a lens is what is asked for
        ("camera lens", "cam", "mismatch"),
        ("canon camera", "cam", "match"),
        ("canon camera", "cap", "mismatch"),  # a product query does not want its lens cap
        ("canon camera lens cap", "cap", "match"),
        ("bike helmet", "helmet", "match"),
        ("bike helmet", "bike", "mismatch"),
        ("helmet for a bike", "helmet", "match"),
        ("bike for kids", "bike", "match"),
    ],
)
def test_query_head_noun_decides_the_category_step(query, product, verdict):
    records = catalog_records()
    engine = RulesEngine.from_records(records.values())
    assert engine.understand(query).category in {"cameras", "lenses", "lens caps", "bikes", "helmets"}
    record = Record(query, records[product].product)
    assert engine.judge(record).verdicts["category"] == verdict


def test_title_without_category_field_is_read_by_its_head_noun():
    records = list(catalog_records().values())
    engine = RulesEngine.from_records(records)  # most products have a category: catalog mode
    cap = Record("canon camera", Product("Lens Cap for Canon Cameras"))
    assert engine.judge(cap).verdicts["category"] == "mismatch"


# ---------------------------------------------------------------------------- title mode


def title_records():
    rows = [
        ("canon camera", "Canon EOS Rebel T7 DSLR Camera", 3, 3.0),
        ("canon camera", "Canon Lens Cap for EOS Camera", 1, 1.33),
        ("camera lens", "Canon EF 50mm f/1.8 STM Lens", 3, 3.0),
        ("camera lens", "Canon EOS M50 Camera", 1, 1.67),
        ("12 gauge wire", "Southwire 500 ft. 12-Gauge Solid Wire", 3, 3.0),
        ("12 gauge wire", "Southwire 250 ft. 14-Gauge Solid Wire", 2, 2.33),
        ("white vanity", "Glacier Bay 30 in. Vanity in White", 3, 2.67),
        ("white vanity", "Glacier Bay 30 in. Vanity in Espresso", 2, 2.0),
        ("canon lens", "Nikon AF 50mm Lens", 2, 2.0),
        ("shower valve", "Delta Shower Faucet Trim Kit (Valve Not Included)", 1, 1.67),
        ("paint", "Glidden Interior Paint", 3, 3.0),
    ]
    return [parse_record({"id": f"t{i}", "query": q, "product": {"title": t}, "label": y, "grade": g}, THREE)
            for i, (q, t, y, g) in enumerate(rows)]


def test_title_mode_steps():
    records = title_records()
    engine = RulesEngine.from_records(records, THREE)
    assert engine.lexicon.title_mode
    assert engine.lexicon.title_brands == {"canon"}  # 3+ titles start with it (southwire, glacier bay: 2)
    verdicts = [engine.judge(r).verdicts for r in records]
    assert verdicts[0] == {"category": "match", "brand": "match"}
    assert verdicts[1]["category"] == "mismatch"  # a cap for a camera
    assert verdicts[2]["category"] == "match" and verdicts[3]["category"] == "mismatch"
    assert verdicts[4]["attribute.gauge"] == "match" and verdicts[5]["attribute.gauge"] == "mismatch"
    assert verdicts[6]["attribute.color"] == "match" and verdicts[7]["attribute.color"] == "mismatch"
    assert verdicts[8]["brand"] == "unknown"  # nikon starts one title only: not a known brand
    assert verdicts[9]["category"] == "mismatch"
    assert [engine.judge(r).label for r in records] == [3, 1, 3, 1, 3, 2, 3, 2, 2, 1, 3]


def test_title_mode_off_and_on_by_config(tmp_path):
    config = tmp_path / "rules.yaml"
    config.write_text("title_facts: 'off'\n")
    engine = RulesEngine.from_records(title_records(), THREE, str(config))
    assert not engine.lexicon.title_mode
    config.write_text("title_facts: sometimes\n")
    with pytest.raises(ValueError, match="title_facts: must be auto, on or off"):
        load_config(config)
    config.write_text("gold_step_confidence: 1.5\n")
    with pytest.raises(ValueError, match=r"gold_step_confidence: must be a number in \[0, 1\]"):
        load_config(config)


def test_gold_steps_only_where_confident(tmp_path):
    records = title_records()
    engine = RulesEngine.from_records(records, THREE)
    confident = [engine.assess(r)[1] >= engine.gold_step_confidence for r in records]
    assert any(confident) and not all(confident)
    for record, ok in zip(records, confident):
        assert bool(engine.gold(record).steps) == ok  # below the threshold: no gold steps, label kept
        assert engine.gold(record).label == record.label
    guided = engine.guidance(records[confident.index(False)], 2)
    assert guided.startswith("check: category")
    for record, ok in zip(records, confident):  # SFT targets: whole where the rules imply the label
        lines = engine.teacher_reasoning(record).splitlines()
        assert lines[0] == f"<label>{record.label}</label>"
        assert any(line.startswith("category:") for line in lines) == (ok or engine.judge(record).label == record.label)
    labelled, _ = label_records([r for r in title_records()], engine)
    assert [r.steps is not None for r in labelled if engine.judge(r).label == r.label] == \
        [ok for r, ok in zip(records, confident) if engine.judge(r).label == r.label]
    config = tmp_path / "rules.yaml"
    config.write_text("gold_step_confidence: 0\n")
    everything = RulesEngine.from_records(records, THREE, str(config))
    assert all(everything.gold(r).steps for r in records)


def test_catalog_verdicts_are_fully_confident():
    records = list(catalog_records().values())
    engine = RulesEngine.from_records(records)
    assert all(engine.assess(r)[1] == 1.0 for r in records)


def test_agreement_cli(tmp_path):
    data = tmp_path / "train.jsonl"
    write_jsonl(title_records(), data)
    result = CliRunner().invoke(app, ["data", "agreement", str(data), "--scheme", "three_level",
                                      "--out", str(tmp_path / "a.json")])
    assert result.exit_code == 0, result.output
    assert "3 exact" in result.stdout and "confidence >= 0.6" in result.stdout
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["n"] == 11 and report["per_class"]["3"]["n"] == 5
    assert 0 < report["above_threshold"]["share"] < 1
    result = CliRunner().invoke(app, ["data", "agreement", str(data), "--out", str(data)])
    assert result.exit_code == 2 and "is also FILE" in result.stderr
