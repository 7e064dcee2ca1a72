# Gatehouse: every workflow is a make target. `make run` and `make test` are the two that
# matter day to day; both install what is missing first (scripts/deps.sh, idempotent).

CARGO ?= cargo
GATEHOUSE := target/release/gatehouse
DEV_CONFIG := config/dev.toml

# The workflows are sequences (deps, then build, then run); never interleave them under -j.
.NOTPARALLEL:

.PHONY: help deps deps-bench build run test test-board fmt fmt-check clippy nextest test-timers test-gate-fw \
	test-lora-node firmware cross test-cross \
	bench-tunnel bench-access clean

help:
	@echo "make run           install what is missing, build, run every service (gatehouse up, $(DEV_CONFIG))"
	@echo "make test          install what is missing, then fmt check, clippy, all tests (nextest)"
	@echo "make deps          install missing Debian packages and cargo-nextest (idempotent)"
	@echo "make build         cargo build --release -p gatehouse"
	@echo "make firmware      cross-build the sensor-node boards (nRF52840, STM32WL), print flash/RAM"
	@echo "make cross         cross-build gatehouse for the box (aarch64, Debian toolchain) into target/cross"
	@echo "make test-cross    cross-build (cross-test profile) and run under qemu-user: --version, check-config, a gatehouse up self-test"
	@echo "make test-lora-node sensor-node core + simulator tests, and the core on a Cortex-M4 under QEMU"
	@echo "make bench-tunnel  WireGuard throughput/CPU benchmark against wireguard-go and boringtun-cli (root)"
	@echo "make bench-access  gate transports (HTTP, TCP, MQTT): decisions/s, latency, hub RSS (CARDS= LOG_ROWS= DURATION= to scale)"
	@echo "make test-board    offline checks of board/: units, nftables, mosquitto, genimage, RAUC, first boot"
	@echo "make image BOARD=rpi4_64|qemu_aarch64  build the SD image with Buildroot into output/BOARD (needs internet)"
	@echo "make qemu          boot output/qemu_aarch64/images (UDP 51820 -> WireGuard, TCP 8443 -> console)"
	@echo "make test-buildroot offline checks of buildroot/: BR2_ symbols against br2-symbols.txt, coding style"
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

test: deps fmt-check clippy test-lora-node nextest test-timers test-gate-fw firmware test-board test-buildroot test-cross

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

# The gateway's own binary for its CPU (aarch64), in its own target dir (target/cross);
# prints size and build time. test-cross builds it with the cross-test profile and runs it
# under qemu-aarch64-static (scripts/cross.sh).
cross: deps
	scripts/cross.sh

# Its own, lighter profile (cross-test in Cargo.toml): part of `make test`.
test-cross: deps
	CROSS_PROFILE=cross-test scripts/cross.sh
	CROSS_PROFILE=cross-test scripts/cross.sh test

bench-tunnel: deps-bench
	$(CARGO) build --release -p gatehouse
	scripts/bench-tunnel.sh

# The seeding tool and the hub from this workspace, the gate simulator from gate-fw's.
bench-access: deps
	$(CARGO) build --release -p gatehouse -p gatehouse-bench-access
	cd gate-fw && $(CARGO) build --release -p gate-sim
	scripts/bench-access.sh

# The offline checks of board/ (what goes into the SD image): shellcheck, systemd-analyze
# verify, nft -c, mosquitto with our config, genimage + RAUC bundle on dummy inputs, the
# image's config and first boot against the gatehouse binary (a debug build, or
# GATEHOUSE_BIN). One line per check; see scripts/check-image-files.sh.
test-board: deps
	$(CARGO) build -p gatehouse
	scripts/check-image-files.sh

clean:
	$(CARGO) clean

# The SD image (issue 7): Buildroot, pinned and verified, with buildroot/ as BR2_EXTERNAL;
# downloads into .cache/, builds into output/$(BOARD)/. See buildroot/README.md.
.PHONY: image qemu test-buildroot
BOARD ?= rpi4_64
image:
	scripts/image.sh build $(BOARD)

qemu:
	scripts/image.sh qemu

# Offline, seconds: the symbol and style checks, then their self-test (each deliberately
# broken copy of the tree must fail).
test-buildroot:
	scripts/check-br2-symbols.sh
	scripts/check-br2-symbols.sh --self-test
