# The two commands a newcomer needs: `make demo` and `make test`. Both set up first.
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
CACHE ?= $(or $(INGERO_CACHE_DIR),$(HOME)/.cache/ingero)
export PATH := $(CACHE)/bpf-linker/bin:$(VENV)/bin:$(PATH)
DEMO_DB ?= $(CURDIR)/ingero-demo.db

.PHONY: setup demo test lint rust-test py-test wheel bench clean

setup:
	@bash scripts/setup.sh

# A newcomer's first minute: is this machine ready to trace (`ingero check`), then the
# six scenarios traced for real over the bundled simulated CUDA library (`ingero demo`).
demo: setup
	@bash scripts/demo.sh "$(DEMO_DB)"

test: setup lint rust-test py-test

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	ruff check python tests benches
	ruff format --check python tests benches
	mypy
	python -m mypy.stubtest ingero._core --allowlist tests/stubtest-allowlist.txt

rust-test:
	cargo test --workspace

py-test:
	pytest

# Speed goals are measured here, never by timed tests. Needs root and bpftrace.
bench: setup
	@command -v bpftrace >/dev/null || apt-get install -y -qq --no-install-recommends bpftrace
	python benches/uprobe_overhead.py --json benches/results/uprobe_overhead.json
	@command -v stress-ng >/dev/null || apt-get install -y -qq --no-install-recommends stress-ng
	python benches/host_overhead.py --json benches/results/host_overhead.json

wheel: setup
	SIMCUDA_LINKS=0 bash tests/simcuda/build.sh python/ingero/demo/simcuda
	maturin build --release --out dist

clean:
	cargo clean
	rm -rf dist tests/simcuda/build python/ingero/demo/simcuda
