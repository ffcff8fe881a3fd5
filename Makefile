# mod_socache_shm: build the httpd module.
#
#   make            (= make module) cargo builds the static library, apxs
#                   compiles the C glue and links both into
#                   build/mod_socache_shm.so
#   make install    apxs -i into httpd's module directory; on Debian/Ubuntu
#                   also conf/socache_shm.load into mods-available/
#   make man        build/shmcache.8 from `shmcache --help` (help2man, by
#                   scripts/gen-manpage.sh)
#   make deb        the Debian package (debian/, dpkg-buildpackage -us -uc -b)
#                   into build/deb/: libapache2-mod-socache-shm_VERSION_ARCH.deb
#   make clean
#
# Variables: APXS (apxs, else apxs2), CARGO, CARGO_TARGET_DIR (honoured as
# cargo does), CARGO_FLAGS, APXS_FLAGS (more apxs -c options: -Wc,... -Wl,...).

APXS ?= $(shell command -v apxs 2>/dev/null || command -v apxs2 2>/dev/null || echo apxs)
CARGO ?= cargo
# rustup's toolchain (scripts/deps.sh installs one when the system's cargo is
# missing or too old) may not be on PATH yet in a fresh shell.
export PATH := $(PATH):$(HOME)/.cargo/bin
CARGO_FLAGS ?=
APXS_FLAGS ?=
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
ifdef CARGO_TARGET_DIR
export CARGO_TARGET_DIR
endif
RUSTLIB := $(TARGET_DIR)/release/libsocache_shm.a

BUILD := build
MODULE := $(BUILD)/mod_socache_shm.so
GLUE := apache-glue/mod_socache_shm.c
GLUE_H := apache-glue/socache_shm_rust.h

# What the Rust library needs from the system (`--print native-static-libs`):
# the farm tier's OpenSSL (the libssl/libcrypto mod_ssl loads too) and the
# Rust runtime's. tests/native_libs.rs fails when one is missing here.
SYSLIBS := -lssl -lcrypto -lgcc_s -lutil -lrt -lpthread -lm -ldl
# Hide every symbol of the Rust library (so two Rust modules in one httpd
# never clash); the glue marks its helpers hidden; only socache_shm_module
# is exported.
LINKFLAGS := -Wl,--exclude-libs,ALL -Wl,--as-needed

APACHE_MODS_AVAILABLE := /etc/apache2/mods-available

.PHONY: all module rustlib install man deb clean

all: module

module: $(MODULE)

# cargo decides what is stale; always ask it.
rustlib:
	$(CARGO) build --release --lib $(CARGO_FLAGS)

# The empty recipe makes make look at the library again after cargo ran
# (without it, the module was relinked only on the next run).
$(RUSTLIB): rustlib ;

$(MODULE): $(RUSTLIB) $(GLUE) $(GLUE_H)
	@mkdir -p $(BUILD)
	$(APXS) -c -o $(BUILD)/mod_socache_shm.la $(APXS_FLAGS) -Iapache-glue $(GLUE) $(RUSTLIB) $(LINKFLAGS) $(SYSLIBS)
	@# libtool leaves the real shared object in .libs/; copy it out as a file,
	@# renamed into place so an httpd that has the old one mapped keeps it intact.
	cp -f $(BUILD)/.libs/mod_socache_shm.so $(MODULE).tmp
	mv -f $(MODULE).tmp $(MODULE)
	@echo "built $(MODULE)"

install: $(MODULE)
	$(APXS) -i -n socache_shm $(BUILD)/mod_socache_shm.la
	@if [ -d $(APACHE_MODS_AVAILABLE) ]; then \
	    install -m 0644 conf/socache_shm.load $(APACHE_MODS_AVAILABLE)/socache_shm.load; \
	    echo "installed $(APACHE_MODS_AVAILABLE)/socache_shm.load (enable with: a2enmod socache_shm)"; \
	fi

# The manual page shmcache(8), from the same text as `shmcache --help`
# (help2man: apt-get install help2man).
man:
	$(CARGO) build --release -p shmcache --bin shmcache $(CARGO_FLAGS)
	@mkdir -p $(BUILD)
	bash scripts/gen-manpage.sh $(TARGET_DIR)/release/shmcache > $(BUILD)/shmcache.8.tmp
	mv -f $(BUILD)/shmcache.8.tmp $(BUILD)/shmcache.8

# The Debian package. The package build runs cargo --offline (a package
# build must not download), so fetch the crates for this host first: a
# no-op when cargo's registry cache has them. dpkg-buildpackage writes its
# results next to the source tree; they are moved into build/deb/.
DEB_PACKAGE := libapache2-mod-socache-shm
DEB_DIR := $(BUILD)/deb
deb:
	$(CARGO) fetch --locked --target "$$(rustc -vV | sed -n 's/^host: //p')"
	dpkg-buildpackage -us -uc -b
	@mkdir -p $(DEB_DIR)
	@set -e; v=$$(dpkg-parsechangelog -S Version); a=$$(dpkg --print-architecture); \
	    for f in ../$(DEB_PACKAGE)_$${v}_$$a.deb ../$(DEB_PACKAGE)-dbgsym_$${v}_$$a.deb \
	             ../$(DEB_PACKAGE)_$${v}_$$a.buildinfo ../$(DEB_PACKAGE)_$${v}_$$a.changes; do \
	        if [ -f "$$f" ]; then mv -f "$$f" $(DEB_DIR)/; fi; \
	    done; \
	    test -f $(DEB_DIR)/$(DEB_PACKAGE)_$${v}_$$a.deb; \
	    echo "built $(DEB_DIR)/$(DEB_PACKAGE)_$${v}_$$a.deb"

clean:
	rm -rf $(BUILD) apache-glue/*.o apache-glue/*.lo apache-glue/*.slo apache-glue/*.la apache-glue/.libs
	$(CARGO) clean --release -p mod_socache_shm 2>/dev/null || true

# Ten minutes of TLS load with children being killed (not part of CI);
# SOAK_SECONDS to change the length. Prints resumption rate, errors, RSS.
.PHONY: soak
soak: module
	SOAK_SECONDS=$${SOAK_SECONDS:-600} $(CARGO) test --release --test httpd_soak -- --ignored --nocapture

# Side by side with mod_socache_shmcb in loopback httpds (bench/run.py:
# BENCHMARKS.md's sections 1-5: speed inside httpd, a first read, TLS
# handshakes, sessions per MiB and hit rate, graceful restart); writes
# bench/results.md. Builds bench/mod_socache_bench.so
# and bench/tls-load, installs nothing. BENCH_ARGS="--quick" for a short run.
# The farm tier (shm + Redis, across two hosts, Redis hung and down) is
# `make bench-farm` (bench/farm.py, writes bench/farm-results.md;
# FARM_ARGS="--quick" for about a minute).
.PHONY: bench bench-build bench-farm
bench-build: module
	cd bench && $(APXS) -c -Wc,-O2 -Wc,-Wall -o mod_socache_bench.la mod_socache_bench.c -lm
	@if [ -f bench/tls-load/Cargo.toml ]; then \
	    CARGO_TARGET_DIR=$(CURDIR)/target-bench $(CARGO) build --release --manifest-path bench/tls-load/Cargo.toml; \
	fi

bench: bench-build
	python3 bench/run.py $(BENCH_ARGS)

bench-farm: bench-build
	python3 bench/farm.py $(FARM_ARGS)
