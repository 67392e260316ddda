//! The frame region: bad files, the read-only promise, slot rotation, torn reads across
//! processes, and a writer that restarts under its readers.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ipc::region::layout::{HEADER_SIZE, HeaderField, SLOT_HEADER_SIZE, SlotField, slot_stride};
use ipc::region::{
    FrameFormat, FrameInfo, OpenError, PublishError, ReadError, RegionError, RegionReader,
    RegionWriter,
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

/// A new region with slots of `slot_capacity` bytes in a temporary directory, its writer and
/// a reader.
fn region(slot_capacity: usize) -> (tempfile::TempDir, RegionWriter, RegionReader) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frames");
    let writer = RegionWriter::create(&path, slot_capacity).unwrap();
    let reader = RegionReader::open(&path).unwrap();
    (dir, writer, reader)
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
    let (_dir, mut writer, reader) = region(4096);
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
    let (_dir, mut writer, reader) = region(256);
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
    let (dir, mut writer, reader) = region(1000);
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
    let (dir, _writer, reader) = region(4096);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let canonical = std::fs::canonicalize(dir.path().join("frames")).unwrap();
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

/// Stores a native-endian 32-bit header or slot word at `at`.
fn put(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

/// Loads the native-endian 32-bit word at `at`.
fn get(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Capacity of the regions [`damaged`] makes.
const DAMAGED_CAPACITY: usize = 1024;

/// File offset of `field` in `slot` of a region made by [`damaged`].
fn slot_at(slot: usize, field: SlotField) -> usize {
    HEADER_SIZE + slot * slot_stride(DAMAGED_CAPACITY) + field.offset()
}

/// Writes a valid region, then lets `patch` damage its bytes.
fn damaged(dir: &Path, name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let good = dir.join(format!("{name}.good"));
    let mut w = RegionWriter::create(&good, DAMAGED_CAPACITY).unwrap();
    w.publish(&info(1), &frame_for(1, DAMAGED_CAPACITY))
        .unwrap();
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
        put(b, HeaderField::LayoutVersion.offset(), 99)
    });
    assert!(matches!(
        RegionReader::open(&version),
        Err(OpenError::WrongVersion { found: 99 })
    ));

    let slots = damaged(d, "slots", |b| put(b, HeaderField::SlotCount.offset(), 4));
    assert!(matches!(
        RegionReader::open(&slots),
        Err(OpenError::BadGeometry(_))
    ));

    let capacity = damaged(d, "capacity", |b| {
        put(b, HeaderField::SlotCapacity.offset(), u32::MAX)
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
        put(b, HeaderField::GenerationLo.offset(), 0);
        put(b, HeaderField::GenerationHi.offset(), 0);
    });
    assert!(matches!(
        RegionReader::open(&unfinished),
        Err(OpenError::Uninitialized)
    ));
}

#[test]
fn a_slot_whose_length_exceeds_the_capacity_is_corrupt_never_read_out_of_bounds() {
    let dir = tempfile::tempdir().unwrap();
    // Slot 1 holds frame 1.
    let bad = damaged(dir.path(), "len", |b| {
        put(b, slot_at(1, SlotField::Len), 1 << 31);
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

/// What the reader must make of one slot whose header holds `words` (the slot's 11 fields in
/// [`SlotField::ALL`] order) when asked for the sequence number `seq`.
fn expected_read(words: &[u32], seq: u64) -> Result<(u64, usize), &'static str> {
    let field = |f: SlotField| words[SlotField::ALL.iter().position(|x| *x == f).unwrap()];
    let slot_seq = u64::from(field(SlotField::SeqLo)) | u64::from(field(SlotField::SeqHi)) << 32;
    if field(SlotField::Lock) & 1 == 1 || slot_seq != seq {
        Err("overwritten")
    } else if field(SlotField::Len) as usize > DAMAGED_CAPACITY
        || field(SlotField::Format) != FrameFormat::Jpeg as u32
    {
        Err("corrupt")
    } else {
        Ok((seq, field(SlotField::Len) as usize))
    }
}

fn outcome(r: &Result<ipc::region::FrameMeta, ReadError>) -> Result<(u64, usize), &'static str> {
    match r {
        Ok(meta) => Ok((meta.seq, meta.len)),
        Err(ReadError::Overwritten) => Err("overwritten"),
        Err(ReadError::Corrupt(_)) => Err("corrupt"),
        Err(ReadError::Torn) => Err("torn"),
        Err(ReadError::Empty) => Err("empty"),
    }
}

/// One slot header's words, each field drawn so that every branch of the reader is taken
/// often: lock even or odd, length within the capacity or over it (and not a word multiple),
/// the JPEG format code or another, the rest anything.
fn slot_words() -> impl Strategy<Value = Vec<u32>> {
    SlotField::ALL
        .iter()
        .map(|f| match f {
            SlotField::Lock => any::<u32>().boxed(),
            SlotField::Len => (0..2 * DAMAGED_CAPACITY as u32).boxed(),
            SlotField::Format => prop_oneof![Just(FrameFormat::Jpeg as u32), any::<u32>()].boxed(),
            SlotField::SeqHi => prop_oneof![Just(0u32), any::<u32>()].boxed(),
            _ => any::<u32>().boxed(),
        })
        .collect::<Vec<_>>()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    /// Whatever the header's announcement of the newest frame and every slot header hold, the
    /// reader opens the region and reads each slot and the newest frame exactly as the slot's
    /// words say: the frame and its metadata when the lock is even, the sequence number
    /// matches, the length fits and the format is known; `Overwritten` or `Corrupt` (counted)
    /// otherwise; never a panic, never bytes beyond the slot. And with random bytes over the
    /// header's geometry too, opening refuses with an error.
    #[test]
    fn random_header_bytes_never_panic(
        slots in proptest::collection::vec(slot_words(), 3),
        data_seed in any::<u8>(),
        latest_lock in prop_oneof![3 => Just(0u32), 1 => any::<u32>()],
        latest_slot in prop_oneof![3 => 0u32..3, 1 => any::<u32>()],
        latest_seq in prop_oneof![Just(None), any::<u64>().prop_map(Some)],
        geometry in prop_oneof![3 => Just(None), 1 => proptest::collection::vec(any::<u8>(), 64).prop_map(Some)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut file = Vec::new();
        let bad = damaged(dir.path(), "random", |b| {
            for (slot, words) in slots.iter().enumerate() {
                for (field, word) in SlotField::ALL.iter().zip(words) {
                    put(b, slot_at(slot, *field), *word);
                }
                let data = slot_at(slot, SlotField::Lock) + SLOT_HEADER_SIZE;
                for (i, byte) in b[data..data + DAMAGED_CAPACITY].iter_mut().enumerate() {
                    *byte = (i as u8).wrapping_mul(31).wrapping_add(data_seed ^ slot as u8);
                }
            }
            // The newest frame's announcement: by default the sequence number its slot holds
            // (so the read goes on into the slot), else anything.
            let seq = latest_seq.unwrap_or_else(|| {
                slots.get(latest_slot as usize).map_or(1, |w| {
                    u64::from(w[2]) | u64::from(w[3]) << 32
                })
            });
            put(b, HeaderField::LatestLock.offset(), latest_lock);
            put(b, HeaderField::LatestSlot.offset(), latest_slot);
            put(b, HeaderField::LatestSeqLo.offset(), seq as u32);
            put(b, HeaderField::LatestSeqHi.offset(), (seq >> 32) as u32);
            if let Some(g) = &geometry {
                b[..64].copy_from_slice(g);
            }
            file = b.clone();
        });
        let opened = RegionReader::open(&bad);
        if geometry.is_some() {
            prop_assert!(opened.is_err(), "random header bytes were accepted");
            return Ok(());
        }
        let reader = opened.unwrap();
        let mut buf = Vec::new();
        let corrupt = std::cell::Cell::new(0);
        let check = |got: Result<ipc::region::FrameMeta, ReadError>, slot: usize, want: Result<(u64, usize), &'static str>, buf: &[u8]| -> Result<(), TestCaseError> {
            prop_assert_eq!(outcome(&got), want, "slot {} words {:?}", slot, slots[slot.min(2)]);
            if want == Err("corrupt") {
                corrupt.set(corrupt.get() + 1);
            }
            if let Ok(meta) = got {
                let words = &slots[slot];
                let data = slot_at(slot, SlotField::Lock) + SLOT_HEADER_SIZE;
                prop_assert_eq!(buf, &file[data..data + meta.len]);
                prop_assert_eq!(meta.slot as usize, slot);
                prop_assert_eq!((meta.width, meta.height), (words[8], words[9]));
                prop_assert_eq!(meta.mono_ns, u64::from(words[4]) | u64::from(words[5]) << 32);
                prop_assert_eq!(meta.wall_ns, u64::from(words[6]) | u64::from(words[7]) << 32);
            }
            Ok(())
        };
        for (slot, words) in slots.iter().enumerate() {
            let seq = u64::from(words[2]) | u64::from(words[3]) << 32;
            let got = reader.read_slot(slot as u32, seq, &mut buf);
            check(got, slot, expected_read(words, seq), &buf)?;
            let got = reader.read_slot(slot as u32, seq.wrapping_add(1), &mut buf);
            check(got, slot, Err("overwritten"), &buf)?;
        }
        // A slot index out of range is corrupt, never an out-of-bounds read.
        let got = reader.read_slot(3 + latest_slot % 8, 1, &mut buf);
        check(got, 3, Err("corrupt"), &buf)?;
        let seq = u64::from(get(&file, HeaderField::LatestSeqLo.offset()))
            | u64::from(get(&file, HeaderField::LatestSeqHi.offset())) << 32;
        let want = if latest_lock & 1 == 1 {
            // The writer seems to be inside the announcement for ever: bounded retries, torn.
            Err("torn")
        } else if seq == 0 {
            Err("empty")
        } else if latest_slot >= 3 {
            Err("corrupt")
        } else {
            expected_read(&slots[latest_slot as usize], seq)
        };
        let got = reader.read_latest(&mut buf);
        check(got, latest_slot as usize, want, &buf)?;
        prop_assert_eq!(reader.stats().corrupt, corrupt.get());
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

/// Size of the tmpfs of the no-space test, and a capacity whose region (three slots) cannot
/// fit it.
const NOSPACE_TMPFS: usize = 256 << 10;
const NOSPACE_CAPACITY: usize = 1 << 20;

const CROSS_FRAMES: u64 = 100_000;
const CROSS_CAPACITY: usize = 64 * 1024;
const ROLE_VAR: &str = "MECAM_IPC_TEST_ROLE";

/// Runs this test binary again as a child that plays `role` (see `child_entry`).
fn spawn_role(role: &str, dir: &Path) -> Child {
    role_command(&[], role, dir).spawn().unwrap()
}

/// The command that runs this test binary as `role`, behind the `wrapper` command (if any).
fn role_command(wrapper: &[&str], role: &str, dir: &Path) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match wrapper {
        [] => Command::new(&exe),
        [first, rest @ ..] => {
            let mut c = Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
    };
    cmd.args([
        "child_entry",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE_VAR, role)
    .env("MECAM_IPC_TEST_DIR", dir)
    .stdout(std::process::Stdio::piped());
    cmd
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
        "umask" => {
            // The region's mode must not depend on the umask of whoever starts the writer.
            for (name, mask) in [("open", 0o000), ("tight", 0o077), ("usual", 0o022)] {
                nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
                let file = dir.join(name);
                let w = RegionWriter::create(&file, 4096).unwrap();
                let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
                println!("MODE {name}={mode:o}");
                drop(w);
            }
        }
        "nospace" => {
            // Inside a private mount namespace (unshare -m): a tmpfs far smaller than a region.
            let small = dir.join("small");
            std::fs::create_dir(&small).unwrap();
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={NOSPACE_TMPFS}")])
                .arg("mecam-test")
                .arg(&small)
                .status()
                .unwrap();
            assert!(status.success(), "mount -t tmpfs failed: {status}");
            let result = RegionWriter::create(&small.join("frames"), NOSPACE_CAPACITY);
            let left: Vec<_> = std::fs::read_dir(&small)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            match result {
                Err(e @ RegionError::NoSpace { .. }) => {
                    println!("NOSPACE refused left={left:?} error={e}")
                }
                Err(e) => println!("NOSPACE other left={left:?} error={e}"),
                Ok(mut w) => {
                    // The old behaviour: created sparse. The first frame would then fault.
                    println!("NOSPACE created left={left:?}");
                    let frame = frame_for(1, NOSPACE_CAPACITY);
                    w.publish(&info(1), &frame).unwrap();
                }
            }
            // A region that fits the same file system is created (the control).
            let fits = RegionWriter::create(&small.join("fits"), 4096);
            println!("FITS {}", fits.is_ok());
        }
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

#[test]
fn the_region_file_is_0640_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = succeeded(spawn_role("umask", dir.path()));
    for name in ["open", "tight", "usual"] {
        assert!(
            stdout.contains(&format!("MODE {name}=640")),
            "the region's mode follows the umask ({name}): {stdout}"
        );
    }
}

/// What the child printed, once it exited successfully (printed too).
fn succeeded(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    assert!(
        out.status.success(),
        "child failed ({}): {stdout}",
        out.status
    );
    stdout
}

/// Whether this process may mount (root): the no-space test needs a small tmpfs of its own.
/// Under CI a missing prerequisite fails the test instead of skipping it.
fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() && Command::new("unshare").arg("--version").output().is_ok()
    {
        return true;
    }
    let why =
        "needs root and unshare (util-linux) to mount a small tmpfs in a private mount namespace";
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {why} (CI is set: a skip would pass silently)"
    );
    eprintln!("SKIPPED {test}: {why}");
    false
}

#[test]
fn a_full_file_system_refuses_the_region_at_creation_naming_the_directory_and_size() {
    if !root_or_skip("a_full_file_system_refuses_the_region") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // `unshare -m`: the tmpfs lives in the child's own mount namespace and goes with it.
    let child = role_command(
        &["unshare", "--mount", "--propagation", "private"],
        "nospace",
        dir.path(),
    )
    .spawn()
    .unwrap();
    let stdout = succeeded(child);
    let line = stdout
        .lines()
        .find_map(|l| l.find("NOSPACE").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no NOSPACE line: {stdout}"));
    let needed = ipc::region::layout::region_size(NOSPACE_CAPACITY);
    assert!(
        line.starts_with("NOSPACE refused"),
        "a region that cannot fit was not refused at creation: {line}"
    );
    let small = dir.path().join("small");
    assert!(
        line.contains(&small.display().to_string()) && line.contains(&needed.to_string()),
        "the error names neither the directory nor the bytes needed: {line}"
    );
    assert!(
        line.contains("left=[]"),
        "the refused region left a file behind: {line}"
    );
    assert!(
        stdout.contains("FITS true"),
        "a region that fits the same tmpfs was refused: {stdout}"
    );
    assert!(
        !small.join("frames").exists(),
        "the tmpfs leaked out of the namespace"
    );
}

#[test]
fn every_page_of_a_new_region_is_allocated_before_the_first_frame() {
    use std::os::unix::fs::MetadataExt as _;
    // On tmpfs as on a disk: a sparse file would get its pages at the first frame, or fail to.
    for parent in ["/dev/shm", "/tmp"] {
        let Ok(dir) = tempfile::tempdir_in(parent) else {
            continue;
        };
        let path = dir.path().join("frames");
        let writer = RegionWriter::create(&path, 256 << 10).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let allocated = meta.blocks() * 512;
        println!("{parent}: {} bytes, {allocated} allocated", meta.len());
        assert_eq!(
            meta.len(),
            ipc::region::layout::region_size(256 << 10) as u64
        );
        assert!(
            allocated >= meta.len(),
            "{parent}: only {allocated} of {} bytes allocated: the region is sparse",
            meta.len()
        );
        drop(writer);
    }
}
