//! The frame region: bad files, the read-only promise, slot rotation, torn reads across
//! processes, and a writer that restarts under its readers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ipc::region::{
    FrameFormat, FrameInfo, OpenError, PublishError, ReadError, RegionReader, RegionWriter,
};
use proptest::prelude::*;

fn info(seq_hint: u64) -> FrameInfo {
    FrameInfo {
        width: 640,
        height: 480,
        format: FrameFormat::Jpeg,
        mono_ns: seq_hint * 10,
        wall_ns: seq_hint * 20,
    }
}

/// Frame content derived from its sequence number, so a reader can check every byte.
fn frame_for(seq: u64, max_len: usize) -> Vec<u8> {
    let len = 16 + (seq.wrapping_mul(7919) as usize % (max_len - 16));
    let mut v = Vec::with_capacity(len);
    fill_frame(seq, len, &mut v);
    v
}

/// Byte `i` of frame `seq` (from 16 on) is `seq * 31 + i` mod 256: a rotation of this cycle,
/// so filling and checking are slice copies and compares, fast even in debug builds.
const CYCLE: [u8; 512] = {
    let mut c = [0u8; 512];
    let mut i = 0;
    while i < 512 {
        c[i] = i as u8;
        i += 1;
    }
    c
};

fn pattern_offset(seq: u64) -> usize {
    ((seq as u8).wrapping_mul(31).wrapping_add(16)) as usize
}

fn fill_frame(seq: u64, len: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(len as u64).to_le_bytes());
    let o = pattern_offset(seq);
    while out.len() < len {
        let n = (len - out.len()).min(256);
        out.extend_from_slice(&CYCLE[o..o + n]);
    }
}

fn frame_is_valid(seq: u64, bytes: &[u8]) -> bool {
    if bytes.len() < 16
        || bytes[..8] != seq.to_le_bytes()
        || bytes[8..16] != (bytes.len() as u64).to_le_bytes()
    {
        return false;
    }
    let o = pattern_offset(seq);
    bytes[16..]
        .chunks(256)
        .all(|chunk| chunk == &CYCLE[o..o + chunk.len()])
}

#[test]
fn a_published_frame_reads_back_whole_with_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frames");
    let mut writer = RegionWriter::create(&path, 4096).unwrap();
    let reader = RegionReader::open(&path).unwrap();
    assert_eq!(reader.generation(), writer.generation());
    let mut buf = Vec::new();
    assert_eq!(reader.read_latest(&mut buf), Err(ReadError::Empty));

    let frame = frame_for(1, 4096);
    let meta = writer.publish(&info(1), &frame).unwrap();
    let got = reader.read_latest(&mut buf).unwrap();
    assert_eq!(got, meta);
    assert_eq!(
        (got.width, got.height, got.mono_ns, got.wall_ns),
        (640, 480, 10, 20)
    );
    assert_eq!(buf, frame);
    assert_eq!(
        reader.read_slot(meta.slot, meta.seq, &mut buf).unwrap().seq,
        1
    );
}

#[test]
fn the_writer_never_writes_the_newest_or_the_previous_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frames");
    let mut writer = RegionWriter::create(&path, 256).unwrap();
    let reader = RegionReader::open(&path).unwrap();
    let mut recent: Vec<(u32, u64)> = Vec::new();
    let mut buf = Vec::new();
    for seq in 1..=30 {
        let meta = writer.publish(&info(seq), &frame_for(seq, 256)).unwrap();
        assert_eq!(meta.seq, seq);
        if let [.., (s2, _), (s1, _)] = recent[..] {
            assert_ne!(meta.slot, s1, "wrote the newest slot");
            assert_ne!(meta.slot, s2, "wrote the previous slot");
        }
        // The newest and the one before it are both still readable after a publish.
        for &(slot, seq) in recent.iter().rev().take(1) {
            assert!(frame_is_valid(seq, &{
                reader.read_slot(slot, seq, &mut buf).unwrap();
                buf.clone()
            }));
        }
        recent.push((meta.slot, meta.seq));
    }
    // Three publishes later a slot holds another frame: overwritten, counted, never delivered.
    let (slot, seq) = recent[recent.len() - 4];
    assert_eq!(
        reader.read_slot(slot, seq, &mut buf),
        Err(ReadError::Overwritten)
    );
    assert_eq!(reader.stats().overwritten, 1);
}

