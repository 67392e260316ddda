//! Accuracy suite: labelled scenarios rendered by the synthetic camera
//! (`capture_svc::synthetic`, the scenes `capture-svc --source synthetic` plays) in-process,
//! faster than real time, and run through the same [`Analyzer`] the service uses.
//!
//! Each scenario is a scene script in the documented format (see capture-svc's README). The
//! labels are the script's own truth: a motion window is a [`Script::motion_intervals`]
//! interval of an object that [`Scene::objects_in_view`] shows outside the masks at some
//! frame; a scenario without one is a negative. Only what is not the scene stays in this
//! harness: a camera restart (the frames stop, the sequence numbers start again from 0 after
//! the analyzer is told the camera was lost, a few grey frames). The test prints a table of
//! event precision, recall, start latency and false events per hour of negatives, and fails if
//! any positive is missed or any negative fires.

mod support;

use std::time::Duration;

use capture_svc::synthetic::{Scene, Script};
use motion_svc::analyzer::{Analyzer, FrameInput};
use motion_svc::config::MotionConfig;
use motion_svc::event::Transition;
use motion_svc::geometry::Polygon;
use support::jpeg::encode_gray;

const W: u32 = 320;
const H: u32 = 240;
/// Camera frames per second (the analyzer takes 5 of them).
const FPS: u64 = 10;
/// An event that starts up to this long after its motion window ends still belongs to it.
const GRACE_S: f64 = 3.0;
/// Objects with this name are foliage: they move, but never make a motion window.
const FOLIAGE: &str = "branch";
/// The script text that stands for the demo scene `capture-svc --source synthetic` plays.
const DEMO: &str = "<demo>";

struct Scenario {
    name: &'static str,
    seconds: u64,
    /// The scene script (TOML, capture-svc's synthetic script format).
    script: &'static str,
    /// Masked out in the motion config (the branch's corner).
    masked: bool,
    /// Camera restart: frames stop at .0 for .1 seconds, then come back with new sequence
    /// numbers and a few grey frames.
    restart: Option<(f64, f64)>,
}

const BASE: Scenario = Scenario {
    name: "",
    seconds: 30,
    script: "",
    masked: false,
    restart: None,
};

/// The mask over the top-left corner, where the branch sways.
fn branch_mask() -> Vec<Polygon> {
    vec![Polygon(vec![
        [0.0, 0.0],
        [0.3, 0.0],
        [0.3, 0.35],
        [0.0, 0.35],
    ])]
}

/// Script text: a person, about 10% x 45% of the frame in dark clothes, crossing left to
/// right from `$start` to `$end` seconds (in view exactly then).
macro_rules! person {
    ($start:literal, $end:literal) => {
        concat!(
            "[[object]]\nname = \"person\"\nsize = [0.1, 0.45]\ncolor = [70, 60, 55]\n",
            "start = ",
            $start,
            "\nend = ",
            $end,
            "\n",
            "from = [-0.05, 0.575]\nto = [1.05, 0.575]\n",
        )
    };
}

/// Script text: a branch swaying in the top-left corner for a minute (inside [`branch_mask`]
/// for all of its sway); a macro so that `concat!` can put it beside a person.
macro_rules! branch {
    () => {
        r#"
            [[object]]
            name = "branch"
            shape = "ellipse"
            size = [0.2, 0.26]
            color = [40, 75, 35]
            start = 0.0
            end = 60.0
            from = [0.15, 0.17]
            to = [0.15, 0.17]
            sway = [0.04, 0.01]
            sway_hz = 0.4
        "#
    };
}

/// The branch alone.
const BRANCH: &str = branch!();

