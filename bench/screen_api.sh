#!/usr/bin/env bash
# HTTP decision API latency: wrk posts single calls to POST /v1/screen of a release sipguard
# at about RATE requests/s for SECONDS, and prints the rate reached and p50/p90/p99/p99.9.
#
# Usage: bench/screen_api.sh [RATE] [SECONDS]      (defaults 2000 and 30)
# Needs wrk (Debian package wrk) and `cargo build --release`. The config screens in enforce
# mode: account acme on 10.0.0.0/8 owning +12125550100, one DNC list of 100,000 numbers,
# a per-callee daily cap (each request has a new callee, so all pass and all are charged),
# the decision log on. Rate pacing: 20 connections, each waits 1000*20/RATE ms between
# requests (wrk's delay()), so the offered rate is a little under RATE.
# PIN=1: sipguard on the last CPU and wrk on the others (taskset), so that the load
# generator does not take the CPU the measured process needs; needs 2 CPUs or more.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rate=${1:-2000}
seconds=${2:-30}
conns=20
dir=$(mktemp -d)
stop() {
  local pid
  pid=$(cat "$dir/pid" 2>/dev/null) || pid=""
  if [[ -n "$pid" ]]; then
    kill "$pid" 2>/dev/null || true
    # It saves its state on the way out: wait for that before removing the directory.
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -rf "$dir"
}
trap stop EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sip=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$dir" <<'PY'
import sys
d = sys.argv[1]
with open(f"{d}/dnc.txt", "w") as f:
    for i in range(100000):
        f.write(f"+1646{i:07d}\n")
with open(f"{d}/owned.csv", "w") as f:
    f.write("account,number\nacme,+12125550100\n")
PY
cat > "$dir/sipguard.toml" <<TOML
[server]
listen = ["udp:127.0.0.1:$sip"]
[upstream]
uri = "sip:127.0.0.1:9;transport=udp"
[admin]
listen = "127.0.0.1:$port"
token = "bench-token"
[log]
level = "warn"
decisions = "$dir/decisions.jsonl"
[screening]
mode = "enforce"
unknown_account = "reject"
caller_id_numbers = "$dir/owned.csv"
[screening.quota]
per_callee_per_day = 1
[[account]]
id = "acme"
sources = ["10.0.0.0/8"]
[[dnc.list]]
name = "national"
path = "$dir/dnc.txt"
[state]
dir = "$dir/state"
TOML
pin_sut=() pin_gen=()
if [[ "${PIN:-0}" == 1 ]]; then
  last=$(( $(nproc) - 1 ))
  (( last >= 1 )) || { echo "PIN=1 needs 2 CPUs or more" >&2; exit 2; }
  pin_sut=(taskset -c "$last") pin_gen=(taskset -c "0-$(( last - 1 ))")
fi
"${pin_sut[@]}" "$ROOT/target/release/sipguard" --config "$dir/sipguard.toml" 2>"$dir/sipguard.log" &
echo $! > "$dir/pid"
for _ in $(seq 100); do
  curl -fsS -H "Authorization: Bearer bench-token" "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
delay=$(( 1000 * conns / rate ))
echo "sipguard $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) CPUs${pin_sut:+ (pinned: sipguard on CPU $last)}, offered ~${rate}/s for ${seconds}s ($conns connections, ${delay} ms apart)"
cpu() { awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / t }' "/proc/$(cat "$dir/pid")/stat"; }
cpu0=$(cpu)
SIPGUARD_TOKEN=bench-token DELAY_MS=$delay "${pin_gen[@]}" wrk -t2 -c$conns -d"${seconds}s" --latency -s "$ROOT/bench/screen_api.lua" "http://127.0.0.1:$port" | grep -E "^(requests|p[0-9])"
n=$(wc -l < "$dir/decisions.jsonl")
echo "sipguard CPU: $(python3 -c "print(f'{($(cpu) - $cpu0) * 1e6 / max($n, 1):.1f}')") us per request"
echo "decisions logged: $(wc -l < "$dir/decisions.jsonl")," \
  "forward $(grep -c '"verdict":"forward"' "$dir/decisions.jsonl" || true)," \
  "reject $(grep -c '"verdict":"reject"' "$dir/decisions.jsonl" || true)"