#[test]
fn a_frame_over_the_capacity_is_refused_counted_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frames");
    let mut writer = RegionWriter::create(&path, 1000).unwrap();
    let reader = RegionReader::open(&path).unwrap();
    assert_eq!(
        writer.publish(&info(1), &vec![0u8; 1001]),
        Err(PublishError::TooLarge {
            len: 1001,
            capacity: 1000
        })
    );
    assert_eq!(writer.stats().too_large, 1);
    assert_eq!(writer.stats().published, 0);
    assert_eq!(reader.read_latest(&mut Vec::new()), Err(ReadError::Empty));
    // Exactly the capacity fits.
    writer.publish(&info(1), &vec![7u8; 1000]).unwrap();
    assert!(matches!(
        RegionWriter::create(&dir.path().join("zero"), 0),
        Err(ipc::region::RegionError::Capacity(0))
    ));
}

#[test]
fn the_reader_maps_the_region_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frames");
    let _writer = RegionWriter::create(&path, 4096).unwrap();
    let reader = RegionReader::open(&path).unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let canonical = std::fs::canonicalize(&path).unwrap();
    let lines: Vec<&str> = maps
        .lines()
        .filter(|l| l.ends_with(canonical.to_str().unwrap()))
        .collect();
    // The writer's mapping is rw; exactly one other mapping of the file exists: the reader's.
    let perms: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert!(
        perms.contains(&"r--s"),
        "no read-only shared mapping in {lines:?}"
    );
    assert_eq!(
        perms.iter().filter(|p| p.starts_with("rw")).count(),
        1,
        "only the writer maps rw: {lines:?}"
    );
    drop(reader);
}

/// Writes a valid region, then lets `patch` damage its bytes.
fn damaged(dir: &Path, name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let good = dir.join(format!("{name}.good"));
    let mut w = RegionWriter::create(&good, 1024).unwrap();
    w.publish(&info(1), &frame_for(1, 1024)).unwrap();
    let mut bytes = std::fs::read(&good).unwrap();
    patch(&mut bytes);
    let bad = dir.join(name);
    std::fs::write(&bad, bytes).unwrap();
    bad
}

#[test]
fn each_kind_of_bad_file_gets_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = RegionReader::open(&d.join("nope")).unwrap_err();
    assert!(matches!(missing, OpenError::Io { .. }), "{missing:?}");
    assert!(
        missing.to_string().contains("capture-svc"),
        "the error says what to do: {missing}"
    );

    let truncated = damaged(d, "truncated", |b| b.truncate(100));
    assert!(matches!(
        RegionReader::open(&truncated),
        Err(OpenError::Truncated { len: 100 })
    ));

    let garbage = damaged(d, "garbage", |b| b.iter_mut().for_each(|x| *x = 0xa5));
    assert!(matches!(
        RegionReader::open(&garbage),
        Err(OpenError::BadMagic { .. })
    ));

    let version = damaged(d, "version", |b| {
        b[8..12].copy_from_slice(&99u32.to_ne_bytes())
    });
    assert!(matches!(
        RegionReader::open(&version),
        Err(OpenError::WrongVersion { found: 99 })
    ));

    let slots = damaged(d, "slots", |b| {
        b[12..16].copy_from_slice(&4u32.to_ne_bytes())
    });
    assert!(matches!(
        RegionReader::open(&slots),
        Err(OpenError::BadGeometry(_))
    ));

    let capacity = damaged(d, "capacity", |b| {
        b[16..24].copy_from_slice(&(1u64 << 40).to_ne_bytes())
    });
    assert!(matches!(
        RegionReader::open(&capacity),
        Err(OpenError::BadGeometry(_))
    ));

    let short = damaged(d, "short", |b| b.truncate(b.len() - 64));
    assert!(matches!(
        RegionReader::open(&short),
        Err(OpenError::SizeMismatch { .. })
    ));

    let unfinished = damaged(d, "unfinished", |b| {
        b[40..48].copy_from_slice(&0u64.to_ne_bytes())
    });
    assert!(matches!(
        RegionReader::open(&unfinished),
        Err(OpenError::Uninitialized)
    ));
}

