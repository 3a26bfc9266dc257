# corral: developer and CI entry points.
#
#   make build       debug build of the `corral` binary
#   make run         build (debug, quick to compile) and start one node with no
#                    flags: client :2379, peer :2380, metrics :2381, data in
#                    ./corral.data; extra flags with ARGS="--name n1 ..."
#   make test        install the test tools (etcdctl, grpcurl, grpcio-tools),
#                    then run the whole test suite (nextest if installed)
#   make verify      fmt check + clippy -D warnings + tests + rustdoc -D warnings;
#                    writes nothing in the work tree (Cargo.lock is --locked)
#   make jepsen      long fault-injection runs against real processes (3 and 5
#                    members, every fault); DURATION=5m per run (default 60s),
#                    SEED=n to replay a fault schedule; a failing run is saved
#                    under target/jepsen/
#   make jepsen-replay RECORDING=target/jepsen/<run>  check a saved run again
#   make fix         cargo fmt + clippy --fix
#   make tools       install the test tools only (fails if one is missing)
#   make bench       release build, 3 corral + 3 etcd members on loopback, the
#                    same workloads against each; writes BENCHMARKS.md
#   make clean-data  remove ./corral.data
#   make image       container image corral:latest and corral:<version> (deploy/Dockerfile,
#                    FROM scratch around a static release binary); TAGS="-t name:tag ..."
#                    to tag it otherwise
#   make cluster     a local 3-member cluster of processes (debug build) on 127.0.0.1,
#                    data and logs in ./corral.cluster; prints the endpoints
#   make cluster-stop  stop it (data is kept; rm -rf corral.cluster to start over)
#
# protoc: the dev-dependency etcd-client runs protoc from its build script;
# every cargo command that builds tests gets PROTOC from scripts/protoc-path.sh
# (the binary vendored in the cargo registry by protoc-bin-vendored).

CARGO ?= cargo
# Extra arguments for the test runner, e.g. make test TEST_ARGS=compat_tools
TEST_ARGS ?=
ARGS ?=
# make jepsen: nemesis time per run, and an optional fault-schedule seed.
DURATION ?= 60s
SEED ?=
RECORDING ?=

# Where scripts/install-test-tools.sh puts grpcurl and the Python venv; first
# on PATH for the tests.
ifneq ($(CORRAL_TOOLS_DIR),)
TOOLS_DIR := $(CORRAL_TOOLS_DIR)
else
TOOLS_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/corral-test-tools
endif
export PATH := $(TOOLS_DIR)/bin:$(PATH)

# Prefix for a recipe line: exports PROTOC, or stops the recipe if none is found.
WITH_PROTOC = PROTOC="$$(scripts/protoc-path.sh)" || exit 1; export PROTOC;

HAVE_NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)

.DEFAULT_GOAL := build
.PHONY: build run test test-only tools verify fmt-check clippy doc fix clean-data help \
	jepsen jepsen-replay bench image cluster cluster-stop

help:
	@sed -n '3,26p' Makefile | sed 's/^# \{0,1\}//'

build:
	$(CARGO) build --bin corral

# Debug build on purpose: it compiles several times faster than --release.
run:
	$(CARGO) run --bin corral -- serve $(ARGS)

tools:
	scripts/install-test-tools.sh >/dev/null

# A tool that cannot be installed does not stop the run: the tests that need it
# fail with a message naming it, and the rest of the suite still reports.
test:
	@scripts/install-test-tools.sh >/dev/null || \
		echo "WARNING: some test tools are missing (see above); their tests will fail" >&2
	@scripts/image.sh --prebuild >/dev/null || \
		echo "WARNING: the static binary for the docker tests did not build; they will fail" >&2
	@$(MAKE) --no-print-directory test-only

test-only:
ifeq ($(HAVE_NEXTEST),yes)
	$(WITH_PROTOC) $(CARGO) nextest run --workspace --all-targets --locked $(TEST_ARGS)
else
	$(WITH_PROTOC) $(CARGO) test --workspace --all-targets --locked $(TEST_ARGS)
endif

# One run after the other (they share two cores with the servers they start).
jepsen:
	$(WITH_PROTOC) JEPSEN_DURATION=$(DURATION) JEPSEN_SEED=$(SEED) \
		$(CARGO) test --locked --test jepsen -- --ignored --test-threads=1 --nocapture long_

jepsen-replay:
	@test -n "$(RECORDING)" || { echo "usage: make jepsen-replay RECORDING=target/jepsen/<run>" >&2; exit 2; }
	$(WITH_PROTOC) JEPSEN_REPLAY=$(abspath $(RECORDING)) \
		$(CARGO) test --locked --test jepsen -- --ignored --exact replay --nocapture

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(WITH_PROTOC) $(CARGO) clippy --workspace --all-targets --locked -- -D warnings

doc:
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --workspace --no-deps --locked

# Cheapest checks first; stops at the first failure (sequential even under -j).
verify:
	@$(MAKE) --no-print-directory fmt-check
	@$(MAKE) --no-print-directory clippy
	@$(MAKE) --no-print-directory test
	@$(MAKE) --no-print-directory doc

fix:
	$(WITH_PROTOC) $(CARGO) clippy --workspace --all-targets --fix --allow-dirty --allow-staged
	$(CARGO) fmt --all

clean-data:
	rm -rf corral.data

# Side-by-side benchmark with etcd (installs Debian's etcd-server when missing).
bench:
	scripts/bench.sh

# Deployment: the image, and a local cluster of processes (scripts/image.sh, scripts/cluster.sh).
TAGS ?=
image:
	scripts/image.sh $(patsubst -t,--tag,$(TAGS))

cluster: build
	@scripts/cluster.sh start

cluster-stop:
	@scripts/cluster.sh stop
