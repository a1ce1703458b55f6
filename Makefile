# Every target creates .venv on first use; CPU torch is pinned for these installs.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: venv demo test test-slow bench lint synth train-default evaluate clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,eval]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/reface demo $(DEMO_OUT)

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

bench: $(STAMP)
	$(PY) scripts/bench.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts

# The synthetic cohort (50 identities x 2 sessions, ~1.3 GB) and its contact sheet.
synth: $(STAMP)
	$(VENV)/bin/reface synth data/synth50 --n 50 --seed 0 --sessions 2 --jobs 2 \
		--contact-sheet docs/img/synth_contact_sheet.png

# Retrain the shipped default GAN on CPU (~30 min on 2 cores); see src/reface/resources/MODEL_CARD.md.
train-default: $(STAMP)
	scripts/train_default.sh

# The paper-style privacy/utility comparison: 50 synthetic identities x every method (quickshear included)
# plus the real-head panel -> eval_out/report.html. Atropos (~1 min a scan on one core) runs on the first
# EVAL_YARDSTICK synthetic subjects and the real heads; deepbet + GMM on all. Resumes where it stopped;
# ~3.5 h with EVAL_JOBS=2 on 2 cores. Longer than a session? `scripts/eval_state.py pack eval_out docs/eval50`
# keeps what is needed to resume elsewhere (`... unpack docs/eval50 eval_out`, then `make evaluate` again).
EVAL_SUBJECTS ?= 50
EVAL_JOBS ?= 1
EVAL_YARDSTICK ?= 8
EVAL_METHODS ?= none,remodel,shear,quickshear,deface,template,blur
evaluate: $(STAMP)
	test -f data/synth50/participants.tsv || $(MAKE) synth
	OMP_NUM_THREADS=1 $(VENV)/bin/reface evaluate --data data/synth50 --out eval_out --subjects $(EVAL_SUBJECTS) \
		--jobs $(EVAL_JOBS) --extractors deepbet --segmenters gmm,atropos --yardstick-subjects $(EVAL_YARDSTICK) \
		--methods $(EVAL_METHODS)

realworld: $(STAMP)
	$(PY) scripts/realworld.py --out realworld_out --markdown docs/realworld.md

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