#[test]
fn a_slot_whose_length_exceeds_the_capacity_is_corrupt_never_read_out_of_bounds() {
    let dir = tempfile::tempdir().unwrap();
    // Slot 1 holds frame 1; its length field is at HEADER_SIZE + stride + 48.
    let stride = ipc::region::layout::slot_stride(1024);
    let bad = damaged(dir.path(), "len", |b| {
        let at = 4096 + stride + 48;
        b[at..at + 8].copy_from_slice(&(1u64 << 32).to_ne_bytes());
    });
    let reader = RegionReader::open(&bad).unwrap();
    let mut buf = Vec::new();
    assert!(matches!(
        reader.read_latest(&mut buf),
        Err(ReadError::Corrupt(_))
    ));
    assert!(matches!(
        reader.read_slot(7, 1, &mut buf),
        Err(ReadError::Corrupt(_))
    ));
    assert_eq!(reader.stats().corrupt, 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    /// Whatever the first 64 header bytes and the first slot header hold, opening and reading
    /// either fail with an error or deliver a frame within the capacity: never a panic.
    #[test]
    fn random_header_bytes_never_panic(header in proptest::collection::vec(any::<u8>(), 64), slot in proptest::collection::vec(any::<u8>(), 64), keep_magic in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let bad = damaged(dir.path(), "random", |b| {
            b[..64].copy_from_slice(&header);
            if keep_magic {
                b[..8].copy_from_slice(b"MECAMFRM");
                b[8..12].copy_from_slice(&1u32.to_ne_bytes());
            }
            b[4096..4096 + 64].copy_from_slice(&slot);
        });
        if let Ok(reader) = RegionReader::open(&bad) {
            let mut buf = Vec::new();
            for slot in 0..4 {
                if let Ok(meta) = reader.read_slot(slot, 1, &mut buf) {
                    prop_assert!(meta.len <= reader.slot_capacity());
                }
            }
            if let Ok(meta) = reader.read_latest(&mut buf) {
                prop_assert!(meta.len <= reader.slot_capacity());
            }
        }
    }
}

#[test]
fn a_new_writer_replaces_a_stale_region_and_old_readers_notice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frames");
    let mut old = RegionWriter::create(&path, 512).unwrap();
    old.publish(&info(1), &frame_for(1, 512)).unwrap();
    let reader = RegionReader::open(&path).unwrap();
    assert!(!reader.is_stale());
    // The old writer "crashes" (dropped without remove); a new one starts over the stale file.
    drop(old);
    let new = RegionWriter::create(&path, 2048).unwrap();
    assert_ne!(new.generation(), reader.generation());
    assert!(reader.is_stale());
    // The old mapping stays valid: the old frame is still there to read.
    assert!(reader.read_latest(&mut Vec::new()).is_ok());
    let fresh = RegionReader::open(&path).unwrap();
    assert_eq!(
        (fresh.generation(), fresh.slot_capacity()),
        (new.generation(), 2048)
    );
    // A clean shutdown removes the file, but only its own.
    new.remove().unwrap();
    assert!(!path.exists());
    assert!(fresh.is_stale());
}

