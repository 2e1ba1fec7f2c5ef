# `make dev` starts a local cluster; `make test` runs every test.
# Both install what is missing first (scripts/deps.sh).
CARGO ?= cargo

.PHONY: dev test deps build lint images docker-up tf-check rehearse bench-deps bench soak chaos

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

# The boot rehearsal alone (README, "Boot rehearsal"): the boot templates,
# rendered by Terraform, booted in local containers that mimic the VMs.
rehearse: build docker-up
	GDTS_IMAGE_PROFILE=dev scripts/images.sh
	$(CARGO) test -p gdts-tests --test boot_rehearsal

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

# Benchmarks (docs/benchmarks.md): release binaries; each scenario starts its
# own etcd, Mongo-protocol server, manager and workers on loopback, prints its
# figures with PASS/FAIL against the targets and replaces its section of
# docs/benchmarks.md (plots in docs/bench/). Logs stay in target/bench/.
# About 20 minutes; `make soak` about 35. Neither is part of `make test`
# (tests/tests/soak_short.rs runs a short soak there).
BENCH = GDTS_BIN_DIR=target/release target/release/gdts-bench

# matplotlib into .venv, for the plots.
bench-deps: deps
	scripts/bench-deps.sh

bench: bench-deps
	$(CARGO) build --release --workspace --bins
	$(BENCH) ticks --jobs 100 --workers 3 --seconds 60
	$(BENCH) ticks --jobs 100 --workers 3 --seconds 60 --shell bash-static
	$(BENCH) ticks --jobs 1000 --workers 3 --seconds 300
	$(BENCH) ticks --jobs 1000 --workers 3 --seconds 300 --shell bash-static
	$(BENCH) ticks --jobs 1000 --workers 3 --seconds 60 --job-user nobody
	$(BENCH) ticks --jobs 30 --workers 3 --seconds 60 --forbid-percent 100 --forbid-run-ms 930
	$(BENCH) fleet --jobs 200 --workers 1,3,6 --seconds 60
	$(BENCH) overload --jobs 3000 --workers 3 --seconds 60
	$(BENCH) jobs --total 100000 --per-second 100
	$(BENCH) floor --n 1000
	$(BENCH) floor --n 1000 --releasers 3
	$(BENCH) floor --n 100 --releasers 3

soak: bench-deps
	$(CARGO) build --release --workspace --bins
	$(BENCH) soak --jobs 1000 --workers 3 --seconds 1800

# Faults under load (docs/benchmarks.md, "Chaos"): 200 ticks/s for 5 minutes
# on three workers and a 3-member etcd while workers are killed, etcd members
# stopped, the leader killed, a worker cut off and MongoDB stopped. About 9
# minutes. tests/tests/chaos_short.rs runs a short variant in `make test`.
chaos: bench-deps
	$(CARGO) build --release --workspace --bins
	$(BENCH) chaos --jobs 200 --seconds 300
