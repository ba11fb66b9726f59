#!/usr/bin/env bash
# Soak: legitimate sipp calls through sipguard while 127.0.0.2+ throw garbage, the RFC 4475
# torture messages, an INVITE flood and slow TCP clients at it (tests/soak.rs, run long).
#
# Usage: bench/soak.sh [--seconds N] [--cps N] [--pps N]
# Defaults: 600 s, 500 legitimate calls/s, 20000 hostile datagrams/s. Prints one line with
# ok/failed calls, hostile datagrams sent, RSS after warm-up, at the end and at peak, and the
# bans; exits non-zero when a legitimate call failed, RSS grew or the legitimate source was
# banned. CI runs the same test for 120 s at 100 calls/s and 2000 datagrams/s.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=600
cps=500
pps=20000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --cps) cps=$2; shift 2 ;;
    --pps) pps=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
command -v sipp >/dev/null || { echo "sipp not found (apt-get install sip-tester)" >&2; exit 1; }
SIPGUARD_REQUIRE_SIPP=1 SOAK_SECONDS=$seconds SOAK_CPS=$cps SOAK_PPS=$pps \
  cargo test --release --test soak -- --nocapture 2>&1 | grep -E '^soak:|test result|panicked|assert'
