# Quickstart targets; each creates the virtual environment from requirements.txt first.
#   make search   the offline default search (Fashion-MNIST, ~10 min on 2 CPU cores)
#   make test     the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= workdirs/fashion_mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: search test toy bench data

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

# Offline real data from Debian: Fashion-MNIST IDX files and English texts (fortunes)
# for the recurrent-cell demo.
data:
	@[ -d $(FASHION_MNIST) ] && [ -d /usr/share/games/fortunes ] || { \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends \
	  dataset-fashion-mnist fortunes; }

search: $(VENV)/.installed data
	$(BIN)/python experiments/search.py --config=configs/fashion_mnist.py --workdir=$(WORKDIR)

test: $(VENV)/.installed data
	$(BIN)/python -m pytest -q tests

toy: $(VENV)/.installed
	$(BIN)/python experiments/toy.py --outdir=workdirs/toy

bench: $(VENV)/.installed
	$(BIN)/python bench/search_step.py
