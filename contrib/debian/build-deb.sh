#!/usr/bin/env bash
# Build the Debian package: the release binary, its man pages and shell completions
# (generated from the clap definitions by the hidden `sipguard generate`), then `cargo deb`.
# Writes target/debian/sipguard.deb. Needs cargo-deb (`cargo install --locked cargo-deb`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

cargo build --release --locked --bin sipguard
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${target_dir:-target}/release/sipguard"
# Assets named in Cargo.toml's [package.metadata.deb], relative to the crate.
rm -rf target/generated
"$bin" generate man target/generated/man >/dev/null
"$bin" generate completions target/generated/completions >/dev/null
mkdir -p target/debian
cargo deb --no-build --locked --output target/debian/sipguard.deb
