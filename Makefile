# `make dev` starts a local cluster; `make test` runs every test.
# Both install what is missing first (scripts/deps.sh).
CARGO ?= cargo

.PHONY: dev test deps build lint unit

deps:
	scripts/deps.sh

build: deps
	$(CARGO) build --workspace --bins

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every test: unit tests and the integration tests in tests/, which start
# their own etcd, Mongo-protocol server, managers and workers. Test binaries
# run one after another, so the load scenarios do not compete for the CPU.
test: build lint
	$(CARGO) test --workspace

dev: build
	scripts/dev.sh