fn positives() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "demo scene (person, ball)",
            seconds: 60,
            script: DEMO,
            ..BASE
        },
        Scenario {
            name: "small far person (0.6 %)",
            // 36x76 px in a 768x576 frame, walking slowly across and out.
            script: r#"
                [[object]]
                name = "person"
                size = [0.047, 0.13]
                color = [70, 60, 55]
                start = 4.0
                end = 24.0
                from = [-0.03, 0.5]
                to = [1.03, 0.5]
            "#,
            ..BASE
        },
        Scenario {
            name: "person past a swaying branch",
            script: concat!(person!(12.0, 16.0), branch!()),
            ..BASE
        },
        Scenario {
            name: "person crossing",
            // 4 s across.
            script: person!(10.0, 14.0),
            ..BASE
        },
        Scenario {
            name: "slow walker",
            script: person!(5.0, 25.0),
            ..BASE
        },
        Scenario {
            name: "small object near threshold",
            // 1.2% of the frame (the medium preset's threshold is 0.8%), moving slowly.
            script: r#"
                [[object]]
                name = "cat"
                size = [0.1, 0.12]
                color = [225, 215, 200]
                start = 10.0
                end = 16.0
                from = [0.25, 0.66]
                to = [0.85, 0.66]
            "#,
            ..BASE
        },
        Scenario {
            name: "motion during light change",
            // The light falls to half from 8.5 s to 11.5 s: it is changing as the person
            // enters at 10 s.
            script: concat!(
                person!(10.0, 14.0),
                r#"
                [[light]]
                at = 8.5
                level = 0.5
                ramp = 3.0
                "#
            ),
            ..BASE
        },
    ]
}

fn negatives() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "light step",
            script: r#"
                [[light]]
                at = 10.0
                level = 1.5
                [[light]]
                at = 20.0
                level = 0.6
            "#,
            ..BASE
        },
        Scenario {
            name: "slow dusk ramp",
            seconds: 60,
            // The light falls to 28% over a minute while the camera's gain brings the noise
            // from 2 to 8 grey levels.
            script: r#"
                [[light]]
                at = 0.0
                level = 0.28
                ramp = 60.0
                noise = 8.0
            "#,
            ..BASE
        },
        Scenario {
            name: "flicker",
            // Irregular, ±10%, 13 new levels a second: the analysed frames (5 of 10 a second)
            // jump between levels too, which a regular alternation would not show them.
            script: r#"
                [flicker]
                amplitude = 0.1
                hz = 13.0
                wave = "random"
            "#,
            ..BASE
        },
        Scenario {
            name: "night sensor noise",
            script: r#"
                [[light]]
                at = 0.0
                level = 0.35
                noise = 14.0
            "#,
            ..BASE
        },
        Scenario {
            name: "swaying branch (masked)",
            script: BRANCH,
            masked: true,
            ..BASE
        },
        Scenario {
            name: "swaying branch (unmasked)",
            seconds: 60,
            script: BRANCH,
            ..BASE
        },
        Scenario {
            name: "JPEG quality change",
            script: r#"
                quality = 85
                [[quality_change]]
                at = 10.0
                quality = 25
                [[quality_change]]
                at = 20.0
                quality = 60
            "#,
            ..BASE
        },
        Scenario {
            name: "camera restart",
            // The camera comes back from its restart with a new exposure.
            script: r#"
                [[light]]
                at = 14.0
                level = 1.3
            "#,
            restart: Some((12.0, 2.0)),
            ..BASE
        },
    ]
}

fn scene(s: &Scenario) -> Scene {
    let script = if s.script == DEMO {
        Script::default_demo()
    } else {
        Script::from_toml(s.script).unwrap_or_else(|e| panic!("{}: {e}", s.name))
    };
    Scene::new(script, W, H)
}

fn frame_time(k: u64) -> Duration {
    Duration::from_millis(k * 1000 / FPS)
}

/// The scenario's motion windows (seconds), from the script's truth: each moving interval of
/// an object that is outside every mask at one frame of it at least, and not foliage.
fn motion_windows(s: &Scenario) -> Vec<(f64, f64)> {
    let scene = scene(s);
    let masks = if s.masked { branch_mask() } else { vec![] };
    let masked = |b: [f32; 4]| {
        let corners = [
            (b[0], b[1]),
            (b[0] + b[2], b[1]),
            (b[0], b[1] + b[3]),
            (b[0] + b[2], b[1] + b[3]),
        ];
        masks
            .iter()
            .any(|m| corners.iter().all(|&(x, y)| m.contains(x, y)))
    };
    scene
        .script()
        .motion_intervals()
        .into_iter()
        .filter(|(name, from, to)| {
            name != FOLIAGE
                && (0..s.seconds * FPS)
                    .map(frame_time)
                    .filter(|t| t >= from && t <= to)
                    .any(|t| {
                        scene
                            .objects_in_view(t)
                            .iter()
                            .any(|o| &o.name == name && o.moving && !masked(o.bbox))
                    })
        })
        .map(|(_, from, to)| (from.as_secs_f64(), to.as_secs_f64()))
        .collect()
}

