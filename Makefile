# Developer shortcuts. The README's two commands (scripts/example.sh, scripts/test.sh) need no make.
.PHONY: venv example test test-fast lint format bench clean

venv:
	bash scripts/setup_venv.sh

example:
	bash scripts/example.sh

test:
	bash scripts/test.sh

test-fast: venv
	.venv/bin/python -m pytest -m "not slow" -x

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: venv
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

bench: venv
	.venv/bin/python benchmarks/bench_sampler.py
	.venv/bin/python benchmarks/bench_ingest.py
	.venv/bin/python benchmarks/bench_loader.py

clean:
	rm -rf example build dist *.egg-info .pytest_cache .ruff_cache
