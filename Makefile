# ppdet_dac: everything a fresh machine with Python 3.11 needs is installed by these targets.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast op onnx clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.py $(wildcard custom_ops/ms_deform_attn/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip==25.3"
	$(PIP) install -q -r requirements.txt -r requirements-dev.txt
	$(PIP) install -q --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(PY) tools/demo.py

test: setup onnx
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

onnx: setup
	$(PIP) install -q -r requirements-onnx.txt

clean:
	rm -rf $(VENV) build *.egg-info output