struct Run {
    /// Event start times, seconds.
    events: Vec<f64>,
    /// Times of the frames the analyzer analysed.
    analysed: Vec<Duration>,
}

fn run(s: &Scenario, mut config: MotionConfig, masked: bool) -> Run {
    if masked {
        config.masks = branch_mask();
    }
    let mut a = Analyzer::new(&config.validate().unwrap()).unwrap();
    let mut scene = scene(s);
    let grey = encode_gray(W as usize, H as usize, &vec![128; (W * H) as usize], 80).unwrap();
    let mut jpeg = Vec::new();
    let mut run = Run {
        events: Vec::new(),
        analysed: Vec::new(),
    };
    let mut seq = 0u64;
    let mut lost = false;
    for k in 0..s.seconds * FPS {
        let at = frame_time(k);
        let t = at.as_secs_f64();
        let mut grey_frame = false;
        if let Some((from, gap)) = s.restart {
            if t >= from && t < from + gap {
                if !lost {
                    let _ = a.camera_lost();
                    lost = true;
                    seq = 0;
                }
                continue;
            }
            grey_frame = t >= from + gap && t < from + gap + 0.3;
        }
        let frame: &[u8] = if grey_frame {
            &grey
        } else {
            scene.render_jpeg(at, &mut jpeg);
            &jpeg
        };
        let out = a.offer(FrameInput {
            seq,
            mono_ns: 1_000_000_000 + at.as_nanos() as u64,
            wall_ns: 0,
            jpeg: frame,
        });
        seq += 1;
        if out.analysed.is_some() {
            run.analysed.push(at);
        }
        if let Transition::Start { .. } = out.transition {
            run.events.push(t);
        }
    }
    run
}

fn config() -> MotionConfig {
    MotionConfig {
        analysis_fps: 5.0,
        min_duration_s: 0.4,
        quiet_gap_s: 3.0,
        ..MotionConfig::default()
    }
}

