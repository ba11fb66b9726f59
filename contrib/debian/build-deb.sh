#!/usr/bin/env bash
# Build the Debian package: the release binary, its man pages and shell completions
# (generated from the clap definitions by the hidden `sipguard generate`), then `cargo deb`.
# Writes target/debian/sipguard.deb. Needs cargo-deb (`cargo install --locked cargo-deb`).
#
# Usage: contrib/debian/build-deb.sh [--pgo]
#
# --pgo packages the profile-guided build (bench/pgo.sh: target/pgo/release/sipguard), the
# one README.md names for production. It is built first unless it was built from this tree
# (`bench/pgo.sh --if-stale`), which needs what bench/pgo.sh needs (sipp, python3, ss,
# ../shared/bench, llvm-profdata).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

usage() { echo "usage: $0 [--pgo]" >&2; exit 2; }
pgo=""
if [[ $# -gt 1 ]]; then usage; fi
case "${1:-}" in
  "") ;;
  --pgo) pgo=1 ;;
  *) usage ;;
esac

if [[ -n "$pgo" ]]; then
  bin=$(bench/pgo.sh --if-stale | tail -1)
  # cargo deb takes target/release/sipguard from the target directory it is given:
  # bench/pgo.sh's, where that binary sits at release/sipguard.
  export CARGO_TARGET_DIR
  CARGO_TARGET_DIR=$(dirname "$(dirname "$bin")")
else
  cargo build --release --locked --bin sipguard
  target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  bin="${target_dir:-target}/release/sipguard"
fi
[[ -x "$bin" ]] || { echo "no binary at $bin" >&2; exit 1; }
# Assets named in Cargo.toml's [package.metadata.deb], relative to the crate.
rm -rf target/generated
"$bin" generate man target/generated/man >/dev/null
"$bin" generate completions target/generated/completions >/dev/null
mkdir -p target/debian
cargo deb --no-build --locked --output target/debian/sipguard.deb
