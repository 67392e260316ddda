//! Frame region throughput: publish, verified read, and the round trip, for 64 KiB and
//! 512 KiB frames, beside a plain `memcpy` of the same size as the floor.
//!
//! `cargo bench -p ipc --bench region`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ipc::region::{FrameFormat, FrameInfo, RegionReader, RegionWriter};

const SIZES: [(usize, &str); 2] = [(64 << 10, "64KiB"), (512 << 10, "512KiB")];

fn region(c: &mut Criterion) {
    let info = FrameInfo {
        width: 1920,
        height: 1080,
        format: FrameFormat::Jpeg,
        mono_ns: 1,
        wall_ns: 1,
    };
    for (size, name) in SIZES {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
        let path = dir.path().join("frames");
        let mut writer = RegionWriter::create(&path, size).unwrap();
        let reader = RegionReader::open(&path).unwrap();
        let frame = vec![0x5au8; size];
        let mut buf = Vec::with_capacity(size);
        let mut group = c.benchmark_group("region");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("memcpy_floor", name), |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(black_box(&frame));
                black_box(&buf);
            })
        });
        group.bench_function(BenchmarkId::new("publish", name), |b| {
            b.iter(|| writer.publish(&info, black_box(&frame)).unwrap())
        });
        writer.publish(&info, &frame).unwrap();
        group.bench_function(BenchmarkId::new("read_verified", name), |b| {
            b.iter(|| reader.read_latest(black_box(&mut buf)).unwrap())
        });
        group.bench_function(BenchmarkId::new("publish_then_read", name), |b| {
            b.iter(|| {
                writer.publish(&info, black_box(&frame)).unwrap();
                reader.read_latest(black_box(&mut buf)).unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, region);
criterion_main!(benches);