#[test]
fn scenarios_table() {
    let (positives, negatives) = (positives(), negatives());
    let mut rows = Vec::new();
    let (mut tp, mut fp, mut windows, mut detected) = (0usize, 0usize, 0usize, 0usize);
    let mut neg_seconds = 0u64;
    let mut failures = Vec::new();
    let mut latencies = Vec::new();
    for s in &positives {
        let truth = motion_windows(s);
        assert!(!truth.is_empty(), "{}: the script has no motion", s.name);
        let r = run(s, config(), s.masked);
        let mut in_windows = 0;
        let mut first_latency = None;
        for &(m0, m1) in &truth {
            windows += 1;
            let hits: Vec<f64> = r
                .events
                .iter()
                .copied()
                .filter(|&t| t >= m0 && t <= m1 + GRACE_S)
                .collect();
            in_windows += hits.len(); // a split event still belongs to the motion
            match hits.first() {
                Some(&first) => {
                    detected += 1;
                    latencies.push(first - m0);
                    first_latency.get_or_insert(first - m0);
                }
                None => failures.push(format!("missed: {} at {m0:.1}..{m1:.1} s", s.name)),
            }
        }
        tp += in_windows;
        let false_ev = r.events.len() - in_windows;
        fp += false_ev;
        if false_ev > 0 {
            failures.push(format!(
                "{false_ev} false event(s) outside the motion in {}: {:?}",
                s.name, r.events
            ));
        }
        let latency = first_latency.map_or("MISSED".to_owned(), |l| format!("{l:.1}"));
        rows.push(format!(
            "| {:<28} | positive | {:>6} | {:>11} |",
            s.name,
            r.events.len(),
            latency
        ));
    }
    for s in &negatives {
        let truth = motion_windows(s);
        assert!(
            truth.is_empty(),
            "{}: the script has motion {truth:?}",
            s.name
        );
        let r = run(s, config(), s.masked);
        neg_seconds += s.seconds;
        fp += r.events.len();
        if !r.events.is_empty() {
            failures.push(format!("negative fired: {} at {:?}", s.name, r.events));
        }
        rows.push(format!(
            "| {:<28} | negative | {:>6} | {:>11} |",
            s.name,
            r.events.len(),
            "-"
        ));
    }
    let precision = if tp + fp == 0 {
        1.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let recall = detected as f64 / windows as f64;
    let mean_latency = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    let max_latency = latencies.iter().copied().fold(0.0, f64::max);
    let per_hour = fp as f64 / (neg_seconds as f64 / 3600.0);
    println!("\n| scenario                     | kind     | events | latency (s) |");
    println!("|------------------------------|----------|--------|-------------|");
    for r in &rows {
        println!("{r}");
    }
    println!(
        "\nprecision {precision:.2}, recall {recall:.2}, start latency mean {mean_latency:.1} s / max {max_latency:.1} s, false events per hour of negatives {per_hour:.1} ({neg_seconds} s of negatives)\n"
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The flicker negative means something only if the frames the analyzer takes (every other
/// one at 5 of 10 fps) flicker too.
#[test]
fn the_flicker_reaches_analysed_frames() {
    let flicker = negatives()
        .into_iter()
        .find(|s| s.name == "flicker")
        .unwrap();
    let analysed = run(&flicker, config(), false).analysed;
    let scene = scene(&flicker);
    let levels: Vec<f32> = analysed.iter().map(|&t| scene.light(t)).collect();
    let changes = levels.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        changes * 2 > levels.len(),
        "{changes} changes over {} analysed frames",
        levels.len()
    );
    let (lo, hi) = levels
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &l| (lo.min(l), hi.max(l)));
    assert!(hi - lo > 0.1, "the analysed frames' light spans {lo}..{hi}");
}

/// The positive "motion during light change" tests what it says only if the light is still
/// changing while the person comes into view.
#[test]
fn the_light_is_changing_while_the_person_enters() {
    let s = positives()
        .into_iter()
        .find(|s| s.name == "motion during light change")
        .unwrap();
    let (enter, _) = motion_windows(&s)[0];
    let scene = scene(&s);
    let at = |t: f64| scene.light(Duration::from_secs_f64(t));
    assert!(
        at(enter) - at(enter + 1.0) > 0.1,
        "light {} at entry, {} a second later",
        at(enter),
        at(enter + 1.0)
    );
}

/// Controls: the foliage negative is hard: the branch really moves between the frames the
/// analyzer takes, by more than the smallest object is tall.
#[test]
fn the_unmasked_branch_really_sways() {
    let branch = negatives()
        .into_iter()
        .find(|s| s.name == "swaying branch (unmasked)")
        .unwrap();
    let analysed = run(&branch, config(), false).analysed;
    let scene = scene(&branch);
    let xs: Vec<f32> = analysed
        .iter()
        .filter_map(|&t| scene.objects_in_view(t).first().map(|o| o.bbox[0]))
        .collect();
    let (lo, hi) = xs
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    assert!(hi - lo > 0.06, "the branch's left edge spans {lo}..{hi}");
}

/// One real-footage scenario through the analyzer: event starts and the clip window each
/// event would record (first motion less pre-capture to last motion plus post-capture).
fn run_footage(s: &support::footage::Scenario) -> Vec<(f64, f64)> {
    let cfg = config();
    let settings = cfg.validate().unwrap();
    let (pre, post) = (
        settings.events.pre_capture_s,
        settings.events.post_capture_s,
    );
    let mut a = Analyzer::new(&settings).unwrap();
    let mut clips = Vec::new();
    let mut open: Option<f64> = None;
    let end_of = |last: f64| last + post;
    for (seq, (at, jpeg)) in s.frames.iter().enumerate() {
        let out = a.offer(FrameInput {
            seq: seq as u64,
            mono_ns: 1_000_000_000 + at.as_nanos() as u64,
            wall_ns: 0,
            jpeg,
        });
        match out.transition {
            Transition::Start { first_motion } => open = Some(first_motion - 1.0 - pre),
            Transition::End { last_motion, .. } => {
                if let Some(from) = open.take() {
                    clips.push((from, end_of(last_motion - 1.0)));
                }
            }
            Transition::None => {}
        }
    }
    if let Some(from) = open {
        // Still going when the footage ends: the clip runs to the end.
        clips.push((from, s.duration.as_secs_f64() + post));
    }
    clips
}

/// Real camera footage and scenes built from real frames (`tests/footage/labels.toml`, fetched
/// by `scripts/footage`): every labelled motion makes an event whose clip covers it, no light
/// or noise negative fires. Prints one table.
#[test]
fn real_footage_table() {
    use support::footage::{self, Kind};
    let Some(scenarios) = footage::load_or_skip() else {
        return;
    };
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let (mut windows, mut detected, mut tp, mut fp) = (0usize, 0usize, 0usize, 0usize);
    for s in &scenarios {
        let clips = run_footage(s);
        // Event start: the start of the clip less the pre-capture is its first motion.
        let pre = config().pre_capture_s;
        let starts: Vec<f64> = clips.iter().map(|c| c.0 + pre).collect();
        let in_window =
            |t: f64, w: &[(f64, f64)]| w.iter().any(|&(m0, m1)| t >= m0 - 0.5 && t <= m1 + GRACE_S);
        let mut latency = None;
        let mut clip_ok = true;
        for &(m0, m1) in &s.motion {
            windows += 1;
            // An event detects the window when it starts before the window ends (or just
            // after) and its clip reaches into it: one that began in an `ignore` stretch
            // just before counts, with no latency.
            match clips
                .iter()
                .position(|&(from, to)| from + pre <= m1 + GRACE_S && to >= m0)
            {
                Some(i) => {
                    detected += 1;
                    latency.get_or_insert((starts[i] - m0).max(0.0));
                    // The clips together cover the motion from its start to its end.
                    let covered =
                        clips.iter().any(|c| c.0 <= m0) && clips.iter().any(|c| c.1 >= m1);
                    clip_ok &= covered;
                    if !covered {
                        failures.push(format!(
                            "{}: clips {clips:?} do not cover {m0}..{m1}",
                            s.name
                        ));
                    }
                }
                None => failures.push(format!("missed: {} at {m0:.1}..{m1:.1} s", s.name)),
            }
        }
        let false_starts: Vec<f64> = starts
            .iter()
            .copied()
            .filter(|&t| !in_window(t, &s.motion) && !in_window(t, &s.ignore))
            .collect();
        tp += starts.len() - false_starts.len();
        fp += false_starts.len();
        if !false_starts.is_empty() {
            failures.push(format!("false event(s) in {}: {false_starts:?}", s.name));
        }
        let expected = match s.kind {
            Kind::Positive => "positive",
            Kind::Negative => "negative",
        };
        rows.push(format!(
            "| {:<44} | {:<11} | {expected:<8} | {:>6} | {:>11} | {:>7} |",
            s.name,
            s.origin,
            starts.len(),
            latency.map_or("-".to_owned(), |l: f64| format!("{l:.1}")),
            if s.motion.is_empty() {
                "-"
            } else if clip_ok {
                "yes"
            } else {
                "NO"
            },
        ));
    }
    println!(
        "\n| scenario                                     | origin      | expected | events | latency (s) | clip ok |"
    );
    println!(
        "|----------------------------------------------|-------------|----------|--------|-------------|---------|"
    );
    for r in &rows {
        println!("{r}");
    }
    let precision = if tp + fp == 0 {
        1.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    println!(
        "\nreal footage: precision {precision:.2}, recall {:.2} ({detected} of {windows} motion windows)\n",
        detected as f64 / windows.max(1) as f64
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
