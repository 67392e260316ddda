#!/usr/bin/env bash
# capture-svc bench: whole-process CPU per frame and peak RSS of the real binary (release),
# from the `command` source (ffmpeg printing MJPEG at the frame rate, its own CPU not counted),
# the `http` source (ffmpeg serving the same as chunked multipart MJPEG on 127.0.0.1) and the
# `synthetic` source, at 640x480@30 and 1920x1080@30. Prints a markdown table.
#
# Usage: capture-svc/bench/run.sh [SECONDS]   (default 10 s per row; needs ffmpeg)
set -euo pipefail
secs=${1:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
cargo build --release -q -p capture-svc --manifest-path "$root/Cargo.toml"
bin="${CARGO_TARGET_DIR:-$root/target}/release/capture-svc"
tick=$(getconf CLK_TCK)
work=$(mktemp -d /dev/shm/capture-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

row() { # source w h fps
  local source=$1 w=$2 h=$3 fps=$4 args=() server=
  local gen=(ffmpeg -hide_banner -nostdin -loglevel error -re -f lavfi -i "testsrc2=size=${w}x${h}:rate=${fps}" -c:v mjpeg -q:v 5)
  if [ "$source" = command ]; then
    args=(--source command --command "${gen[*]} -f mjpeg -")
  elif [ "$source" = http ]; then
    local port=$((20000 + RANDOM % 20000))
    "${gen[@]}" -f mpjpeg -listen 1 "http://127.0.0.1:$port/stream" 2>/dev/null &
    server=$!
    args=(--source http --url "http://127.0.0.1:$port/stream" --backoff-min-ms 100)
  else
    args=(--source synthetic)
  fi
  : >"$work/empty.toml"
  "$bin" --config "$work/empty.toml" --runtime-dir "$work/run" --log-target stderr \
    --width "$w" --height "$h" --fps "$fps" "${args[@]}" 2>"$work/log" &
  local pid=$! peak=0 hwm=0
  local end=$((SECONDS + secs))
  while [ $SECONDS -lt $end ]; do
    # Resident memory besides the region (tmpfs pages are RssShmem): anon + file-backed.
    local r
    r=$(awk '/^RssAnon|^RssFile/ {s+=$2} END {print s}' /proc/$pid/status)
    [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.5
  done
  hwm=$(awk '/^VmHWM/ {print $2}' /proc/$pid/status)
  local cpu
  cpu=$(awk '{print $14 + $15}' /proc/$pid/stat)
  kill -TERM $pid
  wait $pid || true
  if [ -n "$server" ]; then kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; fi
  local frames
  frames=$(sed -n 's/.*stopped after \([0-9]*\) frames.*/\1/p' "$work/log" | tail -1)
  frames=${frames:-0}
  awk -v s="$source" -v w="$w" -v h="$h" -v f="$fps" -v cpu="$cpu" -v t="$tick" -v secs="$secs" \
      -v n="$frames" -v peak="$peak" -v hwm="$hwm" 'BEGIN {
    c = cpu / t; fr = n / secs;
    printf "| %-9s | %4dx%-4d@%d | %6.1f | %8.3f | %6.2f %% | %7.1f | %7.1f |\n",
      s, w, h, f, fr, (n ? c / n * 1000 : 0), c / secs * 100, peak / 1024, hwm / 1024 }'
}

echo "capture-svc bench: ${secs} s per row, $(nproc) cores, $(uname -m)"
echo
echo "| source    | size         | fps got | CPU ms/frame | CPU % of a core | RSS MiB (w/o region) | VmHWM MiB (with region) |"
echo "| --------- | ------------ | ------- | ------------ | --------------- | -------------------- | ----------------------- |"
row command 640 480 30
row command 1920 1080 30
row http 640 480 30
row http 1920 1080 30
row synthetic 640 480 30
row synthetic 1920 1080 30
