# One place for the commands a newcomer needs: `make repro`, `make test`.
PY_SYS ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp

.PHONY: setup repro test lint bench tiny-base clean-venv

setup: $(STAMP)

# torch first (the machine's pinned CUDA build also runs on CPU), then sam2 without its CUDA
# extension and without build isolation (else pip fetches a second torch into the build env).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-build-isolation sam2==1.1.0
	$(PY) -m pip install -q --no-build-isolation -e '.[dev,bench]'
	touch $(STAMP)

# Stages run `python ...`: put the project's environment first on PATH.
repro: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc repro

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest

bench: setup
	$(PY) -m bench.data
	$(PY) -m bench.train

# Regenerates the shipped tiny base weights: the pretrain pipeline (pretrain/dvc.yaml, its
# recipe in pretrain/params.yaml; pretraining from scratch on the synthetic source domain).
# Its two stages are frozen (the default pipeline treats the base as a pinned input): thaw
# them for this one run, and freeze them again whatever the run's outcome.
tiny-base: setup
	export PATH="$(CURDIR)/$(VENV)/bin:$$PATH" && \
	dvc unfreeze pretrain/dvc.yaml:pretrain pretrain/dvc.yaml:joint && \
	{ dvc repro -f pretrain/dvc.yaml; status=$$?; \
	  dvc freeze pretrain/dvc.yaml:pretrain pretrain/dvc.yaml:joint; exit $$status; }

clean-venv:
	rm -rf $(VENV)

# CI's reproducibility proof: the default pipeline in a clean clone of HEAD (no data, no cache),
# then data outputs hash-exact and each metric within its tolerance of the committed metrics
# (bench/tolerances.json: the spread `python -m bench.numerics` measured across numeric
# settings, docs/reproducibility.md), and evaluate's per-object J within 0.01 of
# SAM2VideoPredictor's (built as SAM2's vos_inference.py builds it) for the base and the
# fine-tuned model on the first 16 validation videos.
.PHONY: repro-check
repro-check: setup
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	git clone -q "$(CURDIR)" "$$tmp/clone" && cd "$$tmp/clone" && \
	export PATH="$(CURDIR)/$(VENV)/bin:$$PATH" PYTHONPATH="$$tmp/clone/src" && \
	dvc repro && python -m sam2_video.cli repro-check --tolerance 0 \
		--tolerances bench/tolerances.json && \
	python -m sam2_video.cli parity --checkpoint data/raw/base_checkpoint.pt \
		--checkpoint data/model/sam2_finetuned.pt --tolerance 0.01 --max-clips 16
