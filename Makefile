# snn-deploy: set-up, demo and tests. Bring your own Python 3.10 with `make PYTHON=/path/to/python3.10`.
PYTHON ?= python3.10
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= demo_out
SEED ?= 0

.PHONY: setup demo test bench clean

# The venv is rebuilt when pyproject.toml changes; the stamp is the installed console script.
$(BIN)/snn-deploy: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 10), "snn-deploy needs Python 3.10 (lava-nc 0.10): got " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

setup: $(BIN)/snn-deploy

# The main job on the embedded data set (scikit-learn digits): train -> NIR -> Loihi 2 fixed point -> Lava,
# then a PGD sweep verified on the emulator, with energy per sample and the validity checks.
demo: setup
	mkdir -p $(OUT)
	$(BIN)/snn-deploy train --seed $(SEED) --out $(OUT)/digits.pt
	$(BIN)/snn-deploy export $(OUT)/digits.pt --out $(OUT)/digits.nir
	$(BIN)/snn-deploy deploy $(OUT)/digits.nir --profile loihi2 --dataset digits --out $(OUT)/digits.deploy.h5
	$(BIN)/snn-deploy evaluate $(OUT)/digits.nir --backend float --seed $(SEED) --json $(OUT)/float.json
	$(BIN)/snn-deploy evaluate $(OUT)/digits.deploy.h5 --backend emulator --seed $(SEED) --json $(OUT)/emulator.json
	$(BIN)/snn-deploy evaluate $(OUT)/digits.deploy.h5 --backend lava-sim --seed $(SEED) --json $(OUT)/lava-sim.json
	$(BIN)/snn-deploy compare $(OUT)/float.json $(OUT)/emulator.json $(OUT)/lava-sim.json
	$(BIN)/snn-deploy attack $(OUT)/digits.deploy.h5 --backend emulator --attack pgd --eps 0,0.05,0.1,0.2,0.5,1.0 --seed $(SEED) --report-dir $(OUT)/attack

test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -ra

bench: setup
	$(BIN)/python benchmarks/lava_sim.py --per-sample-probe 5

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info
