#!/usr/bin/env bash
# Make the Dockerfile's build-stage base locally, for a machine that cannot
# reach an image registry: Debian bookworm from Debian's packages
# (debootstrap) with what `rust:1.95-bookworm` gives a build (gcc, g++, make,
# libc, zlib and OpenSSL headers, CA certificates), plus this machine's own Rust
# toolchain (rustc --print sysroot: bin/ and lib/, without docs or sources),
# and this machine's CA bundle for cargo's downloads.
# Prints the image's name. Skipped when that image is already in the local
# store (about a minute and 1.2 GB otherwise).
#
# Usage: deploy/image/local-base.sh   (root: debootstrap and docker)
set -euo pipefail

packages=gcc,g++,libc6-dev,make,pkg-config,zlib1g-dev,libssl-dev,ca-certificates
rust_version=$(rustc --version | awk '{print $2}')
# The tag names what is in it: a changed package list makes a new base.
name="downbeat-local/rust:${rust_version}-bookworm-$(printf '%s' "$packages" | sha256sum | cut -c1-8)"
if docker image inspect "$name" >/dev/null 2>&1; then
  echo "$name"
  exit 0
fi
command -v debootstrap >/dev/null 2>&1 || {
  echo "debootstrap not found: apt-get install -y debootstrap" >&2
  exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/downbeat-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
echo "local-base: debootstrap bookworm into $root" >&2
debootstrap --variant=minbase \
  --include="$packages" \
  bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  exit 1
}
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

sysroot=$(rustc --print sysroot)
echo "local-base: Rust $rust_version from $sysroot" >&2
mkdir -p "$root/usr/local/rust" "$root/usr/local/cargo"
tar -C "$sysroot" -c --exclude=lib/rustlib/src --exclude='lib/rustlib/*/share' \
  bin lib libexec etc 2>/dev/null | tar -C "$root/usr/local/rust" -x

# This machine's CA bundle, for cargo only (a machine behind a TLS proxy
# trusts its CA): the image's own store, which the runtime copies, stays
# Debian's.
cp /etc/ssl/certs/ca-certificates.crt "$root/usr/local/share/host-ca-certificates.crt"

tar -C "$root" -c . | docker import \
  --change 'ENV CARGO_HOME=/usr/local/cargo' \
  --change 'ENV CARGO_HTTP_CAINFO=/usr/local/share/host-ca-certificates.crt' \
  --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --message "debootstrap bookworm + Rust $rust_version (downbeat deploy/image/local-base.sh)" \
  - "$name" >/dev/null
echo "$name"
