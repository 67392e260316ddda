//! Real-footage scenarios: `tests/footage/labels.toml` turned into JPEG frames.
//!
//! The footage itself is not in the repository: `scripts/footage` downloads it from the
//! packages named in the labels into `$MECAM_FOOTAGE_CACHE` (default
//! `/var/cache/mecam/footage`). Each scenario is turned into frames once by ffmpeg (`-f mjpeg
//! -q:v 5` at the labels' `fps`, scaled to its `size`); the MJPEG stream is split into its
//! JPEGs and kept in `<cache>/frames/`, named by a hash of the ffmpeg arguments, so a later
//! test process reads it back without running ffmpeg. Within one process the scenarios are
//! loaded once.
//!
//! [`load`] returns an error that says to run `scripts/footage` when the cache or ffmpeg is
//! missing; [`load_or_skip`] turns that into a failure under CI and a `SKIPPED` line
//! otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

/// The labels file, relative to motion-svc's manifest directory.
pub const LABELS: &str = "tests/footage/labels.toml";
/// Where `scripts/footage` puts the files when `MECAM_FOOTAGE_CACHE` is not set.
pub const DEFAULT_CACHE: &str = "/var/cache/mecam/footage";
/// JPEG quality of the frames (ffmpeg's `-q:v`, 2 best to 31 worst).
const QUALITY: u32 = 5;
/// Changes when the way frames are made or stored changes: old cached frames are not reused.
const FORMAT: &str = "footage-frames-v1";

/// Whether the scenario has labelled motion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// At least one motion window.
    Positive,
    /// Nothing moves (light, noise).
    Negative,
}

/// One labelled scenario, ready to feed to the analyzer.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name in the labels file.
    pub name: String,
    /// Positive (motion windows) or negative (none).
    pub kind: Kind,
    /// `real video` (an unedited range of a real clip) or `built` (a filter graph over real
    /// frames).
    pub origin: String,
    /// Frame size, pixels.
    pub width: u32,
    /// Frame size, pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// The labelled length.
    pub duration: Duration,
    /// Frame k's time (k / fps) and its JPEG.
    pub frames: Vec<(Duration, Vec<u8>)>,
    /// Windows of real motion, seconds from the first frame.
    pub motion: Vec<(f64, f64)>,
    /// Windows where an event is neither required nor wrong, seconds.
    pub ignore: Vec<(f64, f64)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Labels {
    fps: u32,
    source: Vec<Source>,
    scenario: Vec<Spec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation fields, read by people
struct Source {
    name: String,
    file: String,
    package: String,
    version: String,
    registry: String,
    member: String,
    licence: String,
    about: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation fields, read by people
struct Spec {
    name: String,
    kind: Kind,
    origin: String,
    duration: f64,
    size: [u32; 2],
    motion: Vec<[f64; 2]>,
    #[serde(default)]
    ignore: Vec<[f64; 2]>,
    /// A real clip: its source and where in it the scenario starts.
    source: Option<String>,
    start: Option<f64>,
    /// A built scenario: its inputs and the filter graph over them, ending in `[v]`.
    #[serde(default)]
    inputs: Vec<Input>,
    graph: Option<String>,
    about: String,
    labelled: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    /// A source by name (`-ss seek -t duration -i file`, or `-loop 1 -i file` for an image).
    source: Option<String>,
    seek: Option<f64>,
    duration: Option<f64>,
    #[serde(default)]
    image: bool,
    /// A generated input (`-f lavfi -i ...`): a flat frame for noise, for example.
    lavfi: Option<String>,
}

/// The footage cache: `$MECAM_FOOTAGE_CACHE` or [`DEFAULT_CACHE`].
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MECAM_FOOTAGE_CACHE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

fn labels_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(LABELS)
}

/// Every scenario of the labels file, converted once per process.
///
/// # Errors
/// The footage or ffmpeg is missing (the message says to run `scripts/footage`), the labels
/// do not parse, or ffmpeg fails on a scenario.
pub fn load() -> Result<&'static [Scenario], String> {
    static LOADED: OnceLock<Result<Vec<Scenario>, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| load_from(&labels_path(), &cache_dir()))
        .as_deref()
        .map_err(Clone::clone)
}

/// [`load`], or `None` after printing `SKIPPED: ...` when the footage is missing. Under CI
/// (`CI` set) a missing footage is a failure: this panics with the message instead.
pub fn load_or_skip() -> Option<Vec<Scenario>> {
    match load() {
        Ok(scenarios) => Some(scenarios.to_vec()),
        Err(e) if std::env::var_os("CI").is_some() => panic!("{e}"),
        Err(e) => {
            eprintln!("\n!!!!! SKIPPED: {e}\n");
            None
        }
    }
}

