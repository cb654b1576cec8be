# Quickstart targets; each creates the virtual environment from requirements.txt first.
#   make search   the offline default search (Fashion-MNIST, 6-12 min on 2 CPU cores)
#   make test     the test suite
#   make bench    amdarts against PyTorch DARTS, same super-net (bench/compare.py)
#   make gpu-check  on an NVIDIA GPU machine: the GPU extra, the S1 bench, one cifar_s1 epoch
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= workdirs/fashion_mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: search test toy bench gpu-check data

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

# Two pytest workers, one per core of the CI machine; a test module stays on one
# worker (--dist loadscope), so its module-scoped fixtures compile once. Each worker
# holds its own compiles: more workers need more memory than cores alone suggest.
TEST_WORKERS ?= 2
test: $(VENV)/.installed data
	$(BIN)/python -m pytest -q tests -n $(TEST_WORKERS) --dist loadscope

toy: $(VENV)/.installed
	$(BIN)/python experiments/toy.py --outdir=workdirs/toy

# PyTorch for the bench's other column, in a virtual environment of its own.
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed: requirements-bench.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q -r requirements-bench.txt \
	  --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
	touch $@

BENCH_ARGS ?= --space=s3 --cells=3 --nodes=2 --c=8 --batch=16
bench: $(VENV)/.installed $(BENCH_VENV)/.installed
	$(BIN)/python bench/compare.py --torch_python=$(BENCH_VENV)/bin/python $(BENCH_ARGS)

gpu-check:
	bash bench/gpu_check.sh
