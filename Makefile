# The two commands a fresh machine needs: `make demo` (the main job) and `make test`.
#
# Everything runs in a project virtual environment, .venv, so a stock Debian/Ubuntu
# Python (which refuses `pip install` into the system: "externally managed") works.
# Where python3 already is a virtual environment (an activated venv, conda), it is used
# as it is; a pyenv interpreter gets the project .venv like any other. PYTHON=... overrides.
SYSTEM_PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
IN_VENV := $(shell $(SYSTEM_PYTHON) -c 'import sys; print(int(sys.prefix != sys.base_prefix))' 2>/dev/null)
ifeq ($(IN_VENV),1)
PYTHON ?= $(SYSTEM_PYTHON)
else
PYTHON ?= .venv/bin/python
endif
FMNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
# Tests run in TEST_WORKERS pytest-xdist processes, a whole file per worker (so a file's
# module fixtures, e.g. the recipe smoke runs, run once). Much of a test is single-threaded
# tracing, so two workers keep two cores busy; more cores get up to 4 workers (each worker
# with its recipe subprocesses can take 5 GB). TEST_WORKERS=0 runs in this one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
PYTEST := $(PYTHON) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

.PHONY: install venv data test test-fast demo table

# python3 -m venv needs Debian's python3-venv (ensurepip); install it where apt exists.
.venv/bin/python:
	$(SYSTEM_PYTHON) -m venv .venv || { command -v apt-get >/dev/null && \
	  ($(SUDO) apt-get install -y -qq python3-venv || \
	   ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv)) && \
	  rm -rf .venv && $(SYSTEM_PYTHON) -m venv .venv; }

venv: $(if $(filter .venv/bin/python,$(PYTHON)),.venv/bin/python)

install: venv
	$(PYTHON) -m pip install -q -e ".[cpu,hub,test,study]"

# Debian's offline Fashion-MNIST; where apt is unavailable kdzoo falls back to keras.datasets.
data:
	@test -f $(FMNIST) || ($(SUDO) apt-get install -y -qq dataset-fashion-mnist || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)) || \
	  echo "note: dataset-fashion-mnist not installed; kdzoo will try keras.datasets"

test: install data
	$(PYTEST) tests

# The edit loop (about 1 min on 2 cores): everything but the tests marked slow (demo,
# kill-and-resume, multi-worker, recipe subprocesses, every test over about 3 s).
test-fast: install data
	$(PYTEST) -m "not slow" tests

demo: install data
	$(PYTHON) recipes/fashion_mnist.py --workdir runs/fashion_mnist

table:
	$(PYTHON) -m kdzoo.zoo.cards_table --write README.md
