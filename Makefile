# CropFormer platform. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup train smoke eval pretrain pretrain-check paper test test-slow test-all lint format typecheck bench notebooks clean clean-logs

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,ref,slurm,viz,deploy]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the package (editable, dev+ref+slurm extras, pinned); no-op when done

train: setup ## the main job: CropFormer vs Mask2Former fine-tuned on the embedded benchmark (CPU, or a GPU); ARGS="seed=2 ..." adds overrides
	$(BIN)/python -m cropformer.cli.main_job $(ARGS)

smoke: setup ## a quick check that everything runs (train.py debug=smoke: 2 steps + 4 validation scenes, < 1 min on 2 cores; not a result)
	$(BIN)/python train.py debug=smoke $(ARGS)

eval: setup ## evaluate make train's newest CropFormer and Mask2Former checkpoints on the embedded validation scenes (one JSON line each)
	$(BIN)/python eval.py ckpt=best train_task=main_job/cropformer $(ARGS)
	$(BIN)/python eval.py ckpt=best train_task=main_job/mask2former data/crop=none $(ARGS)

pretrain: setup ## reproduce the shipped stage-1 weights benchmarks/embedded/mask2former_tiny_pretrain.pt (~20 min on 2 cores)
	$(BIN)/python train.py experiment=embedded_pretrain hydra.run.dir=logs/embedded_pretrain/make_pretrain $(ARGS)
	$(BIN)/python scripts/export_pretrained.py logs/embedded_pretrain/make_pretrain --out benchmarks/embedded/mask2former_tiny_pretrain.pt

pretrain-check: setup ## retrain the shipped stage-1 weights from the clean commit PROVENANCE.json names and compare (bit-identical, or AP^e within 0.3; ~25 min)
	$(BIN)/python scripts/check_pretrain.py $(ARGS)

paper: setup ## the paper's tables on the embedded benchmark -> results/ (hours on 2 cores, resumable); ARGS="--tables table5 --list"
	$(BIN)/python scripts/paper.py $(ARGS)

test: setup ## run the default test selection (what CI runs)
	$(BIN)/pytest $(ARGS)

test-slow: setup ## run only the slow tests
	$(BIN)/pytest -m slow $(ARGS)

test-all: setup ## run every test that this machine can run (slow, ddp, parity, notebooks included; gpu skip without CUDA)
	$(BIN)/pytest -m "not dataset" $(ARGS)

lint: setup ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## ruff format + autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: setup ## mypy on src/cropformer
	$(BIN)/mypy

bench: setup ## benchmarks vs the official recipe and peers -> benchmarks/results.{md,json}
	$(BIN)/python scripts/benchmarks/run_all.py $(ARGS)

notebooks: setup ## execute notebooks/*.ipynb headless into notebooks/executed/ (outputs + PNG figures); ARGS="--param NAME=VALUE"
	$(BIN)/python scripts/run_notebooks.py --png $(ARGS)

clean: ## remove caches and build artefacts (keeps .venv, logs and data)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +

clean-logs: ## remove run directories (logs/)
	rm -rf logs
