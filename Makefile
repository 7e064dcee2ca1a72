# Gatehouse: every workflow is a make target. `make run` and `make test` are the two that
# matter day to day; both install what is missing first (scripts/deps.sh, idempotent).

CARGO ?= cargo
GATEHOUSE := target/release/gatehouse
DEV_CONFIG := config/dev.toml

# The workflows are sequences (deps, then build, then run); never interleave them under -j.
.NOTPARALLEL:

.PHONY: help deps deps-bench build run test fmt fmt-check clippy nextest test-timers test-gate-fw \
	test-lora-node firmware \
	bench-tunnel bench-access clean

help:
	@echo "make run           install what is missing, build, run every service (gatehouse up, $(DEV_CONFIG))"
	@echo "make test          install what is missing, then fmt check, clippy, all tests (nextest)"
	@echo "make deps          install missing Debian packages and cargo-nextest (idempotent)"
	@echo "make build         cargo build --release -p gatehouse"
	@echo "make firmware      cross-build the sensor-node boards (nRF52840, STM32WL), print flash/RAM"
	@echo "make test-lora-node sensor-node core + simulator tests, and the core on a Cortex-M4 under QEMU"
	@echo "make bench-tunnel  WireGuard throughput/CPU benchmark against wireguard-go and boringtun-cli (root)"
	@echo "make bench-access  gate transports (HTTP, TCP, MQTT): decisions/s, latency, hub RSS (CARDS= LOG_ROWS= DURATION= to scale)"
	@echo "make fmt | clippy | clean"

deps:
	@CARGO="$(CARGO)" scripts/deps.sh

# The benchmark's extra peer, boringtun-cli, goes into target/tools (not the machine's PATH).
deps-bench:
	@CARGO="$(CARGO)" scripts/deps.sh bench

build: deps
	$(CARGO) build --release -p gatehouse

run: build
	$(GATEHOUSE) --config $(DEV_CONFIG) up

test: deps fmt-check clippy test-lora-node nextest test-timers test-gate-fw firmware

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

# The second pass lints the fake-clock timer tests, which the first skips (required-features).
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p gatehouse-tunnel --all-targets --features fake-clock -- -D warnings

nextest:
	$(CARGO) nextest run --workspace --no-tests=fail

# The fake-clock timer tests in their own invocation: the feature swaps boringtun's clock
# for a mock one and must never be unified into a build that links the gatehouse binary.
test-timers:
	$(CARGO) nextest run -p gatehouse-tunnel --features fake-clock --test timers --no-tests=fail

# The gate controller's firmware core: its own workspace (no_std), tested on the host.
test-gate-fw:
	cd gate-fw && $(CARGO) fmt --all -- --check
	cd gate-fw && $(CARGO) clippy --all-targets -- -D warnings
	cd gate-fw && $(CARGO) test

# The sensor node: its host workspace (core + simulator; before nextest, which runs the
# simulator binary in lora_e2e) and the core's scenarios on a
# Cortex-M4 under QEMU (Debian's rustc-web, see scripts/firmware.sh).
test-lora-node:
	cd lora-node && $(CARGO) fmt -p lora-node-core -p lora-sim -- --check
	cd lora-node && $(CARGO) clippy --all-targets -- -D warnings
	cd lora-node && $(CARGO) test
	scripts/firmware.sh qemu-tests

# Both node boards cross-built; prints flash/RAM, fails over 64 KiB flash / 16 KiB RAM.
firmware: deps
	scripts/firmware.sh

bench-tunnel: deps-bench
	$(CARGO) build --release -p gatehouse
	scripts/bench-tunnel.sh

# The seeding tool and the hub from this workspace, the gate simulator from gate-fw's.
bench-access: deps
	$(CARGO) build --release -p gatehouse -p gatehouse-bench-access
	cd gate-fw && $(CARGO) build --release -p gate-sim
	scripts/bench-access.sh

clean:
	$(CARGO) clean
