#!/usr/bin/env bash
# Build the Debian package: the release binary, its man pages and shell completions
# (generated from the clap definitions by the hidden `sipguard generate`), then `cargo deb`.
# Writes target/debian/sipguard.deb. Needs cargo-deb (`cargo install --locked cargo-deb`).
#
# Usage: contrib/debian/build-deb.sh [--pgo]
#
# --pgo packages the profile-guided build (bench/pgo.sh: target/pgo/release/sipguard), the
# one README.md recommends for production; it needs what bench/pgo.sh needs (sipp, python3,
# ../shared/bench, llvm-profdata).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

pgo=""
case "${1:-}" in
  "") ;;
  --pgo) pgo=1 ;;
  *) echo "usage: $0 [--pgo]" >&2; exit 2 ;;
esac

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target_dir=${target_dir:-target}
if [[ -n "$pgo" ]]; then
  bench/pgo.sh >/dev/null
  # bench/pgo.sh builds in its own target directory; cargo deb takes the binary from there.
  export CARGO_TARGET_DIR="$target_dir/pgo"
else
  cargo build --release --locked --bin sipguard
  export CARGO_TARGET_DIR="$target_dir"
fi
bin="$CARGO_TARGET_DIR/release/sipguard"
# Assets named in Cargo.toml's [package.metadata.deb], relative to the crate.
rm -rf target/generated
"$bin" generate man target/generated/man >/dev/null
"$bin" generate completions target/generated/completions >/dev/null
mkdir -p target/debian
cargo deb --no-build --locked --output target/debian/sipguard.deb
