//! What a JPEG costs to decode, read from its headers before anyone decodes it.
//!
//! A frame is whatever bytes the camera (or whoever pretends to be it) sent. A 787 KB
//! progressive JPEG can claim 8192x8192, and libjpeg buffers every DCT coefficient of a
//! progressive or multi-scan image whatever the output scale: 192 MiB for that one frame. So
//! every frame is checked here against [`FrameLimits`] first: the marker segments up to the
//! first scan are parsed (no entropy-coded data is touched), the frame header gives the size,
//! the coding process and the sampling, and the first scan header tells a multi-scan image
//! from a single interleaved one. `capture-svc` checks before it publishes, so no consumer
//! sees such a frame; `motion-svc` checks again before it decodes.

use std::fmt;

/// Largest width or height accepted from any camera: above the largest Pi camera sensor
/// (4608x2592, Camera Module 3) and any USB camera mecam is meant for.
pub const MAX_FRAME_SIDE: u32 = 8192;
/// Largest frame area accepted from any camera, in pixels (16 Mpx: 4608x3456).
pub const MAX_FRAME_PIXELS: u64 = 16 * 1024 * 1024;
/// Largest coefficient buffer a decoder may need for one frame, in bytes. A progressive or
/// multi-scan JPEG needs its whole image's coefficients (2 bytes each) at once: 16 MiB holds a
/// progressive 4:2:0 frame of about 5.5 Mpx, twice 1080p.
pub const MAX_BUFFERED_COEFFICIENT_BYTES: u64 = 16 * 1024 * 1024;
/// Marker segments read before giving up on finding the first scan (a real JPEG has about ten).
pub const MAX_HEADER_SEGMENTS: usize = 256;

/// How the image data is coded, from the frame header's marker (ITU T.81 table B.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// Sequential DCT (SOF0, SOF1, SOF9): decodable a row of blocks at a time.
    Sequential,
    /// Progressive DCT (SOF2, SOF10): the whole image's coefficients are buffered.
    Progressive,
    /// Lossless (SOF3, SOF11).
    Lossless,
    /// Hierarchical (SOF5-7, SOF13-15): nothing a camera sends; refused.
    Hierarchical,
}

/// What the headers say about a JPEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegHeader {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Colour components in the frame (1 grey, 3 YCbCr).
    pub components: u8,
    /// The coding process.
    pub coding: Coding,
    /// The first scan carries fewer components than the frame: a sequential image in several
    /// scans, which a decoder must buffer whole like a progressive one.
    pub multi_scan: bool,
    /// DCT coefficient bytes of the whole image (what a buffering decoder allocates).
    pub coefficient_bytes: u64,
}

impl JpegHeader {
    /// The decoder must hold the whole image's coefficients before it can output a row.
    pub fn buffers_whole_image(&self) -> bool {
        self.coding != Coding::Sequential || self.multi_scan
    }
}

/// The limits a frame is checked against before it is published or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest width accepted.
    pub max_width: u32,
    /// Largest height accepted.
    pub max_height: u32,
    /// Largest area accepted, in pixels.
    pub max_pixels: u64,
    /// Largest coefficient buffer of a frame the decoder must buffer whole.
    pub max_buffered_bytes: u64,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_width: MAX_FRAME_SIDE,
            max_height: MAX_FRAME_SIDE,
            max_pixels: MAX_FRAME_PIXELS,
            max_buffered_bytes: MAX_BUFFERED_COEFFICIENT_BYTES,
        }
    }
}

impl FrameLimits {
    /// Limits for a camera that announced `width` x `height` (0 when it has not said): a frame
    /// may be no larger than the announced size, and never above the defaults.
    pub fn for_camera(width: u32, height: u32) -> FrameLimits {
        let d = FrameLimits::default();
        FrameLimits {
            max_width: if width == 0 {
                d.max_width
            } else {
                width.min(d.max_width)
            },
            max_height: if height == 0 {
                d.max_height
            } else {
                height.min(d.max_height)
            },
            ..d
        }
    }
}

/// Why a frame was refused before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRejected {
    /// It does not start with SOI, or a marker segment is malformed.
    NotJpeg,
    /// The bytes end before the first scan.
    Truncated,
    /// A frame header that is not a camera's: zero size (DNL), no components, or hierarchical.
    Unsupported,
    /// Width or height over the limit.
    TooLarge {
        /// The frame's width.
        width: u32,
        /// The frame's height.
        height: u32,
    },
    /// It must be buffered whole and its coefficients exceed the budget.
    TooMuchMemory {
        /// Coefficient bytes the decoder would allocate.
        bytes: u64,
    },
}

impl FrameRejected {
    /// A short stable name, for counters and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameRejected::NotJpeg => "not_jpeg",
            FrameRejected::Truncated => "truncated",
            FrameRejected::Unsupported => "unsupported",
            FrameRejected::TooLarge { .. } => "too_large",
            FrameRejected::TooMuchMemory { .. } => "too_much_memory",
        }
    }
}

impl fmt::Display for FrameRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameRejected::NotJpeg => {
                write!(f, "not a JPEG (no SOI or a malformed marker segment)")
            }
            FrameRejected::Truncated => write!(f, "JPEG ends before its first scan"),
            FrameRejected::Unsupported => {
                write!(
                    f,
                    "JPEG frame header no camera sends (zero size, no components or hierarchical)"
                )
            }
            FrameRejected::TooLarge { width, height } => {
                write!(
                    f,
                    "JPEG of {width}x{height} is larger than the camera's frames"
                )
            }
            FrameRejected::TooMuchMemory { bytes } => write!(
                f,
                "progressive or multi-scan JPEG would need {} MiB to decode (limit {} MiB)",
                bytes.div_ceil(1 << 20),
                MAX_BUFFERED_COEFFICIENT_BYTES >> 20
            ),
        }
    }
}

