# Common commands. `make demo` and `make test` work on a fresh machine with Rust and Python 3.10+.
VENV ?= .venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help install build-dev demo format lint lint-rust lint-python test test-rust test-python bench fuzz clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml Cargo.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "maturin>=1.9.4,<2"
	$(VENV)/bin/maturin develop --release --quiet --extras dev,mlx
	touch $@

install: $(VENV)/.installed ## create .venv with the package (editable), MLX, mlx-lm and the dev tools

build-dev: install ## rebuild the native module after changing Rust code
	$(VENV)/bin/maturin develop --release --quiet --skip-install

demo: build-dev ## build small real adapters with mlx-lm and inspect them
	$(VENV)/bin/adapterscan demo

format: install ## format Rust and Python code
	cargo fmt
	$(VENV)/bin/ruff format python tests bench
	$(VENV)/bin/ruff check --fix python tests bench

lint-rust: install ## cargo fmt --check and clippy (pedantic, warnings are errors)
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings

lint-python: install ## ruff, mypy --strict, and the .pyi checked against the binary
	$(VENV)/bin/ruff check python tests bench
	$(VENV)/bin/ruff format --check python tests bench
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest adapterscan._core

lint: lint-rust lint-python ## all linters

test-rust: ## Rust unit and property tests (no Python needed)
	cargo test

test-python: build-dev ## pytest (MLX tests run when mlx and mlx-lm are installed)
	$(PY) -m pytest

test: lint test-rust test-python ## everything CI runs

bench: build-dev ## benchmarks against the baselines, interleaved, medians (writes bench/results/)
	$(PY) -m pip install --quiet "orjson>=3.9" "pysimdjson>=6" "matplotlib>=3.8"
	$(PY) bench/run.py

fuzz: ## run the cargo-fuzz targets (header, index, config) for FUZZ_SECONDS each (default 300)
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
	for t in header index config; do \
		mkdir -p fuzz/corpus/$$t && cp -n fuzz/seeds/$$t/* fuzz/corpus/$$t/ ; \
		(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $$t corpus/$$t -- -max_total_time=$${FUZZ_SECONDS:-300}) || exit 1 ; \
	done

clean: ## remove build products and the virtualenv
	cargo clean
	rm -rf $(VENV) python/adapterscan/*.so .pytest_cache .ruff_cache .mypy_cache
