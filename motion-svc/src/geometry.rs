//! Geometry: frame-relative boxes, and rasterising polygons (masks and zones) onto the
//! analysis grid. The polygons themselves, and their validation, are the `tuning` crate's,
//! shared with web-svc's mask editor.
//!
//! Coordinates are fractions of the frame, `[0,0]` top-left to `[1,1]` bottom-right, so a
//! mask drawn once stays right whatever resolution or decode scale is used.

use serde::{Deserialize, Serialize};

pub use tuning::polygon::{MAX_POINTS, MAX_POLYGONS, Polygon, PolygonError};

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
