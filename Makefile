# jetinfer — the two commands a newcomer needs:
#   make demo   install what is missing, build, run 1,200 jobs through a local stack
#   make test   install what is missing, build, run every test (what CI runs)
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup build demo test layout gpu-bundle

setup:
	scripts/setup.sh

build: setup
	$(ENV) cargo build --workspace --bins

demo: build
	$(ENV) target/debug/jetinfer demo

# The crate graph, the imports inside each crate and the libraries' error types follow
# docs/architecture.md#crates.
layout:
	python3 scripts/ci/crate_rules.py
	python3 scripts/ci/import_cycles.py
	python3 scripts/ci/lib_errors.py

test: build layout
	$(ENV) cargo test --workspace -- --test-threads=2
