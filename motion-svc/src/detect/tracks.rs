//! Tracks: each changed region followed from one analysed frame to the next, and the rule that
//! decides which of them are motion.
//!
//! A region becomes motion when it has been followed for [`CONFIRM_FRAMES`] analysed frames,
//! in all of them but one at least the smallest object's size and [`MIN_SIDE_PX`] thick, and has
//! moved away from where it was first seen by
//! [`DISPLACE_FRAC`] of the shorter side of the box it has covered so far (its "home"),
//! getting further away at each of the last [`FORWARD_STEPS`] frames. That is what a person, a
//! car or a cat does, however small and far away: walking extends the home as fast as the
//! distance grows. What changes in place never gets there: foliage, a flag or rain swaying
//! around a point comes back towards where it started within its home, a light change or a
//! ghost does not move at all. A region that jumps in size (a bush's blob falling apart into
//! its edges, two blobs joining) starts again from where it is: a centroid that jumps with the
//! shape is not movement. Once motion, a track stays motion for as long as it is followed.

use super::regions::Region;

/// At most this many regions are followed at once (the largest win).
pub const MAX_TRACKS: usize = 16;
/// Analysed frames a region must be followed before it can be motion.
pub const CONFIRM_FRAMES: u32 = 3;
/// Consecutive analysed frames in which a region must have got further from where it was first
/// seen before it can be motion.
pub const FORWARD_STEPS: u32 = 2;
/// The distance a region must have moved from where it was first seen, as a share of its box's
/// shorter side (a walking person's width, a swaying tree's whole crown).
pub const DISPLACE_FRAC: f32 = 0.35;
/// ... and at least this many pixels at analysis scale (centroids jitter by about one).
const MIN_DISPLACE_PX: f32 = 1.5;
/// A region thinner than this at analysis scale (12 px of a 640-wide frame) is an edge that
/// came and went (a shaking camera, a swaying wire), not an object: it is never motion.
pub const MIN_SIDE_PX: f32 = 3.0;
/// A track not seen in this many consecutive analysed frames is forgotten.
const MAX_MISSES: u32 = 2;
/// A region whose pixel count changes by more than this factor from one frame to the next
/// is a new shape: its track starts measuring again from there.
const RESHAPE_FACTOR: u32 = 2;

/// One followed region.
#[derive(Debug, Clone, Copy)]
pub struct Track {
    /// When it was first seen, seconds.
    pub born: f64,
    frames: u32,
    misses: u32,
    forward: u32,
    /// Frames in which its region was object-sized, less those in which it was not.
    solid: u32,
    origin: (f32, f32),
    centre: (f32, f32),
    /// The union of its boxes since the origin: x0, y0, x1, y1.
    home: [u32; 4],
    /// Its region in the last frame it was seen.
    pub region: Region,
    /// Whether it is motion.
    pub moving: bool,
    /// Whether it was seen in the last analysed frame.
    pub seen: bool,
}

impl Track {
    fn new(region: Region, t: f64) -> Track {
        Track {
            born: t,
            frames: 1,
            misses: 0,
            forward: 0,
            solid: 0,
            origin: region.centre(),
            centre: region.centre(),
            home: [region.x0, region.y0, region.x1, region.y1],
            region,
            moving: false,
            seen: true,
        }
    }

    /// Whether `r` is where this track could be now: its box, grown by half its larger side.
    fn reaches(&self, r: &Region) -> bool {
        let (w, h) = self.region.size();
        let gate = (0.5 * w.max(h)).max(2.0);
        let (x0, y0) = (self.region.x0 as f32 - gate, self.region.y0 as f32 - gate);
        let (x1, y1) = (self.region.x1 as f32 + gate, self.region.y1 as f32 + gate);
        (r.x0 as f32) <= x1 && (r.x1 as f32) >= x0 && (r.y0 as f32) <= y1 && (r.y1 as f32) >= y0
    }

    fn follow(&mut self, region: Region, min_px: u32) {
        let reshaped = region.px > self.region.px * RESHAPE_FACTOR
            || region.px * RESHAPE_FACTOR < self.region.px;
        let before = distance(self.centre, self.origin);
        self.centre = region.centre();
        self.region = region;
        self.frames += 1;
        self.misses = 0;
        self.seen = true;
        if reshaped && !self.moving {
            self.origin = self.centre;
            self.home = [region.x0, region.y0, region.x1, region.y1];
            self.forward = 0;
            return;
        }
        let h = &mut self.home;
        *h = [
            h[0].min(region.x0),
            h[1].min(region.y0),
            h[2].max(region.x1),
            h[3].max(region.y1),
        ];
        let now = distance(self.centre, self.origin);
        self.forward = if now > before { self.forward + 1 } else { 0 };
        let (rw, rh) = region.size();
        let object = region.px >= min_px && rw.min(rh) >= MIN_SIDE_PX;
        self.solid = if object {
            self.solid + 1
        } else {
            self.solid.saturating_sub(1)
        };
        if !self.moving {
            let (w, h) = ((h[2] - h[0] + 1) as f32, (h[3] - h[1] + 1) as f32);
            let need = (DISPLACE_FRAC * w.min(h)).max(MIN_DISPLACE_PX);
            self.moving = self.frames >= CONFIRM_FRAMES
                && object
                && self.solid >= CONFIRM_FRAMES - 1
                && now >= need
                && self.forward >= FORWARD_STEPS;
        }
    }
}

/// The tracks of one camera stream; allocated once.
#[derive(Debug)]
pub struct Tracker {
    tracks: Vec<Track>,
    taken: Vec<bool>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            tracks: Vec::with_capacity(MAX_TRACKS),
            taken: Vec::with_capacity(MAX_TRACKS),
        }
    }
}

impl Tracker {
    /// Forgets every track (a re-learn, a scene change).
    pub fn clear(&mut self) {
        self.tracks.clear();
    }

    /// Follows this frame's `regions` (largest first) at `t`; regions under a quarter of
    /// `min_px` start no track.
    pub fn update(&mut self, regions: &[Region], t: f64, min_px: u32) {
        self.taken.clear();
        self.taken.resize(self.tracks.len(), false);
        for tr in &mut self.tracks {
            tr.seen = false;
        }
        for r in regions {
            let c = r.centre();
            let best = self
                .tracks
                .iter()
                .enumerate()
                .filter(|&(i, tr)| !self.taken[i] && tr.reaches(r))
                .min_by(|(_, a), (_, b)| distance(a.centre, c).total_cmp(&distance(b.centre, c)))
                .map(|(i, _)| i);
            match best {
                Some(i) => {
                    self.taken[i] = true;
                    self.tracks[i].follow(*r, min_px);
                }
                None if r.px * 4 >= min_px && self.tracks.len() < MAX_TRACKS => {
                    self.tracks.push(Track::new(*r, t));
                    self.taken.push(true);
                }
                None => {}
            }
        }
        for tr in &mut self.tracks {
            if !tr.seen {
                tr.misses += 1;
            }
        }
        self.tracks.retain(|tr| tr.misses <= MAX_MISSES);
    }

    /// The tracks that are motion and were seen in the last frame.
    pub fn moving(&self) -> impl Iterator<Item = &Track> {
        self.tracks.iter().filter(|tr| tr.moving && tr.seen)
    }
}

/// The distance between two points, pixels.
fn distance(a: (f32, f32), b: (f32, f32)) -> f32 {
    (a.0 - b.0).hypot(a.1 - b.1)
}
