# Two commands do everything from a fresh clone: `make run` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHELL := /bin/bash

.PHONY: setup run test lint format data clean

setup: $(STAMP) data

# torch==2.13.0 first: it is the CPU build; any other spec would pull CUDA packages.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,onnx,openvino,ray]'
	touch $(STAMP)

# Real data for the main job and the real-data tests: Debian's Fashion-MNIST package.
data:
	@if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] && [ -z "$$RESNETLAB_DATA" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
		else \
			echo "note: install Debian's dataset-fashion-mnist (or set RESNETLAB_DATA) for the real-data jobs"; \
		fi; \
	fi

# The main job: resnet20 on Fashion-MNIST (fast recipe, 2 epochs), ending in its test accuracy.
run: setup
	$(VENV)/bin/resnetlab train --model resnet20 --data fashion-mnist --epochs 2 --overwrite

test: setup
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
