#!/usr/bin/env bash
# Whole-process figures for motion-svc: CPU at 15 fps analysis and resident memory with 5 s
# of pre-capture, at 1920x1080 and 640x480, against the stand-in camera in
# examples/bench_camera.rs (a box crossing a textured scene, 4 s of motion every 12 s).
# Prints a Markdown table. Usage: motion-svc/bench.sh [seconds]
#
# The pre-capture byte cap (pre_capture_max_mib) is raised so that the ring's whole window
# fits: 5 s of pre-capture plus the wait before an event starts, at the camera's largest
# frame. The ring fills its whole arena as it wraps, so RSS includes all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
FPS=15
PRE=5
cargo build --release -p motion-svc --bin motion-svc --example bench_camera >&2
BIN=target/release/motion-svc
CAM=target/release/examples/bench_camera
TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "| frame | largest JPEG | analysis fps | pre-capture | ring arena (MiB) | CPU (% of one core) | RSS after ${SECS}s (MiB) | RSS minus ring (MiB) | peak RSS (MiB) | events |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for geom in 1920x1080 640x480; do
  W=${geom%x*}; H=${geom#*x}
  DIR=$(mktemp -d)
  mkdir -p "$DIR/run"
  "$CAM" --runtime-dir "$DIR/run" --width "$W" --height "$H" --fps "$FPS" 2>"$DIR/cam.log" &
  CAMPID=$!
  for _ in $(seq 1 600); do grep -q largest_frame_bytes "$DIR/cam.log" && [ -S "$DIR/run/capture.sock" ] && break; sleep 0.1; done
  LARGEST=$(sed -n 's/.*largest_frame_bytes=\([0-9]*\).*/\1/p' "$DIR/cam.log")
  # Window = pre-capture + min_duration_s (0.4) + 0.5 s tolerance + one analysis period;
  # 10% slack for the space lost where the ring wraps.
  MIB=$(echo "$LARGEST * $FPS * ($PRE + 0.4 + 0.5 + 1 / $FPS) * 1.1 / 1048576 + 1" | bc -l | cut -d. -f1)
  printf '[motion]\npre_capture_max_mib = %s\n' "$MIB" > "$DIR/m.toml"
  "$BIN" --config "$DIR/m.toml" --runtime-dir "$DIR/run" --events-dir "$DIR/events" --log-target stderr \
    --analysis-fps "$FPS" --pre-capture-s "$PRE" 2>"$DIR/motion.log" &
  PID=$!
  for _ in $(seq 1 200); do grep -q "motion-svc ready" "$DIR/motion.log" && break; sleep 0.1; done
  RING=$(sed -n 's/.*pre-capture ring: \([0-9]*\) bytes allocated.*/\1/p' "$DIR/motion.log" | head -1)
  sleep 3
  T0=$(cpu_ticks $PID); S0=$(date +%s.%N)
  sleep "$SECS"
  T1=$(cpu_ticks $PID); S1=$(date +%s.%N)
  RSS=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$PID/status)
  HWM=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$PID/status)
  CPU=$(echo "($T1 - $T0) / $TICKS / ($S1 - $S0) * 100" | bc -l)
  kill -TERM $PID; wait $PID || true
  kill -TERM $CAMPID; wait $CAMPID || true
  EV=$(ls "$DIR/events" 2>/dev/null | wc -l)
  RINGM=$(echo "$RING / 1048576" | bc -l)
  printf '| %s | %d KiB | %d | %d s | %.1f | %.1f | %s | %.1f | %s | %s |\n' \
    "$geom" $((LARGEST / 1024)) "$FPS" "$PRE" "$RINGM" "$CPU" "$RSS" "$(echo "$RSS - $RINGM" | bc -l)" "$HWM" "$EV"
  rm -rf "$DIR"
done