/// The scenarios of the labels file at `labels`, with their footage in `cache`.
///
/// # Errors
/// As [`load`].
pub fn load_from(labels: &Path, cache: &Path) -> Result<Vec<Scenario>, String> {
    let text = std::fs::read_to_string(labels)
        .map_err(|e| format!("cannot read {}: {e}", labels.display()))?;
    let labels: Labels = toml::from_str(&text).map_err(|e| format!("{}: {e}", labels.display()))?;
    if labels.fps == 0 {
        return Err("labels: fps must be above 0".into());
    }
    let fetch = format!(
        "run scripts/footage to download the real footage into {} (MECAM_FOOTAGE_CACHE, \
         default {DEFAULT_CACHE})",
        cache.display()
    );
    for s in &labels.source {
        let path = cache.join(&s.file);
        if !path.metadata().is_ok_and(|m| m.is_file() && m.len() > 0) {
            return Err(format!(
                "footage file {} ({} {} from {}) is missing: {fetch}",
                path.display(),
                s.package,
                s.version,
                s.registry
            ));
        }
    }
    let jobs = labels
        .scenario
        .iter()
        .map(|spec| ffmpeg_args(spec, &labels, cache))
        .collect::<Result<Vec<_>, _>>()?;
    match Command::new("ffmpeg").arg("-version").output() {
        Ok(out) if out.status.success() => {}
        _ => {
            return Err(format!(
                "ffmpeg is not installed (apt-get install ffmpeg); then {fetch}"
            ));
        }
    }
    let frames_dir = cache.join("frames");
    // The cache may be read-only to this user: then the frames are only kept in memory.
    let _ = std::fs::create_dir_all(&frames_dir);

    // Two at a time: each ffmpeg is one process, the machine has few cores.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut converted: Vec<Option<Result<Vec<Vec<u8>>, String>>> = vec![None; jobs.len()];
    let results = std::sync::Mutex::new(&mut converted);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((spec, args)) = labels.scenario.get(i).zip(jobs.get(i)) else {
                        break;
                    };
                    let r = frames_of(&spec.name, args, &frames_dir);
                    results.lock().unwrap()[i] = Some(r);
                }
            });
        }
    });

    let mut scenarios = Vec::new();
    for (spec, jpegs) in labels.scenario.iter().zip(converted) {
        let jpegs = jpegs.expect("every scenario was converted")?;
        let step = Duration::from_secs(1) / labels.fps;
        let window = |w: &[f64; 2]| (w[0], w[1]);
        scenarios.push(Scenario {
            name: spec.name.clone(),
            kind: spec.kind,
            origin: spec.origin.clone(),
            width: spec.size[0],
            height: spec.size[1],
            fps: labels.fps,
            duration: Duration::from_secs_f64(spec.duration),
            frames: (0u32..)
                .zip(jpegs)
                .map(|(k, jpeg)| (step * k, jpeg))
                .collect(),
            motion: spec.motion.iter().map(window).collect(),
            ignore: spec.ignore.iter().map(window).collect(),
        });
    }
    Ok(scenarios)
}

/// ffmpeg's arguments for one scenario, writing MJPEG to its standard output.
fn ffmpeg_args(spec: &Spec, labels: &Labels, cache: &Path) -> Result<Vec<String>, String> {
    let source_file = |name: &str| -> Result<String, String> {
        let s = labels
            .source
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("{}: no source named {name:?}", spec.name))?;
        Ok(cache.join(&s.file).to_string_lossy().into_owned())
    };
    let [w, h] = spec.size;
    let fps = labels.fps;
    let mut args: Vec<String> = ["-nostdin", "-v", "error"].map(String::from).to_vec();
    match (&spec.source, &spec.graph) {
        (Some(source), None) => {
            let start = spec.start.unwrap_or(0.0);
            args.extend([
                "-ss".into(),
                format!("{start}"),
                "-t".into(),
                format!("{}", spec.duration),
                "-i".into(),
                source_file(source)?,
                "-vf".into(),
                format!("fps={fps},scale={w}:{h}"),
            ]);
        }
        (None, Some(graph)) => {
            for input in &spec.inputs {
                match (&input.source, &input.lavfi) {
                    (Some(source), None) => {
                        if input.image {
                            args.extend(["-loop", "1", "-framerate"].map(String::from));
                            args.push(fps.to_string());
                        }
                        if let Some(seek) = input.seek {
                            args.extend(["-ss".into(), format!("{seek}")]);
                        }
                        if let Some(d) = input.duration {
                            args.extend(["-t".into(), format!("{d}")]);
                        }
                        args.extend(["-i".into(), source_file(source)?]);
                    }
                    (None, Some(lavfi)) => {
                        args.extend(["-f", "lavfi", "-i"].map(String::from));
                        args.push(lavfi.clone());
                    }
                    _ => {
                        return Err(format!(
                            "{}: an input has either `source` or `lavfi`",
                            spec.name
                        ));
                    }
                }
            }
            let graph: String = graph.lines().map(str::trim).collect();
            args.extend([
                "-filter_complex".into(),
                format!("{graph};[v]fps={fps},scale={w}:{h}[out]"),
                "-map".into(),
                "[out]".into(),
                "-t".into(),
                format!("{}", spec.duration),
            ]);
        }
        _ => {
            return Err(format!(
                "{}: a scenario has either `source` (a real clip) or `graph` (built)",
                spec.name
            ));
        }
    }
    args.extend(["-an", "-f", "mjpeg", "-q:v"].map(String::from));
    args.push(QUALITY.to_string());
    args.push("-".into());
    Ok(args)
}

