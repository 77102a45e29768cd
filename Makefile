# co2scan: the two commands are `make demo` and `make test`.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
CYTHON := $(wildcard $(foreach d,controller drivers drivers/* sim_hw,$(d)/*.pyx $(d)/*.pxd))
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck bench fuzz soak clean

setup: $(STAMP)

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip

# Editable install; rebuilt whenever a .pyx, .pxd, setup.py or pyproject.toml changes.
$(STAMP): $(VPY) pyproject.toml setup.py $(CYTHON)
	$(VPY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/co2scan demo --out out/demo

test: setup
	$(VPY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

typecheck: setup
	$(VPY) -m mypy drivers sim_hw controller bench tests

bench: setup
	$(VPY) -m bench $(BENCH)

fuzz: setup
	CO2SCAN_FUZZ=long $(VPY) -m pytest tests -k fuzz -p no:cacheprovider

soak: setup
	CO2SCAN_SOAK=long $(VPY) -m pytest tests -k soak -s

clean:
	rm -rf build $(VENV) out
	find controller drivers sim_hw \( -name "_*.c" -o -name "_*.so" \) -delete
