#!/usr/bin/env python3
"""Writes the JPEG frames of an MJPEG file to stdout at a fixed rate, like a camera.

Usage: pace.py FILE FRAMES FPS DONE [DELAY]
FILE holds JPEGs back to back (ffmpeg -f mjpeg); they are sent in a loop, FRAMES in all, each
with one write(2) (a whole frame, like rpicam-vid), on an absolute schedule. After the last
write, DONE is created and the process waits a second before it exits, so whoever measures
capture-svc can read its counters before the end of the stream adds anything to them. The
first frame goes out DELAY seconds after the start (default 0). The pipe on stdout is asked
to hold a whole frame (1 MiB), as capture-svc asks of its camera pipes.
"""
import fcntl, os, sys, time

path, total, fps, done = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
data = open(path, "rb").read()
# The file is ffmpeg's MJPEG: every frame starts with FF D8 FF and ends with FF D9, and its
# entropy data holds neither pair (stuffed), so splitting at SOI is exact for it.
starts = []
i = data.find(b"\xff\xd8\xff")
while i >= 0:
    starts.append(i)
    i = data.find(b"\xff\xd8\xff", i + 3)
frames = [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)])]
out = sys.stdout.fileno()
try:
    fcntl.fcntl(out, fcntl.F_SETPIPE_SZ, 1 << 20)
except OSError:
    pass
period = 1.0 / fps
t0 = time.monotonic() + delay
for n in range(total):
    delay = t0 + n * period - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    view = memoryview(frames[n % len(frames)])
    while view:
        view = view[os.write(out, view):]
open(done, "w").close()
time.sleep(1)
