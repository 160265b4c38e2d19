# mixlab: the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
ARCH := $(shell uname -m)
# torch and torchvision must come as a matching pair; these are the ones this project is tested with.
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif
FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEMO_ARGS ?=

.PHONY: demo test docs setup-lab setup-dev bench fashion-mnist clean

$(VENV)/.torch:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH_PINS)
	touch $@

$(VENV)/.lab: $(VENV)/.torch pyproject.toml lab/pyproject.toml
	$(PIP) install -e . -e ./lab $(TORCH_PINS)
	touch $@

$(VENV)/.dev: $(VENV)/.torch pyproject.toml lab/pyproject.toml
	$(PIP) install -e ".[dev,puzzlemix,fastai,keras,keras-all,lightning,hf,docs]" -e "./lab[bench]" $(TORCH_PINS)
	touch $@

setup-lab: $(VENV)/.lab
setup-dev: $(VENV)/.dev

# Debian's Fashion-MNIST package, where apt is usable; otherwise the demo falls back to digits.
fashion-mnist:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then echo "Fashion-MNIST present in $(FMNIST_DIR)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	  || echo "mixlab: could not install dataset-fashion-mnist with apt; the demo will use digits"; \
	else echo "mixlab: apt-get not usable here (not root or not Debian); the demo will use digits"; fi

demo: setup-lab fashion-mnist
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then ds=fashion-mnist; \
	else echo "mixlab: Fashion-MNIST not found in $(FMNIST_DIR); running the demo on scikit-learn's digits instead"; ds=digits; fi; \
	$(VENV)/bin/mixlab compare --dataset $$ds --preset demo --out runs/demo --overwrite $(DEMO_ARGS)

test: setup-dev fashion-mnist
	KERAS_BACKEND=torch $(PY) -m pytest

docs: setup-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

bench: setup-dev
	$(VENV)/bin/mixlab bench

clean:
	rm -rf $(VENV) runs build site *.egg-info src/*.egg-info