impl std::error::Error for FrameRejected {}

/// Reads the headers of `bytes` up to the first scan and checks them against `limits`.
///
/// # Errors
/// [`FrameRejected`] says why the frame must not be decoded.
pub fn check(bytes: &[u8], limits: &FrameLimits) -> Result<JpegHeader, FrameRejected> {
    let h = inspect(bytes)?;
    if h.width > limits.max_width
        || h.height > limits.max_height
        || u64::from(h.width) * u64::from(h.height) > limits.max_pixels
    {
        return Err(FrameRejected::TooLarge {
            width: h.width,
            height: h.height,
        });
    }
    if h.buffers_whole_image() && h.coefficient_bytes > limits.max_buffered_bytes {
        return Err(FrameRejected::TooMuchMemory {
            bytes: h.coefficient_bytes,
        });
    }
    Ok(h)
}

/// Reads the headers of `bytes` up to the first scan, without limits.
///
/// # Errors
/// [`FrameRejected::NotJpeg`], [`FrameRejected::Truncated`] or [`FrameRejected::Unsupported`].
pub fn inspect(bytes: &[u8]) -> Result<JpegHeader, FrameRejected> {
    if bytes.len() < 2 {
        return Err(FrameRejected::Truncated);
    }
    if bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err(FrameRejected::NotJpeg);
    }
    let mut pos = 2;
    let mut frame: Option<Frame> = None;
    for _ in 0..MAX_HEADER_SEGMENTS {
        // A marker is 0xFF, any number of 0xFF fill bytes, then the marker code.
        if *bytes.get(pos).ok_or(FrameRejected::Truncated)? != 0xFF {
            return Err(FrameRejected::NotJpeg);
        }
        while bytes.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let marker = *bytes.get(pos).ok_or(FrameRejected::Truncated)?;
        pos += 1;
        match marker {
            // Markers without a length: TEM and RSTn; SOI or EOI here is malformed.
            0x01 | 0xD0..=0xD7 => continue,
            0x00 | 0xD8 | 0xD9 => return Err(FrameRejected::NotJpeg),
            _ => {}
        }
        let len_bytes = bytes.get(pos..pos + 2).ok_or(FrameRejected::Truncated)?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        if len < 2 {
            return Err(FrameRejected::NotJpeg);
        }
        let body = bytes
            .get(pos + 2..pos + len)
            .ok_or(FrameRejected::Truncated)?;
        pos += len;
        match marker {
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                if frame.is_some() {
                    return Err(FrameRejected::NotJpeg);
                }
                frame = Some(Frame::parse(marker, body)?);
            }
            0xDA => {
                let f = frame.ok_or(FrameRejected::NotJpeg)?;
                let scan_components = *body.first().ok_or(FrameRejected::NotJpeg)?;
                return Ok(f.header(scan_components < f.components));
            }
            _ => {}
        }
    }
    Err(FrameRejected::NotJpeg)
}

/// The frame header (SOFn) fields the estimate needs.
#[derive(Debug, Clone, Copy)]
struct Frame {
    coding: Coding,
    width: u32,
    height: u32,
    components: u8,
    /// (horizontal, vertical) sampling factor of each component, at most 4 read.
    sampling: [(u8, u8); 4],
}

impl Frame {
    fn parse(marker: u8, body: &[u8]) -> Result<Frame, FrameRejected> {
        let coding = match marker {
            0xC0 | 0xC1 | 0xC9 => Coding::Sequential,
            0xC2 | 0xCA => Coding::Progressive,
            0xC3 | 0xCB => Coding::Lossless,
            _ => Coding::Hierarchical,
        };
        if body.len() < 6 {
            return Err(FrameRejected::NotJpeg);
        }
        let height = u32::from(u16::from_be_bytes([body[1], body[2]]));
        let width = u32::from(u16::from_be_bytes([body[3], body[4]]));
        let components = body[5];
        if body.len() < 6 + 3 * usize::from(components) {
            return Err(FrameRejected::NotJpeg);
        }
        if width == 0 || height == 0 || components == 0 || components > 4 {
            return Err(FrameRejected::Unsupported);
        }
        if coding == Coding::Hierarchical {
            return Err(FrameRejected::Unsupported);
        }
        let mut sampling = [(1, 1); 4];
        for (i, s) in sampling
            .iter_mut()
            .enumerate()
            .take(usize::from(components))
        {
            let hv = body[6 + 3 * i + 1];
            let (h, v) = (hv >> 4, hv & 0x0F);
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
                return Err(FrameRejected::NotJpeg);
            }
            *s = (h, v);
        }
        Ok(Frame {
            coding,
            width,
            height,
            components,
            sampling,
        })
    }

    fn header(&self, multi_scan: bool) -> JpegHeader {
        let n = usize::from(self.components);
        let h_max = u64::from(self.sampling[..n].iter().map(|s| s.0).max().unwrap_or(1));
        let v_max = u64::from(self.sampling[..n].iter().map(|s| s.1).max().unwrap_or(1));
        // As libjpeg pads: whole MCUs across and down, each MCU holding h x v blocks of a
        // component; 64 coefficients of 2 bytes per block.
        let mcus_across = u64::from(self.width).div_ceil(8 * h_max);
        let mcus_down = u64::from(self.height).div_ceil(8 * v_max);
        let coefficient_bytes = self.sampling[..n]
            .iter()
            .map(|&(h, v)| mcus_across * u64::from(h) * mcus_down * u64::from(v) * 128)
            .sum();
        JpegHeader {
            width: self.width,
            height: self.height,
            components: self.components,
            coding: self.coding,
            multi_scan,
            coefficient_bytes,
        }
    }
}
