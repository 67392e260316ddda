//! Benchmarks: JPEG to luma (libjpeg-turbo at the analysis scale, 1/4 for 640x480 and 1/8 for
//! 1080p, vs zune-jpeg full luma) and the
//! whole per-frame analysis (decode + detection) at 640x480 and 1920x1080.
//!
//! Run: `cargo bench -p motion-svc --bench analysis`. Figures go in the README.
#![allow(missing_docs)] // criterion_group! generates undocumented items

#[allow(dead_code)] // shared with the tests: this uses a part of it
#[path = "../tests/support/jpeg.rs"]
mod jpeg;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jpeg::encode_rgb;
use motion_svc::analyzer::{Analyzer, FrameInput};
use motion_svc::config::MotionConfig;
use motion_svc::decode::LumaDecoder;

/// A camera-like frame: textured scene with mild noise, 4:2:0 JPEG at quality 80.
fn camera_frame(w: usize, h: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut px = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let base = 60 + ((x / 37 + y / 23) % 5) as u32 * 30 + (x * 40 / w) as u32;
            let n = (s % 7) as u32;
            let l = (base + n).min(255) as u8;
            px.extend_from_slice(&[l, l.saturating_sub(10), l / 2 + 40]);
        }
    }
    encode_rgb(w, h, &px, 80).unwrap()
}

fn decoding(c: &mut Criterion) {
    for (w, h) in [(640, 480), (1920, 1080)] {
        let jpeg = camera_frame(w, h, 7);
        let mut dec = LumaDecoder::new().unwrap();
        c.bench_function(&format!("turbojpeg_scaled_gray_{w}x{h}"), |b| {
            b.iter(|| black_box(dec.decode(black_box(&jpeg)).unwrap().pixels[0]))
        });
        c.bench_function(&format!("zune_jpeg_full_luma_{w}x{h}"), |b| {
            b.iter(|| {
                let opts = zune_core::options::DecoderOptions::default()
                    .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::Luma);
                let mut d = zune_jpeg::JpegDecoder::new_with_options(black_box(&jpeg), opts);
                black_box(d.decode().unwrap().len())
            })
        });
    }
}

fn analysis(c: &mut Criterion) {
    for (w, h) in [(640, 480), (1920, 1080)] {
        // Two different frames alternating so nothing is a duplicate.
        let frames = [camera_frame(w, h, 1), camera_frame(w, h, 2)];
        let config = MotionConfig {
            analysis_fps: 60.0,
            ..MotionConfig::default()
        };
        let mut a = Analyzer::new(&config.validate().unwrap()).unwrap();
        let mut seq = 0u64;
        c.bench_function(&format!("analysed_frame_{w}x{h}"), |b| {
            b.iter(|| {
                seq += 1;
                let jpeg = &frames[(seq % 2) as usize];
                // 100 ms apart: every frame is due for analysis.
                black_box(
                    a.offer(FrameInput {
                        seq,
                        mono_ns: seq * 100_000_000,
                        wall_ns: 0,
                        jpeg,
                    })
                    .analysed,
                )
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = decoding, analysis
}
criterion_main!(benches);
