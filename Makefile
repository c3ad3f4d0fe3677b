# The two commands a fresh machine needs: `make demo` (the main job) and `make test`.
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FMNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

.PHONY: install data test demo table

install:
	$(PYTHON) -m pip install -q -e ".[cpu,test]"

# Debian's offline Fashion-MNIST; where apt is unavailable kdzoo falls back to keras.datasets.
data:
	@test -f $(FMNIST) || ($(SUDO) apt-get install -y -qq dataset-fashion-mnist || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)) || \
	  echo "note: dataset-fashion-mnist not installed; kdzoo will try keras.datasets"

test: install data
	$(PYTHON) -m pytest -q --durations=15 tests

demo: install data
	$(PYTHON) recipes/fashion_mnist.py --workdir runs/fashion_mnist

table:
	$(PYTHON) -m kdzoo.cards_table --write README.md
