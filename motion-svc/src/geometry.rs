//! Geometry: frame-relative polygons (masks and zones), boxes, and rasterising polygons onto
//! the analysis grid.
//!
//! Coordinates are fractions of the frame, `[0,0]` top-left to `[1,1]` bottom-right, so a
//! mask drawn once stays right whatever resolution or decode scale is used.

use serde::{Deserialize, Serialize};

/// At most this many mask polygons and this many zone polygons.
pub const MAX_POLYGONS: usize = 16;
/// At most this many points per polygon.
pub const MAX_POINTS: usize = 64;

/// A closed polygon in frame-relative coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Polygon(pub Vec<[f32; 2]>);

/// Why a polygon was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolygonError {
    /// Fewer than three points.
    #[error("a polygon needs at least 3 points, this one has {0}")]
    TooFewPoints(usize),
    /// More than [`MAX_POINTS`].
    #[error("a polygon may have at most {MAX_POINTS} points, this one has {0}")]
    TooManyPoints(usize),
    /// A coordinate outside 0..=1 (or not a number).
    #[error("point {index} ({x}, {y}) is outside the frame: coordinates are fractions from 0 to 1")]
    OutOfFrame {
        /// Index of the point.
        index: usize,
        /// x.
        x: f32,
        /// y.
        y: f32,
    },
}

impl Polygon {
    /// Checks point count and that every point is inside the frame.
    ///
    /// # Errors
    /// A [`PolygonError`] naming the problem.
    pub fn validate(&self) -> Result<(), PolygonError> {
        let n = self.0.len();
        if n < 3 {
            return Err(PolygonError::TooFewPoints(n));
        }
        if n > MAX_POINTS {
            return Err(PolygonError::TooManyPoints(n));
        }
        for (index, &[x, y]) in self.0.iter().enumerate() {
            if !(0.0..=1.0).contains(&x) || !(0.0..=1.0).contains(&y) {
                return Err(PolygonError::OutOfFrame { index, x, y });
            }
        }
        Ok(())
    }

    /// Even-odd point-in-polygon test.
    pub fn contains(&self, px: f32, py: f32) -> bool {
        let pts = &self.0;
        let mut inside = false;
        let mut j = pts.len().wrapping_sub(1);
        for i in 0..pts.len() {
            let [xi, yi] = pts[i];
            let [xj, yj] = pts[j];
            if (yi > py) != (yj > py) && px < (xj - xi) * (py - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
        inside
    }
}

/// A box in frame-relative coordinates: left, top, width, height.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Rect {
    /// Left edge, 0..1.
    pub x: f32,
    /// Top edge, 0..1.
    pub y: f32,
    /// Width, 0..1.
    pub w: f32,
    /// Height, 0..1.
    pub h: f32,
}

impl Rect {
    /// As the `[x, y, w, h]` array used in event.json and journald, rounded to 4 decimals.
    pub fn to_array(self) -> [f32; 4] {
        let r = |v: f32| (v * 10_000.0).round() / 10_000.0;
        [r(self.x), r(self.y), r(self.w), r(self.h)]
    }
}

/// Which pixels of a `width` x `height` grid count for detection: inside a zone (or anywhere
/// when there are no zones) and inside no mask. 1 = counted, 0 = ignored.
pub fn rasterise(
    width: usize,
    height: usize,
    zones: &[Polygon],
    masks: &[Polygon],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.resize(width * height, 0);
    for y in 0..height {
        let fy = (y as f32 + 0.5) / height as f32;
        for x in 0..width {
            let fx = (x as f32 + 0.5) / width as f32;
            let in_zone = zones.is_empty() || zones.iter().any(|z| z.contains(fx, fy));
            let masked = masks.iter().any(|m| m.contains(fx, fy));
            out[y * width + x] = u8::from(in_zone && !masked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x0: f32, y0: f32, x1: f32, y1: f32) -> Polygon {
        Polygon(vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    }

    #[test]
    fn contains_is_even_odd() {
        let p = square(0.25, 0.25, 0.75, 0.75);
        assert!(p.contains(0.5, 0.5));
        assert!(!p.contains(0.1, 0.5));
        let tri = Polygon(vec![[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]);
        assert!(tri.contains(0.2, 0.2));
        assert!(!tri.contains(0.8, 0.8));
    }

    #[test]
    fn bad_polygons_are_refused() {
        assert_eq!(
            Polygon(vec![[0.0, 0.0], [1.0, 1.0]]).validate(),
            Err(PolygonError::TooFewPoints(2))
        );
        assert!(matches!(
            Polygon(vec![[0.0, 0.0], [1.5, 0.0], [0.0, 1.0]]).validate(),
            Err(PolygonError::OutOfFrame { index: 1, .. })
        ));
        assert!(
            Polygon(vec![[f32::NAN, 0.0], [1.0, 0.0], [0.0, 1.0]])
                .validate()
                .is_err()
        );
        assert!(
            Polygon(vec![[0.5, 0.5]; MAX_POINTS + 1])
                .validate()
                .is_err()
        );
        assert!(square(0.0, 0.0, 1.0, 1.0).validate().is_ok());
    }

    #[test]
    fn raster_applies_zones_then_masks() {
        let mut out = Vec::new();
        rasterise(10, 10, &[], &[], &mut out);
        assert_eq!(out.iter().map(|&v| v as usize).sum::<usize>(), 100);
        rasterise(10, 10, &[], &[square(0.0, 0.0, 0.5, 1.0)], &mut out);
        assert_eq!(out.iter().map(|&v| v as usize).sum::<usize>(), 50);
        assert_eq!(out[0], 0);
        assert_eq!(out[9], 1);
        rasterise(
            10,
            10,
            &[square(0.0, 0.0, 1.0, 0.5)],
            &[square(0.0, 0.0, 0.5, 1.0)],
            &mut out,
        );
        assert_eq!(out.iter().map(|&v| v as usize).sum::<usize>(), 25);
    }
}
