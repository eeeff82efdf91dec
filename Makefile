# Two entry points for a newcomer (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test lint demo

$(BIN)/talkinghead: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: $(BIN)/talkinghead

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

lint: setup
	$(BIN)/ruff check src tests
