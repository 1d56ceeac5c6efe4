# slimasr — the two commands: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.slimasr-setup-done

.PHONY: setup demo test test-fast bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup.sh
	PYTHON=$(PYTHON) bash tools/setup.sh
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/slimasr demo

test: setup
	$(PY) -m pytest -q tests

# the unit tier: everything not marked @pytest.mark.slow (training, export, serving, external toolkits)
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

bench: setup
	$(PY) benchmarks/run_all.py

clean-venv:
	rm -rf $(VENV)