#[test]
fn a_second_writer_refuses_a_live_region_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frames");
    let mut live = RegionWriter::create(&path, 512).unwrap();
    let err = RegionWriter::create(&path, 512).unwrap_err();
    assert!(
        matches!(err, ipc::region::RegionError::InUse { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("--runtime-dir"),
        "says what to do: {err}"
    );
    // The live region is still the one at the path, and its readers still get its frames.
    let reader = RegionReader::open(&path).unwrap();
    assert_eq!(reader.generation(), live.generation());
    let meta = live.publish(&info(1), &frame_for(1, 512)).unwrap();
    let mut buf = Vec::new();
    assert_eq!(reader.read_latest(&mut buf).unwrap(), meta);
    assert!(!reader.is_stale());
    // No temporary file of the refused writer is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["frames"]);
    // Once the live writer is gone (crashed: dropped without remove), its lock goes with it.
    drop(live);
    let next = RegionWriter::create(&path, 512).unwrap();
    assert_ne!(next.generation(), reader.generation());
    assert!(reader.is_stale());
}

// ---- cross-process torture test -------------------------------------------------------------

const CROSS_FRAMES: u64 = 100_000;
const CROSS_CAPACITY: usize = 64 * 1024;
const ROLE_VAR: &str = "MECAM_IPC_TEST_ROLE";

/// Runs this test binary again as a child that plays `role` (see `child_entry`).
fn spawn_role(role: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_entry",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_VAR, role)
        .env("MECAM_IPC_TEST_DIR", dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Kills a child on drop, so a failing test leaves no process behind.
struct Reap(Option<Child>);
impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The child side: not a test of its own (ignored), only run by `spawn_role`.
#[test]
#[ignore = "entry point for child processes of the cross-process tests"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let dir = PathBuf::from(std::env::var("MECAM_IPC_TEST_DIR").unwrap());
    let path = dir.join("frames");
    match role.as_str() {
        "writer" => {
            let mut writer = RegionWriter::create(&path, CROSS_CAPACITY).unwrap();
            wait_for("two readers", Duration::from_secs(30), || {
                dir.join("ready-a").exists() && dir.join("ready-b").exists()
            });
            let mut frame = Vec::with_capacity(CROSS_CAPACITY);
            for seq in 1..=CROSS_FRAMES {
                let len = 16 + (seq.wrapping_mul(7919) as usize % (CROSS_CAPACITY - 16));
                fill_frame(seq, len, &mut frame);
                writer.publish(&info(seq), &frame).unwrap();
            }
            println!("WRITER published={}", writer.stats().published);
        }
        reader_role => {
            let name = reader_role.trim_start_matches("reader-");
            let reader = RegionReader::open(&path).unwrap();
            std::fs::write(dir.join(format!("ready-{name}")), b"").unwrap();
            let mut buf = Vec::with_capacity(CROSS_CAPACITY);
            let (mut last, mut bad, mut skipped, mut checked) = (0u64, 0u64, 0u64, 0u64);
            let end = Instant::now() + Duration::from_secs(120);
            while last < CROSS_FRAMES && Instant::now() < end {
                match reader.read_latest(&mut buf) {
                    Ok(meta) => {
                        // Every delivered copy is checked, repeat reads of the same frame too:
                        // a torn repeat would be as wrong as a torn first read.
                        checked += 1;
                        if !frame_is_valid(meta.seq, &buf) || meta.len != buf.len() {
                            bad += 1;
                        }
                        if meta.seq > last {
                            skipped += meta.seq - last - 1;
                            last = meta.seq;
                        } else if meta.seq < last {
                            // The newest frame never goes back.
                            bad += 1;
                        }
                    }
                    Err(ReadError::Empty | ReadError::Torn | ReadError::Overwritten) => {}
                    Err(ReadError::Corrupt(why)) => panic!("corrupt slot: {why}"),
                }
            }
            let s = reader.stats();
            println!(
                "READER {name} read={} checked={checked} skipped={skipped} torn={} overwritten={} bad={bad} last={last}",
                s.read, s.torn, s.overwritten
            );
        }
    }
}

fn output_line(child: Child, prefix: &str) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // libtest prints "test child_entry ... " on the same line, before the child's own output.
    stdout
        .lines()
        .find_map(|l| l.find(prefix).map(|at| l[at..].to_owned()))
        .unwrap_or_default()
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap()
}

#[test]
fn two_reader_processes_never_get_a_bad_frame_from_a_racing_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = Reap(Some(spawn_role("writer", dir.path())));
    wait_for("the region", Duration::from_secs(30), || {
        dir.path().join("frames").exists()
    });
    let mut a = Reap(Some(spawn_role("reader-a", dir.path())));
    let mut b = Reap(Some(spawn_role("reader-b", dir.path())));
    let w = output_line(writer.0.take().unwrap(), "WRITER");
    assert_eq!(field(&w, "published"), CROSS_FRAMES);
    for r in [&mut a, &mut b] {
        let line = output_line(r.0.take().unwrap(), "READER");
        println!("{line}");
        assert_eq!(
            field(&line, "bad"),
            0,
            "a torn or wrong frame was delivered: {line}"
        );
        assert_eq!(
            field(&line, "last"),
            CROSS_FRAMES,
            "reader did not reach the last frame: {line}"
        );
        assert!(field(&line, "read") > 0);
        assert_eq!(
            field(&line, "checked"),
            field(&line, "read"),
            "every delivered copy was verified: {line}"
        );
    }
}
