# Two commands for a fresh clone: `make run` starts the server, `make test` runs the tests.
# Each creates .venv and installs the pinned requirements first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench install clean-files

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/python -m apsara.devserver

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/conversations.py
