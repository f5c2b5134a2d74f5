# Mythos developer entry points. `make` alone lists them.
# Every target that compiles first runs `deps`, which installs what is missing
# (LLVM/MLIR 22 and friends from Debian) and stops with a clear message if Rust is missing.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# apt-get needs root; prefix it with sudo only when we are not root already.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
MYTHOS := ./target/release/mythos

.PHONY: help deps build run test fmt clippy fuzz clean

help: ## List the targets
	@echo "Mythos: make <target>"
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  %-8s %s\n", $$1, $$2 }'

deps: ## Install missing system packages (LLVM/MLIR 22, zstd, z3, libxml2); check for cargo
	@SUDO="$(SUDO)" tools/ensure-deps.sh

build: deps ## Build the release binary (target/release/mythos)
	cargo build --release --locked

run: build ## Check every preset, show and cost @openmythos-1b, generate tokens from a tiny model on the CPU, score it on a task, end with a short training sweep (quality beside cost)
	$(MYTHOS) check models/*.mythos
	$(MYTHOS) show @openmythos-1b
	$(MYTHOS) inspect @openmythos-1b
	@echo "== generating 32 tokens from @tiny-mla with random weights (seed 0), greedy, on the CPU"
	$(MYTHOS) generate @tiny-mla --seed 0 --prompt-ids 1,2,3,4 --max-new-tokens 32 --temperature 0
	@echo "== the same model scored on a synthetic task (p-hop induction) at 1 to 8 loops; untrained, its loss is near ln(256) = 5.55"
	$(MYTHOS) eval @tiny-mla --seed 0 --data task:phop,len=32,hops=4,rows=64 --loops 1,2,4,8
	@echo "== a short training sweep: a tiny looped adder at 1, 2 and 4 loops, each trained (800 steps) and scored at 1 to 8 test-time loops; quality beside cost (about a minute; run again: it resumes or reuses the results)"
	$(MYTHOS) sweep examples/sweeps/train-quick.toml --out target/train-quick

# Tests use cargo's default job count, whatever CARGO_BUILD_JOBS says; fmt and clippy
# run when those components are installed (rustup component add rustfmt clippy).
# The PTX tests assemble the CUDA target's output with ptxas: tools/ptxas.sh finds one or
# installs it (PyPI nvidia-cuda-nvcc, cached); where that is impossible (no network),
# MYTHOS_SKIP_PTXAS=1 make test skips that check instead of failing.
test: deps ## Run all tests, then rustfmt --check and clippy -D warnings when available
	ptxas="$$(tools/ptxas.sh)" || [ "$${MYTHOS_SKIP_PTXAS:-}" = 1 ]; \
	MYTHOS_PTXAS="$${ptxas:-}" env -u CARGO_BUILD_JOBS cargo test --workspace --locked
	if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all -- --check; \
	else echo "skipping fmt check: rustfmt not installed (rustup component add rustfmt)"; fi
	if cargo clippy --version >/dev/null 2>&1; then cargo clippy --workspace --all-targets --locked -- -D warnings; \
	else echo "skipping clippy: not installed (rustup component add clippy)"; fi

fmt: ## Format all Rust code in place
	cargo fmt --all

clippy: deps ## Lint with clippy, warnings are errors
	cargo clippy --workspace --all-targets --locked -- -D warnings

fuzz: deps ## Fuzz the parser/checker/formatter for 60 s (needs cargo-fuzz and nightly)
	if command -v cargo-fuzz >/dev/null 2>&1; then cargo +nightly fuzz run parse_check -- -max_total_time=60; \
	else echo "cargo-fuzz is not installed. Install it with: cargo install cargo-fuzz"; \
	     echo "It also needs a nightly toolchain: rustup toolchain install nightly"; \
	     echo "Then: make fuzz (see fuzz/README.md)"; exit 1; fi

clean: ## Remove build outputs (target/ and fuzz/target/)
	cargo clean
	rm -rf fuzz/target
