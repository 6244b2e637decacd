# Two entry points (see README): `make demo` and `make test`. Each sets up
# .venv from scratch when needed.
VENV ?= .venv
PYTHON ?= python3
# The build machines' CPU torch; a machine with its own torch: make CONSTRAINTS= setup
CONSTRAINTS ?= constraints/cpu.txt

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[test]"
	touch $@

demo: setup
	PEFTBENCH=$(VENV)/bin/peftbench bash examples/demo.sh

test: setup
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) results/demo
