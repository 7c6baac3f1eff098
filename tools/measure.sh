#!/usr/bin/env bash
# Measure wspush's performance budgets on this machine and draw the charts
# README.md "Performance" shows. Loopback only; every step is bounded in
# time (`timeout`) and every load loop in count.
#
#   tools/measure.sh [OUTDIR]        # default: tools/results
#
# Writes OUTDIR/{idle,idle-shared,fanout,fanout-floor,burst,burst-floor,churn}.json,
# OUTDIR/summary.txt and OUTDIR/{memory,latency}.svg. Takes about 8 minutes;
# needs jq and strip.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-tools/results}
mkdir -p "$out"
cargo build --release --workspace --quiet
bin=target/release
tmp=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# start NAME COMMAND...: run a server, wait for its "listening" line.
start() {
    local name=$1
    shift
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    server_pid=$!
    for _ in $(seq 100); do
        grep -q listening "$tmp/$name.out" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$name did not start: $(cat "$tmp/$name.err")" >&2
    exit 1
}
stop() {
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}
wspush() { start wspush "$bin/wspush" serve --listen 127.0.0.1:17401 --control "$tmp/w.sock" --ping-interval 0; }
floor() { start floor "$bin/wspush-floor" --listen 127.0.0.1:17402 --control "$tmp/f.sock"; }
load() { timeout 900 "$bin/wspush-load" --server-pid "$server_pid" "$@" 2>/dev/null >/dev/null; }
on_wspush=(--addr 127.0.0.1:17401 --control "$tmp/w.sock")
on_floor=(--addr 127.0.0.1:17402 --control "$tmp/f.sock")
steps=1000,4000,7000,10000,13000,16000,19000

echo "idle, one token and user per connection (server CPU over 60 s)"
wspush; load idle "${on_wspush[@]}" --steps $steps --seconds 60 --out "$out/idle.json"; stop
echo "idle, one shared token and user"
wspush; load idle "${on_wspush[@]}" --steps $steps --seconds 5 --shared --out "$out/idle-shared.json"; stop
for target in wspush floor; do
    echo "fanout and burst: $target"
    args=("${on_wspush[@]}")
    [ $target = floor ] && args=("${on_floor[@]}")
    suffix=$([ $target = floor ] && echo -floor || true)
    $target
    load fanout "${args[@]}" --steps 1000,2500,5000,10000 --rounds 21 --label $target --out "$out/fanout$suffix.json"
    stop
    $target
    load burst "${args[@]}" --count 10000 --rounds 11 --burst 100 --label $target --out "$out/burst$suffix.json"
    stop
done
echo "churn"
wspush; load churn "${on_wspush[@]}" --count 1000 --seconds 10 --out "$out/churn.json"; stop

strip -o "$tmp/wspush.stripped" "$bin/wspush"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
    echo "stripped release binary: $(stat -c %s "$tmp/wspush.stripped") bytes"
} >"$out/summary.txt"
cat "$out/summary.txt"

"$bin/wspush-plot" --out "$out/memory.svg" --title "wspush RSS with N idle upgraded connections" \
    --y-label "server RSS (MiB)" \
    --series "one token and user per connection=$out/idle.json:rss_kib/1024" \
    --series "one shared token and user=$out/idle-shared.json:rss_kib/1024" \
    --line "budget: 512 B per connection=1000,$(jq '.points[0].rss_kib/1024' "$out/idle.json"),19000,$(jq '.points[0].rss_kib/1024 + 18000*512/1048576' "$out/idle.json")"
"$bin/wspush-plot" --out "$out/latency.svg" --title "One broadcast to N connections: time to last delivery (median of 21)" \
    --y-label "milliseconds" \
    --series "wspush=$out/fanout.json:last_delivery_ms.median" \
    --series "raw write() floor=$out/fanout-floor.json:last_delivery_ms.median" \
    --series "wspush, receipt latency p99=$out/fanout.json:latency_ms.p99" \
    --series "wspush, receipt latency p50=$out/fanout.json:latency_ms.p50"
