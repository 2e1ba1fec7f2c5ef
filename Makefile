# `make dev` starts a local cluster; `make test` runs every test.
# Both install what is missing first (scripts/deps.sh).
CARGO ?= cargo

.PHONY: dev test deps build lint images docker-up tf-check

deps:
	scripts/deps.sh

build: deps
	$(CARGO) build --workspace --bins

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

docker-up: deps
	scripts/docker-up.sh

# The manager, worker, example-job and test etcd images, tagged :local.
images: docker-up
	scripts/images.sh

# Offline checks of terraform/: fmt, get, validate, checkov.
tf-check:
	scripts/tf-check.sh

# Every test: unit tests and the integration tests in tests/, which start
# their own etcd, Mongo-protocol server, managers, workers and containers.
# Test binaries run one after another, so the load scenarios do not compete
# for the CPU. The images are built from the debug binaries.
test: build lint tf-check docker-up
	GDTS_IMAGE_PROFILE=dev scripts/images.sh
	$(CARGO) test --workspace --no-fail-fast

# Docker is optional for dev: without it container jobs fail with a message.
dev: build
	-scripts/docker-up.sh
	scripts/dev.sh
