# The README's two commands: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/datafactory: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

demo: $(BIN)/datafactory
	$(BIN)/datafactory demo

test: $(BIN)/datafactory
	$(BIN)/python -m pytest

bench: $(BIN)/datafactory
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .factory
