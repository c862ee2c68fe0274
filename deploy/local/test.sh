#!/usr/bin/env bash
# The test suite, from a fresh machine: installs what the tests need (the emulator in a venv,
# Debian's python3-venv, zstd, b3sum, PostgreSQL, MariaDB, fdisk, e2fsprogs, dosfstools, mtools, xfsprogs, btrfs-progs, lvm2 and prometheus (for promtool) if missing, and cargo-deb), then format check, clippy,
# and every test.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bunker-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The export tests pipe archives through the standard zstd CLI (what a user without bunker
# runs); the dump tests start real PostgreSQL and MariaDB servers (tests/common/db.rs) and use
# their dump and client tools.
missing=()
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
# Format 2's whole-image hash is checked with the standard BLAKE3 tool, as a user would.
command -v b3sum >/dev/null 2>&1 || missing+=(b3sum)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v pg_dump >/dev/null 2>&1 || missing+=(postgresql-client)
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v mariadb-dump >/dev/null 2>&1 || missing+=(mariadb-client)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # the TLS test server's certificate
# File-level EBS exports: test disks are partitioned with sfdisk and formatted with mkfs.ext4 -d.
command -v sfdisk >/dev/null 2>&1 || missing+=(fdisk)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
# EFI system partitions: FAT32 made with mkfs.vfat and filled with mcopy (no mount).
command -v mkfs.vfat >/dev/null 2>&1 || missing+=(dosfstools)
command -v mcopy >/dev/null 2>&1 || missing+=(mtools)
# Exports through a temporary volume: an XFS disk (mkfs.xfs on a loop device; the tests run
# as root), which the emulator attaches as a read-only loop device.
command -v mkfs.xfs >/dev/null 2>&1 || missing+=(xfsprogs)
command -v mkfs.btrfs >/dev/null 2>&1 || missing+=(btrfs-progs)
# LVM test disks: pvcreate/vgcreate/lvcreate on a loop device, nothing activated.
command -v lvcreate >/dev/null 2>&1 || missing+=(lvm2)
# The alert rules are checked and unit-tested with promtool (Debian's prometheus package).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]} (Debian packages)" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
# The package test builds the .deb with cargo-deb (a cargo subcommand from crates.io, built
# once into ~/.cargo/bin: about 1.5 minutes on a fresh 2-core machine).
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  echo "test.sh: installing cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION" --target-dir "$CARGO_TARGET_DIR/cargo-deb" >&2
fi
BUNKER_TEST_PYTHON=$(bash deploy/local/setup-emulator.sh | tail -n 1)
export BUNKER_TEST_PYTHON

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --quiet
cargo test --locked --workspace
