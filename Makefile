# The few commands people type. `make setup` is safe to re-run.
.PHONY: setup train test test-fast test-extended lint bench
setup:
	bash scripts/setup.sh
train: setup
	.venv/bin/hfx train
test: setup
	.venv/bin/python -m pytest -q
test-fast:
	.venv/bin/python -m pytest -q -m "not slow and not extended and not bench"
test-extended:
	.venv/bin/python -m pytest -q -m extended
lint:
	.venv/bin/ruff check hfx tests scripts
bench:
	.venv/bin/python scripts/benchmark.py
