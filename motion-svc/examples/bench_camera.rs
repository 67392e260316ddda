//! A stand-in camera for `bench.sh`: creates a frame region and announce socket in
//! `--runtime-dir` and publishes pre-encoded JPEG frames (a box crossing a textured scene,
//! four seconds of motion every twelve) at `--fps`, so that motion-svc can be measured as a
//! whole process without capture-svc. Not part of the product.

#[allow(dead_code)] // shared with the tests: this uses a part of it
#[path = "../tests/support/jpeg.rs"]
mod jpeg;

use std::path::PathBuf;

use jpeg::encode_rgb;
use testkit::camera::{Camera, Stream};

fn frame(w: usize, h: usize, k: usize, moving: bool) -> Vec<u8> {
    let mut s = (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut px = Vec::with_capacity(w * h * 3);
    let bx = k * w / 60;
    for y in 0..h {
        for x in 0..w {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let mut l =
                (60 + ((x / 37 + y / 23) % 5) * 30 + x * 40 / w + (s % 5) as usize).min(255) as u8;
            if moving && x >= bx && x < bx + w / 10 && y > h / 3 && y < h * 5 / 6 {
                l = 230;
            }
            px.extend_from_slice(&[l, l.saturating_sub(10), l / 2 + 40]);
        }
    }
    encode_rgb(w, h, &px, 80).expect("encode")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = PathBuf::from("/tmp/mecam-bench");
    let (mut w, mut h, mut fps) = (1920usize, 1080usize, 15u64);
    while let Some(a) = args.next() {
        let v = args.next().expect("flag value");
        match a.as_str() {
            "--runtime-dir" => dir = PathBuf::from(v),
            "--width" => w = v.parse().expect("width"),
            "--height" => h = v.parse().expect("height"),
            "--fps" => fps = v.parse().expect("fps"),
            _ => panic!("unknown flag {a}"),
        }
    }
    let still: Vec<Vec<u8>> = (0..8).map(|k| frame(w, h, k, false)).collect();
    let moving: Vec<Vec<u8>> = (0..60).map(|k| frame(w, h, k, true)).collect();
    let largest = moving.iter().chain(&still).map(Vec::len).max().unwrap_or(0);
    let cap = largest * 2;
    std::fs::create_dir_all(&dir).expect("runtime dir");
    let stream = Stream {
        width: w as u32,
        height: h as u32,
        fps: fps as f64,
        slot: cap,
        source: "bench-camera",
    };
    let first_kib = moving[0].len() / 1024;
    let camera = Camera::start(&dir, stream, move |n, camera| {
        let n = n as usize;
        let t = n as u64 / fps;
        let jpeg = if t % 12 < 4 {
            &moving[n % 60]
        } else {
            &still[n % 8]
        };
        let _ = camera.try_publish(jpeg);
    });
    eprintln!(
        "bench camera ready: {w}x{h} at {fps} fps, frames of {first_kib} KiB, largest_frame_bytes={largest}"
    );
    // It publishes until SIGTERM/SIGINT, then removes its socket and region.
    ipc::service::shutdown_signal().await;
    drop(camera);
}
