//! Frame-relative polygons: the masks and zones of detection.
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

/// Checks a list of masks or zones (`key` is `masks` or `zones`): at most [`MAX_POLYGONS`],
/// every polygon valid.
///
/// # Errors
/// The first problem, its key naming the polygon (`masks[2]`).
pub fn check_list(key: &str, list: &[Polygon]) -> Result<(), crate::KeyError> {
    if list.len() > MAX_POLYGONS {
        return Err(crate::KeyError::new(
            key,
            format!("{} polygons; at most {MAX_POLYGONS}", list.len()),
        ));
    }
    for (i, p) in list.iter().enumerate() {
        p.validate()
            .map_err(|e| crate::KeyError::new(&format!("{key}[{i}]"), e.to_string()))?;
    }
    Ok(())
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
    fn a_list_past_the_bound_is_refused_by_key() {
        let one = square(0.0, 0.0, 0.5, 0.5);
        assert!(check_list("masks", &vec![one.clone(); MAX_POLYGONS]).is_ok());
        let e = check_list("masks", &vec![one.clone(); MAX_POLYGONS + 1]).unwrap_err();
        assert_eq!(e.key, "masks");
        let e = check_list("zones", &[one, Polygon(vec![[0.0, 0.0]])]).unwrap_err();
        assert_eq!(e.key, "zones[1]");
    }
}
