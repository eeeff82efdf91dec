# Entry points for a newcomer (see README): `make demo`, `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= talk.mp4

.PHONY: setup test lint run demo demo-model dh-demo difftalk-small

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

# Retrain the packaged demo model from nothing with its recipe's step counts (about half an hour
# on one H200 with DEMO_FLAGS=--loader-workers 3; hours on a CPU, and it resumes when re-run).
# Data, checkpoints, done/ markers, times.json and eval.json go to runs/demo_model (ignored); the
# model replaces src/talkinghead/assets/demo/model. See scripts/train_demo_model.py, MODEL_CARD.md.
demo-model: setup
	$(BIN)/python scripts/train_demo_model.py $(DEMO_FLAGS)

# A small DiffTalk trained on synthetic faces (CPU, about 3 h on one core; resumable: run it again
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

# The small Diffused Heads shipped as "diffused-heads-demo" (64 px, on the DAWN demo's synthetic set):
# 2,807 steps predicting eps at batch 32 (5 min on one H200; hours on a CPU), then a 2,598-step
# schedule predicting v at batch 8 from its EMA weights (about 90 min on one CPU core), exported in
# float16 into the package. The shipped model is that run's EMA at step 1,750 (stopped for time;
# benchmarks/RESULTS.md run 23). Resumable: run it again after a stop. Scores: talkinghead
# eval-synth $(DH_RUN)/data --weights diffused-heads-demo --sampler ancestral --steps 20.
DH_RUN ?= runs/dh-demo
dh-demo: setup
	$(BIN)/python scripts/train_demo_model.py --work $(DH_RUN) --only data
	$(BIN)/talkinghead train diffused-heads --data $(DH_RUN)/data --out $(DH_RUN)/eps --resume \
		--preset golden --steps 2807 --batch-size 32 --lr 2e-4 --warmup-steps 200 --workers 4
	$(BIN)/talkinghead train diffused-heads --data $(DH_RUN)/data --out $(DH_RUN)/v --resume \
		--preset golden --prediction v --init-from $(DH_RUN)/eps --steps 2598 --batch-size 8 \
		--lr 1e-4 --warmup-steps 100 --ckpt-every 250 --log-every 25 \
		--export src/talkinghead/assets/demo/diffused_heads --half
