#!/usr/bin/env bash
# capture-svc bench, CPU per frame from schedstat: the release binary with the `command` source
# fed by bench/pace.py, which writes a fixed set of real-looking JPEG frames (ffmpeg's
# testsrc2 with noise: 640x480 about 40 KB, 1280x720 about 90 KB) at 15 fps, one write(2) per
# frame. capture-svc's CPU time is summed over its threads from /proc/PID/task/*/schedstat
# (nanoseconds) between its first frame and the pacer's last one, and divided by the frames
# published in between. Three floors: one memcpy of a frame (examples/memcpy_floor.rs);
# `dd bs=1M` reading the same paced frames from the same kind of pipe (a wake and a read(2) per
# frame, nothing else); and examples/tokio_read_floor.rs, the same read through a single-thread
# tokio runtime's reactor as capture-svc does it (an epoll_wait more per frame, and the
# runtime). The readers are measured like capture-svc.
#
# Usage: capture-svc/bench/per-frame.sh [FRAMES]   (default 300 a row: 20 s at 15 fps)
#   PERF=DIR  also record a perf profile of each row's steady state into DIR and print its
#             top entries (needs perf).
#   CAPTURE_SVC=PATH  bench that binary instead of this tree's (e.g. a copy of an older build).
set -euo pipefail
frames=${1:-300}
root=$(cd "$(dirname "$0")/../.." && pwd)
cargo build --release -q -p capture-svc --manifest-path "$root/Cargo.toml"
cargo build --release -q -p capture-svc --example memcpy_floor --example tokio_read_floor \
  --manifest-path "$root/Cargo.toml"
target="${CARGO_TARGET_DIR:-$root/target}/release"
bin="${CAPTURE_SVC:-$target/capture-svc}"
work=$(mktemp -d /dev/shm/capture-bench.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cpu_ns() { # sum over the threads of $1
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {print s}'
}
wait_for() { # file pattern seconds (an empty pattern: the file exists)
  local i
  for ((i = 0; i < $3 * 100; i++)); do
    if [ -z "$2" ]; then [ -e "$1" ] && return 0; else grep -q "$2" "$1" 2>/dev/null && return 0; fi
    sleep 0.01
  done
  echo "timed out waiting for '$2' in $1" >&2
  cat "$1" >&2
  return 1
}

reader_ns() { # clip command...: CPU ns per frame of a bare reader of the same paced frames,
  # from before the first frame (the pacer waits a second) to after the last
  local clip=$1
  shift
  rm -f "$work/done"
  python3 "$root/capture-svc/bench/pace.py" "$clip" "$frames" 15 "$work/done" 1 | "$@" >/dev/null &
  local reader=$! r0 r1 # ($! of a pipeline: its last command)
  sleep 0.5
  r0=$(cpu_ns $reader)
  wait_for "$work/done" "" $((frames / 15 + 30)) >&2
  sleep 0.2
  r1=$(cpu_ns $reader)
  wait
  echo $(((r1 - r0) / frames))
}

row() { # w h noise q
  local w=$1 h=$2 noise=$3 q=$4
  local clip="$work/${w}x${h}.mjpeg"
  ffmpeg -hide_banner -nostdin -loglevel error -y -f lavfi \
    -i "testsrc2=size=${w}x${h}:rate=15,noise=alls=${noise}:allf=t" -frames:v 15 \
    -c:v mjpeg -q:v "$q" -f mjpeg "$clip"
  local avg=$(($(stat -c %s "$clip") / 15))
  rm -f "$work/done" "$work/log"
  : >"$work/empty.toml"
  "$bin" --config "$work/empty.toml" --runtime-dir "$work/run" --log-target stderr \
    --width "$w" --height "$h" --fps 15 --source command \
    --command "python3 $root/capture-svc/bench/pace.py $clip $frames 15 $work/done" \
    2>"$work/log" &
  pid=$!
  wait_for "$work/log" "camera streaming" 30
  local t0 perfpid=
  t0=$(cpu_ns $pid)
  if [ -n "${PERF:-}" ]; then
    mkdir -p "$PERF"
    perf record -q -F 4999 -g -o "$PERF/${w}x${h}.data" -p "$pid" 2>/dev/null &
    perfpid=$!
  fi
  wait_for "$work/done" "" $((frames / 15 + 30))
  sleep 0.2 # the last frame's read and publish
  local t1
  t1=$(cpu_ns $pid)
  if [ -n "$perfpid" ]; then kill -INT "$perfpid"; wait "$perfpid" || true; fi
  kill -TERM $pid
  wait $pid || true
  pid=
  local n
  n=$(sed -n 's/.*stopped after \([0-9]*\) frames.*/\1/p' "$work/log" | tail -1)
  local floor
  floor=$("$target/examples/memcpy_floor" "$avg" | awk '{print $2}')
  local dd tokio
  dd=$(reader_ns "$clip" dd bs=1M of=/dev/null status=none)
  tokio=$(reader_ns "$clip" "$target/examples/tokio_read_floor")
  awk -v w="$w" -v h="$h" -v avg="$avg" -v n="$n" -v cpu=$((t1 - t0)) -v floor="$floor" \
      -v dd="$dd" -v tokio="$tokio" 'BEGIN {
    printf "| %4dx%-4d | %5.1f KB | %6d | %8.1f us | %6.2f us | %7.1f us | %7.1f us |\n",
      w, h, avg / 1000, n - 1, cpu / (n - 1) / 1000, floor / 1000, dd / 1000, tokio / 1000 }'
  if [ -n "$perfpid" ]; then
    perf report -q -i "$PERF/${w}x${h}.data" --no-children --sort dso,sym --percent-limit 1.5 \
      --stdio -g none 2>/dev/null | sed 's/^/    /' | head -25 >"$PERF/${w}x${h}.top"
  fi
}

echo "capture-svc per-frame bench: command source at 15 fps, ${frames} frames a row, $(nproc) cores, $(uname -m)"
echo
echo "| size      | frame    | frames | CPU per frame | memcpy floor | read floor: dd | read floor: tokio |"
echo "| --------- | -------- | ------ | ------------- | ------------ | -------------- | ----------------- |"
row 640 480 11 6
row 1280 720 12 7
if [ -n "${PERF:-}" ]; then
  for f in "$PERF"/*.top; do echo; echo "perf, $(basename "$f" .top), self time:"; cat "$f"; done
fi