/// The JPEGs of one scenario: from `<frames_dir>/<hash>.mjpeg` when it is there, else from
/// ffmpeg (and then stored there).
fn frames_of(name: &str, args: &[String], frames_dir: &Path) -> Result<Vec<Vec<u8>>, String> {
    let key = fnv1a(std::iter::once(FORMAT).chain(args.iter().map(String::as_str)));
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let stored = frames_dir.join(format!("{slug}.{key:016x}.mjpeg"));
    if let Ok(bytes) = std::fs::read(&stored) {
        if let Ok(jpegs) = split_jpegs(&bytes) {
            if !jpegs.is_empty() {
                return Ok(jpegs.into_iter().map(<[u8]>::to_vec).collect());
            }
        }
    }
    let out = Command::new("ffmpeg")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{name}: cannot run ffmpeg: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{name}: ffmpeg {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let jpegs = split_jpegs(&out.stdout).map_err(|e| format!("{name}: ffmpeg's output: {e}"))?;
    if jpegs.is_empty() {
        return Err(format!("{name}: ffmpeg gave no frame"));
    }
    // Written aside and renamed: a concurrent test process never reads half a file.
    let tmp = stored.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, &out.stdout).is_ok() && std::fs::rename(&tmp, &stored).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    // Frames of this scenario made with older arguments are of no further use.
    if let Ok(dir) = std::fs::read_dir(frames_dir) {
        let prefix = format!("{slug}.");
        for entry in dir.flatten() {
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if file.starts_with(&prefix)
                && file.ends_with(".mjpeg")
                && file.len() == prefix.len() + 16 + ".mjpeg".len()
                && entry.path() != stored
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(jpegs.into_iter().map(<[u8]>::to_vec).collect())
}

/// 64-bit FNV-1a over the parts, each ended by a zero byte: stable across Rust versions.
fn fnv1a<'a>(parts: impl Iterator<Item = &'a str>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.as_bytes().iter().chain(&[0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Splits a stream of concatenated JPEGs (ffmpeg's `-f mjpeg`) into the JPEGs, each from its
/// SOI marker to its EOI marker. The markers are followed, not searched for: a marker
/// segment is skipped by its length, and entropy-coded data ends at the first 0xFF that is
/// not a stuffed 0xFF00 or a restart marker, so bytes inside a segment never split a frame.
///
/// # Errors
/// The data does not start with SOI, or a JPEG is cut short.
pub fn split_jpegs(data: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut jpegs = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let len = jpeg_len(&data[start..])
            .map_err(|e| format!("frame {} at byte {start}: {e}", jpegs.len()))?;
        jpegs.push(&data[start..start + len]);
        start += len;
    }
    Ok(jpegs)
}

/// Length of the JPEG at the start of `d`, SOI to EOI inclusive.
fn jpeg_len(d: &[u8]) -> Result<usize, String> {
    if d.get(..2) != Some(&[0xFF, 0xD8][..]) {
        return Err("no SOI marker".into());
    }
    let mut i = 2;
    loop {
        // Fill bytes (0xFF) may stand before a marker.
        while d.get(i) == Some(&0xFF) && d.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (d.get(i), d.get(i + 1)) else {
            return Err(format!("no marker at byte {i}"));
        };
        i += 2;
        match marker {
            0xD9 => return Ok(i),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let len = match d.get(i..i + 2) {
            Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
            None => return Err("cut short in a marker segment".into()),
        };
        if len < 2 || i + len > d.len() {
            return Err(format!("marker 0x{marker:02X} segment runs past the end"));
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data up to the next marker that is not a restart marker.
            loop {
                match (d.get(i), d.get(i + 1)) {
                    (Some(&0xFF), Some(&b)) if b == 0x00 || (0xD0..=0xD7).contains(&b) => i += 2,
                    (Some(&0xFF), Some(&0xFF)) => i += 1,
                    (Some(&0xFF), Some(_)) => break,
                    (Some(_), _) => i += 1,
                    (None, _) => return Err("cut short in entropy-coded data".into()),
                }
            }
        }
    }
}
