# Entry points for a newcomer (see README): `make demo`, `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= talk.mp4

.PHONY: setup test lint run demo difftalk-small

$(BIN)/talkinghead: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: $(BIN)/talkinghead

# tests/serve needs the server's extras and its test tools (a minute to install, so not in dev)
$(VENV)/.serve-extras: $(BIN)/talkinghead pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,serve,postgres,ray,serve-test]'
	touch $@

test: setup $(VENV)/.serve-extras
	$(BIN)/ruff check src tests benchmarks scripts
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

# The packaged demo model speaks the packaged clip -> demo.mp4 (CPU, no downloads).
demo: setup
	$(BIN)/talkinghead demo -o demo.mp4

# A small DiffTalk trained on synthetic faces (CPU, about an hour on 2 cores; resumable: run it again
# after a stop). Writes runs/difftalk_small/{model,demo,eval.json}. FACE3D: the 3DDFA_V2 assets.
difftalk-small: setup
	$(BIN)/python scripts/train_difftalk_small.py $(if $(FACE3D),--face3d "$(FACE3D)")

lint: setup
	$(BIN)/ruff check src tests

# Portrait + speech -> $(OUT). Without WEIGHTS, the official weights are downloaded once into the cache.
run: setup
	@test -n "$(IMAGE)" -a -n "$(AUDIO)" || { echo "usage: make run IMAGE=face.jpg AUDIO=speech.wav [WEIGHTS=DIR] [OUT=talk.mp4]"; exit 2; }
	@[ -n "$(WEIGHTS)" ] || $(BIN)/talkinghead download --resolution 128
	$(BIN)/talkinghead generate --image "$(IMAGE)" --audio "$(AUDIO)" -o "$(OUT)" $(if $(WEIGHTS),--weights "$(WEIGHTS)")
