//! Is a series of memory samples rising? A least-squares slope and a verdict.

/// Minutes in a day: the span a short soak's trend is projected over.
pub const DAY_MIN: f64 = 1440.0;
/// A trend that, kept up for a day, would take more than this fraction of the room left under
/// the unit's `MemoryMax` counts as rising, however little it adds within the soak itself.
pub const LEAK_HEADROOM_FRACTION: f64 = 0.5;
/// Growth over the judged last half that is too small to project: a steady service's RSS
/// still steps by a page or a few as malloc first touches pages inside arenas it reserved at
/// start. Seen in web-svc's soak: 4 to 16 KiB steps at random times after warm-up, while
/// valgrind's massif showed its live heap exactly flat over the same workload. Two such steps
/// landing one in each quarter would otherwise project to tens of MiB a day.
pub const FIRST_TOUCH_NOISE_KIB: f64 = 32.0;

/// Least-squares slope of `ys` over `xs` (units of y per unit of x). `None` with fewer than two
/// distinct x values.
pub fn slope(xs: &[f64], ys: &[f64]) -> Option<f64> {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mx = xs[..n].iter().sum::<f64>() / nf;
    let my = ys[..n].iter().sum::<f64>() / nf;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for i in 0..n {
        sxy += (xs[i] - mx) * (ys[i] - my);
        sxx += (xs[i] - mx) * (xs[i] - mx);
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The verdict on one service's resident memory over a soak.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Slope in KiB per minute over the samples after warm-up.
    pub kib_per_min: f64,
    /// Slope in KiB per minute over the last half of those samples (the verdict's basis).
    pub tail_kib_per_min: f64,
    /// Resident memory (KiB) at the first sample after warm-up.
    pub first_kib: u64,
    /// Resident memory (KiB) at the last sample.
    pub last_kib: u64,
    /// Growth over a day, KiB: [`DAY_MIN`] × the smaller of the slopes of the last half's two
    /// halves (a leak climbs in both; one allocator step lands in only one).
    pub day_kib: f64,
    /// Room left under `MemoryMax` at the last sample, KiB, when a limit was given.
    pub headroom_kib: Option<f64>,
    /// Whether the trend counts as rising.
    pub rising: bool,
}

/// Judge samples `(seconds since start, rss KiB)`. Samples before `warmup_s` are ignored.
///
/// A bounded buffer filling up (a pre-capture ring, a pool) makes RSS climb and then stay; a
/// leak climbs at a steady rate for ever. So the verdict is taken on the last half of the
/// judged samples. Rising means either of:
/// - there the slope would add more than `tolerance_kib`, and the last sample is above the
///   first of that half by more than `tolerance_kib` too (allocator noise moves RSS by a few
///   hundred KiB either way);
/// - with `limit_kib` (the unit's `MemoryMax`) given, and the last half grown by more than
///   [`FIRST_TOUCH_NOISE_KIB`]: growth kept up for a day ([`DAY_MIN`])
///   would take more than [`LEAK_HEADROOM_FRACTION`] of the room left under the limit at the
///   last sample. This catches leaks too slow to show within a short soak. The rate projected
///   is the smaller of the slopes of the last half's first and second halves: a leak climbs in
///   both, while a single step of the allocator (an arena growing once by tens of KiB, which
///   projected over a day would look like a huge leak) lies in only one.
///
/// The slope over the whole judged span is reported beside it.
pub fn judge(
    samples: &[(f64, u64)],
    warmup_s: f64,
    tolerance_kib: f64,
    limit_kib: Option<f64>,
) -> Option<Verdict> {
    let kept: Vec<(f64, u64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warmup_s)
        .collect();
    let line = |part: &[(f64, u64)]| -> Option<(f64, f64)> {
        let xs: Vec<f64> = part.iter().map(|(t, _)| t / 60.0).collect();
        let ys: Vec<f64> = part.iter().map(|(_, r)| *r as f64).collect();
        Some((slope(&xs, &ys)?, xs.last()? - xs.first()?))
    };
    let (s, _) = line(&kept)?;
    let tail = &kept[kept.len() / 2..];
    let (tail_slope, tail_span) = line(tail)?;
    let (first_kib, last_kib) = (kept.first()?.1, kept.last()?.1);
    let tail_growth = last_kib as f64 - tail.first()?.1 as f64;
    let (q3, q4) = tail.split_at(tail.len() / 2);
    let sustained = match (line(q3), line(q4)) {
        (Some((a, _)), Some((b, _))) => a.min(b),
        _ => tail_slope,
    };
    let day_kib = sustained * DAY_MIN;
    let headroom_kib = limit_kib.map(|l| (l - last_kib as f64).max(0.0));
    let rising = (tail_slope * tail_span > tolerance_kib && tail_growth > tolerance_kib)
        || (tail_growth > FIRST_TOUCH_NOISE_KIB
            && headroom_kib.is_some_and(|room| day_kib > LEAK_HEADROOM_FRACTION * room));
    Some(Verdict {
        kib_per_min: s,
        tail_kib_per_min: tail_slope,
        first_kib,
        last_kib,
        day_kib,
        headroom_kib,
        rising,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_noisy_series_is_not_rising() {
        let samples: Vec<(f64, u64)> = (0..100)
            .map(|i| {
                (
                    f64::from(i) * 3.0,
                    10_000 + [0, 200, 50, 300][i as usize % 4],
                )
            })
            .collect();
        let v = judge(&samples, 0.0, 1024.0, None).unwrap();
        assert!(!v.rising, "{v:?}");
    }

    #[test]
    fn steady_leak_is_rising() {
        // 100 KiB per sample, every 3 s: 2,000 KiB/min.
        let samples: Vec<(f64, u64)> = (0..100)
            .map(|i| (f64::from(i) * 3.0, 10_000 + 100 * i as u64))
            .collect();
        let v = judge(&samples, 0.0, 1024.0, None).unwrap();
        assert!(v.rising, "{v:?}");
        assert!((v.kib_per_min - 2000.0).abs() < 1.0, "{v:?}");
    }

    #[test]
    fn growth_to_a_bound_is_not_rising_but_a_leak_is() {
        // Fills for 40 samples, then flat: a bounded buffer.
        let bounded: Vec<(f64, u64)> = (0..100)
            .map(|i| (f64::from(i), 1_000 * u64::from(i.min(40) as u32)))
            .collect();
        let v = judge(&bounded, 0.0, 512.0, None).unwrap();
        assert!(!v.rising, "{v:?}");
        assert!(
            v.kib_per_min > 0.0,
            "the whole-span slope still shows the fill: {v:?}"
        );
        // The same start, then still climbing at a tenth of the rate: a leak.
        let leak: Vec<(f64, u64)> = (0..100)
            .map(|i| {
                (
                    f64::from(i),
                    1_000 * u64::from(i.min(40) as u32) + 100 * u64::from(i as u32),
                )
            })
            .collect();
        assert!(judge(&leak, 0.0, 512.0, None).unwrap().rising);
    }

    /// A 3.5-minute soak's shape (the CI soak until the compressed day replaced it): a sample
    /// every 3 s for 210 s, 90 s of them warm-up, growing `kib_per_min` plus a page or two of
    /// jitter (what a steady service's RSS shows).
    fn short_soak(kib_per_min: f64) -> Vec<(f64, u64)> {
        (0..70)
            .map(|i| {
                let t = f64::from(i) * 3.0;
                let noise = [0.0, 8.0, 4.0, 12.0][i as usize % 4];
                (t, (30_000.0 + kib_per_min * t / 60.0 + noise) as u64)
            })
            .collect()
    }

    #[test]
    fn a_leak_too_slow_for_the_tolerance_fails_on_its_projection() {
        // 900 KiB/min: under 1 MiB in the last minute, so the growth rule lets it by...
        let samples = short_soak(900.0);
        let v = judge(&samples, 90.0, 1024.0, None).unwrap();
        assert!(!v.rising, "{v:?}");
        // ...but a day of it is 1.2 GiB, far over half the room under a 128 MiB limit.
        let v = judge(&samples, 90.0, 1024.0, Some(128.0 * 1024.0)).unwrap();
        assert!(v.rising, "{v:?}");
        assert!(
            (v.day_kib - 900.0 * DAY_MIN).abs() < 0.05 * 900.0 * DAY_MIN,
            "{v:?}"
        );
    }

    #[test]
    fn the_projection_threshold_is_the_stated_fraction_of_the_headroom() {
        // 64 MiB limit, ~30 MiB resident: ~34 MiB of room; half of it in a day is ~24 KiB/min.
        let limit = 64.0 * 1024.0;
        let room = limit - 30_000.0;
        let at = LEAK_HEADROOM_FRACTION * room / DAY_MIN;
        assert!(
            !judge(&short_soak(0.0), 90.0, 1024.0, Some(limit))
                .unwrap()
                .rising
        );
        assert!(
            !judge(&short_soak(at * 0.5), 90.0, 1024.0, Some(limit))
                .unwrap()
                .rising
        );
        // Over a 3.5-minute soak's one-minute last half, a leak must also outgrow the first-touch
        // noise (32 KiB, so about 34 KiB/min) to be told from it; slower ones are for the long
        // soak (`mecam-soak --hours`).
        assert!(
            judge(&short_soak(at * 4.0), 90.0, 1024.0, Some(limit))
                .unwrap()
                .rising
        );
        assert!(
            !judge(&short_soak(at * 2.0), 90.0, 1024.0, Some(limit))
                .unwrap()
                .rising,
            "24 KiB/min grows 23 KiB in the last minute: within the first-touch noise"
        );
    }

    #[test]
    fn growth_to_a_bound_is_not_rising_under_the_projection_either() {
        let bounded: Vec<(f64, u64)> = (0..100)
            .map(|i| {
                (
                    f64::from(i) * 3.0,
                    30_000 + 500 * u64::from(i.min(40) as u32),
                )
            })
            .collect();
        assert!(
            !judge(&bounded, 0.0, 1024.0, Some(64.0 * 1024.0))
                .unwrap()
                .rising
        );
    }

    #[test]
    fn one_allocator_step_is_not_projected_as_a_leak_but_steady_growth_is() {
        // capture-svc in a real soak: flat, one step of 68 KiB, flat. Here it lands in the
        // middle of the last half, where a single slope over that half is ~100 KiB/min.
        let limit = 96.0 * 1024.0;
        let step: Vec<(f64, u64)> = (0..70)
            .map(|i| (f64::from(i) * 3.0, if i < 56 { 6_388 } else { 6_456 }))
            .collect();
        let v = judge(&step, 90.0, 1024.0, Some(limit)).unwrap();
        assert!(!v.rising, "{v:?}");
        assert!(v.tail_kib_per_min > 50.0, "{v:?}");
        // The same 68 KiB spread over the last half: steady growth, a day of it is too much.
        let steady: Vec<(f64, u64)> = (0..70)
            .map(|i| {
                let grown = (i.max(50) - 50) as f64 * 68.0 / 20.0;
                (f64::from(i) * 3.0, 6_388 + grown as u64)
            })
            .collect();
        let v = judge(&steady, 90.0, 1024.0, Some(limit)).unwrap();
        assert!(v.rising, "{v:?}");
    }

    #[test]
    fn two_page_steps_after_warm_up_are_not_projected_as_a_leak() {
        // web-svc in a 3.5-minute soak: 8 KiB at 165 s and 8 KiB at 190 s, one in each quarter of the
        // last half, with a flat heap underneath (massif).
        let limit = 64.0 * 1024.0;
        let steps: Vec<(f64, u64)> = (0..70)
            .map(|i| {
                let t = f64::from(i) * 3.0;
                let kib = 22_392 + if t >= 165.0 { 8 } else { 0 } + if t >= 190.0 { 8 } else { 0 };
                (t, kib)
            })
            .collect();
        let v = judge(&steps, 90.0, 1024.0, Some(limit)).unwrap();
        assert!(!v.rising, "{v:?}");
        assert!(
            v.day_kib > 0.5 * (limit - 22_408.0),
            "projected alone it would fail: {v:?}"
        );
    }

    #[test]
    fn too_few_samples_give_no_verdict() {
        assert_eq!(judge(&[(0.0, 1)], 0.0, 1.0, None), None);
        assert_eq!(slope(&[1.0, 1.0], &[1.0, 2.0]), None);
    }
}
