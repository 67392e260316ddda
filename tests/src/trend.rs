//! Is a series of memory samples rising? A least-squares slope and a verdict.

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
    /// Resident memory (KiB) at the first sample after warm-up.
    pub first_kib: u64,
    /// Resident memory (KiB) at the last sample.
    pub last_kib: u64,
    /// Whether the trend counts as rising.
    pub rising: bool,
}

/// Judge samples `(seconds since start, rss KiB)`. Samples before `warmup_s` are ignored.
/// Rising means: the slope would add more than `tolerance_kib` over the measured span, and
/// the last sample is above the first by more than `tolerance_kib` too. Allocator noise moves
/// RSS by a few hundred KiB either way; a leak keeps climbing on both counts.
pub fn judge(samples: &[(f64, u64)], warmup_s: f64, tolerance_kib: f64) -> Option<Verdict> {
    let kept: Vec<(f64, u64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warmup_s)
        .collect();
    let xs: Vec<f64> = kept.iter().map(|(t, _)| t / 60.0).collect();
    let ys: Vec<f64> = kept.iter().map(|(_, r)| *r as f64).collect();
    let s = slope(&xs, &ys)?;
    let span_min = xs.last()? - xs.first()?;
    let (first_kib, last_kib) = (kept.first()?.1, kept.last()?.1);
    let rising =
        s * span_min > tolerance_kib && (last_kib as f64 - first_kib as f64) > tolerance_kib;
    Some(Verdict {
        kib_per_min: s,
        first_kib,
        last_kib,
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
        let v = judge(&samples, 0.0, 1024.0).unwrap();
        assert!(!v.rising, "{v:?}");
    }

    #[test]
    fn steady_leak_is_rising() {
        // 100 KiB per sample, every 3 s: 2,000 KiB/min.
        let samples: Vec<(f64, u64)> = (0..100)
            .map(|i| (f64::from(i) * 3.0, 10_000 + 100 * i as u64))
            .collect();
        let v = judge(&samples, 0.0, 1024.0).unwrap();
        assert!(v.rising, "{v:?}");
        assert!((v.kib_per_min - 2000.0).abs() < 1.0, "{v:?}");
    }

    #[test]
    fn warmup_growth_is_ignored() {
        let samples: Vec<(f64, u64)> = (0..100)
            .map(|i| (f64::from(i), if i < 20 { 1_000 * i as u64 } else { 20_000 }))
            .collect();
        assert!(!judge(&samples, 20.0, 512.0).unwrap().rising);
        assert!(judge(&samples, 0.0, 512.0).unwrap().rising);
    }

    #[test]
    fn too_few_samples_give_no_verdict() {
        assert_eq!(judge(&[(0.0, 1)], 0.0, 1.0), None);
        assert_eq!(slope(&[1.0, 1.0], &[1.0, 2.0]), None);
    }
}
