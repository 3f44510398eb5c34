# snnconv: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo serve test test-fast lint bench bench-peers load clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned, so nothing pulls a multi-gigabyte CUDA build on a CPU machine
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/snnconv demo --out out/demo

# The demo page on http://127.0.0.1:8000/ (embedded worker, anonymous demo scope), with the
# example models built first (once: about a minute).
serve: $(STAMP)
	$(BIN)/snnconv examples
	SNNCONV_AUTH=demo $(BIN)/snnconv serve

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration"

lint: $(STAMP)
	$(BIN)/ruff check .

# The peers of benchmark 5 and what they import at start-up that .venv lacks, installed with
# --no-deps into .bench-deps (benchmarks/bench_peers.py appends it to sys.path), so they can
# never replace the project's torch; a pinned peer that fails to import is reported as such.
BENCH_DEPS := .bench-deps
BENCH_STAMP := $(BENCH_DEPS)/.installed
PEERS := spikingjelly==2.0.0 sinabs==3.1.3 'loguru>=0.7,<1' pbr requests urllib3 \
	charset_normalizer 'nir<=1.0.4' nirtorch h5py

$(BENCH_STAMP): $(STAMP) Makefile
	$(BIN)/pip install --quiet --no-deps --upgrade --target $(BENCH_DEPS) $(PEERS)
	touch $(BENCH_STAMP)

bench-peers: $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_all.py

# 50 users polling while 20 upload and submit jobs, for 60 s, against a real `snnconv serve`;
# the table goes into docs/reliability.md (not a test: it measures, it does not assert)
load: $(STAMP)
	$(BIN)/python -m benchmarks.load

clean:
	rm -rf $(VENV) out .pytest_cache .bench-deps
