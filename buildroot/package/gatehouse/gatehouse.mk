################################################################################
#
# gatehouse
#
################################################################################

# The source is this repository (the parent of the external tree). The
# version is the workspace's, so legal-info and the build directory name
# follow Cargo.toml rather than a number kept here by hand.
GATEHOUSE_SITE = $(BR2_EXTERNAL_GATEHOUSE_PATH)/..
GATEHOUSE_SITE_METHOD = local
GATEHOUSE_VERSION = $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' \
	$(GATEHOUSE_SITE)/Cargo.toml | head -n 1)
GATEHOUSE_LICENSE = MIT or Apache-2.0

# The local site method rsyncs the whole checkout: leave out build trees
# (cargo's target/, Buildroot's own output/ and .cache/, which would copy
# the build into itself) and the firmware workspaces, which are not part
# of the host workspace.
GATEHOUSE_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /target --exclude /output --exclude /.cache \
	--exclude /run --exclude /lora-node --exclude /gate-fw \
	--exclude node_modules

# Trap 1: the cargo-package download post-process (cargo vendor) only
# runs for downloaded tarballs, never for SITE_METHOD = local, so a local
# source is not vendored and the offline build fails. (pkg-cargo.mk sets
# <PKG>_DOWNLOAD_POST_PROCESS = cargo, which support/download/
# cargo-post-process runs on the downloaded archive; with a local site
# there is no archive, and <PKG>_SUBDIR / BR_CARGO_MANIFEST_PATH only
# steer that download step.) The hook below does what that script does
# (flock on $(BR_CARGO_HOME)/.br-lock, cargo vendor --locked VENDOR,
# with the host cargo on PATH through TARGET_MAKE_ENV). The crates are
# vendored here instead, once per Cargo.lock, into a tarball in the
# download directory ($(BR2_DL_DIR)/gatehouse/): the first build needs
# the network for crates.io, every later build (and a copy of the dl
# directory on another machine) runs offline.
GATEHOUSE_LOCK_HASH = $(shell sha256sum $(GATEHOUSE_SITE)/Cargo.lock | cut -c1-16)
GATEHOUSE_VENDOR_TARBALL = \
	$(GATEHOUSE_DL_DIR)/gatehouse-vendor-$(GATEHOUSE_LOCK_HASH).tar.gz

define GATEHOUSE_VENDOR_CRATES
	mkdir -p $(GATEHOUSE_DL_DIR) $(BR_CARGO_HOME)
	if [ ! -f $(GATEHOUSE_VENDOR_TARBALL) ]; then \
		rm -rf $(@D)/VENDOR && \
		cd $(@D) && \
		$(TARGET_MAKE_ENV) CARGO_HOME=$(BR_CARGO_HOME) \
			flock $(BR_CARGO_HOME)/.br-lock \
			$(HOST_DIR)/bin/cargo vendor --locked \
				--manifest-path Cargo.toml VENDOR >/dev/null && \
		$(TAR) --sort=name --mtime=@0 --owner=0 --group=0 \
			--numeric-owner -czf $(GATEHOUSE_VENDOR_TARBALL).tmp \
			-C $(@D) VENDOR && \
		mv $(GATEHOUSE_VENDOR_TARBALL).tmp \
			$(GATEHOUSE_VENDOR_TARBALL); \
	fi
	rm -rf $(@D)/VENDOR
	$(TAR) -xzf $(GATEHOUSE_VENDOR_TARBALL) -C $(@D)
	printf '%s\n' '[source.crates-io]' \
		'replace-with = "vendored-sources"' \
		'[source.vendored-sources]' \
		'directory = "$(@D)/VENDOR"' \
		> $(@D)/gatehouse-vendor.toml
endef
GATEHOUSE_PRE_CONFIGURE_HOOKS += GATEHOUSE_VENDOR_CRATES

# One binary from the workspace; the vendored sources replace crates.io.
GATEHOUSE_CARGO_BUILD_OPTS = \
	--config $(@D)/gatehouse-vendor.toml \
	--package gatehouse --bin gatehouse

# C code in dependencies (ring, rusqlite's bundled SQLite): the target
# compiler comes from TARGET_CONFIGURE_OPTS; build scripts and proc macros
# compiled for the build machine get the host compiler.
#
# Recent pkg-cargo.mk also exports CARGO_PROFILE_{DEV,RELEASE}_* (opt-level
# from BR2_OPTIMIZE_*, LTO only with BR2_ENABLE_LTO, codegen-units 16,
# debug info only with BR2_ENABLE_DEBUG), which override Cargo.toml's
# [profile.release]. <PKG>_CARGO_ENV comes after PKG_CARGO_ENV on the
# command line, so the last assignment wins: keep the workspace's thin LTO
# and 4 codegen units; opt-level and debug info follow Buildroot's options.
GATEHOUSE_CARGO_ENV = \
	HOST_CC="$(HOSTCC)" \
	HOST_CFLAGS="$(HOST_CFLAGS)" \
	CARGO_PROFILE_RELEASE_LTO="thin" \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS="4"

# Trap 2: the default install step runs `cargo install --path ./`, which
# refuses a virtual workspace manifest (the root Cargo.toml has no
# [package]). The build step already produced the binary: install it.
GATEHOUSE_PROFILE_DIR = $(if $(BR2_ENABLE_DEBUG),debug,release)

define GATEHOUSE_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 \
		$(@D)/target/$(RUSTC_TARGET_NAME)/$(GATEHOUSE_PROFILE_DIR)/gatehouse \
		$(TARGET_DIR)/usr/bin/gatehouse
endef

$(eval $(cargo-package))
