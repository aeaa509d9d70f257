# jetinfer — the two commands a newcomer needs:
#   make demo   install what is missing, build, run 1,200 jobs through a local stack
#   make test   install what is missing, build, run every test (what CI runs)
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup build demo test gpu-bundle

setup:
	scripts/setup.sh

build: setup
	$(ENV) cargo build --workspace --bins

demo: build
	$(ENV) target/debug/jetinfer demo

test: build
	$(ENV) cargo test --workspace -- --test-threads=2
