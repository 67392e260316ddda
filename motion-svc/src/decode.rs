//! Decoding: a small luma image taken straight out of a JPEG at reduced scale.
//!
//! libjpeg-turbo (through the `turbojpeg` crate) can stop the inverse DCT early: asking for
//! 1/8 scale keeps only the DC coefficient of each 8x8 block, and asking for a grey output
//! skips the chroma planes entirely. That is 10x cheaper than decoding the full frame and
//! shrinking it, which is what the pure-Rust decoders we measured have to do (see
//! `benches/analysis.rs` and the README for the figures).

use ipc::jpeg::{FrameLimits, FrameRejected};
use turbojpeg::{Decompressor, Image, PixelFormat, ScalingFactor};

/// Analysis images are at least this wide: the decoder picks the smallest scale that keeps
/// the width at or above it (1/4 for 640x480, 160x120; 1/8 from 1024 wide, 240x135 for
/// 1080p). A person at a tenth of the frame height is then 12 rows or more.
pub const MIN_ANALYSIS_WIDTH: usize = 128;

/// A greyscale image, one byte per pixel, rows packed without padding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LumaImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height` bytes, row-major.
    pub pixels: Vec<u8>,
}

impl LumaImage {
    /// A `width` x `height` image filled with `value`.
    pub fn filled(width: usize, height: usize, value: u8) -> LumaImage {
        LumaImage {
            width,
            height,
            pixels: vec![value; width * height],
        }
    }
}

/// Why a frame could not be turned into a luma image.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// libjpeg-turbo refused the data (corrupt, truncated, not a JPEG).
    #[error("not a decodable JPEG ({0}); the frame is skipped")]
    Corrupt(String),
    /// Its headers ask for more than [`FrameLimits`] allow (size, or the memory a progressive
    /// or multi-scan image needs): refused before libjpeg-turbo sees it.
    #[error("{0}; the frame is skipped")]
    Rejected(FrameRejected),
    /// The decoder itself could not be created (out of memory).
    #[error("cannot create a JPEG decoder: {0}")]
    Init(String),
}

/// Turns JPEG frames into small luma images, reusing one output buffer (no allocation per
/// frame once the geometry is known).
///
/// Every frame is checked with [`ipc::jpeg::check`] against its [`FrameLimits`] before
/// libjpeg-turbo reads it: libjpeg buffers every coefficient of a progressive or multi-scan
/// image whatever the output scale, so an unchecked 8192x8192 progressive frame costs
/// 128 MiB or more.
pub struct LumaDecoder {
    decompressor: Decompressor,
    image: LumaImage,
    source: (usize, usize),
    limits: FrameLimits,
}

impl std::fmt::Debug for LumaDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LumaDecoder")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The scale the decoder uses for a frame `width` pixels wide.
pub fn scale_for(width: usize) -> ScalingFactor {
    for denom in [8, 4, 2] {
        if width / denom >= MIN_ANALYSIS_WIDTH {
            return ScalingFactor::new(1, denom);
        }
    }
    ScalingFactor::ONE
}

impl LumaDecoder {
    /// A decoder.
    ///
    /// # Errors
    /// [`DecodeError::Init`] if libjpeg-turbo cannot allocate its state.
    pub fn new() -> Result<LumaDecoder, DecodeError> {
        let decompressor = Decompressor::new().map_err(|e| DecodeError::Init(e.to_string()))?;
        Ok(LumaDecoder {
            decompressor,
            image: LumaImage::default(),
            source: (0, 0),
            limits: FrameLimits::default(),
        })
    }

    /// Frames are checked against `limits` from now on (the camera's announced geometry,
    /// [`FrameLimits::for_camera`]); the default is [`FrameLimits::default`].
    pub fn set_limits(&mut self, limits: FrameLimits) {
        self.limits = limits;
    }

    /// Size of the last decoded source frame (full resolution).
    pub fn source_size(&self) -> (usize, usize) {
        self.source
    }

    /// Decodes `jpeg` to a reduced-scale luma image, valid until the next call.
    ///
    /// # Errors
    /// [`DecodeError::Rejected`] for headers over the limits (nothing is decoded),
    /// [`DecodeError::Corrupt`] for data libjpeg-turbo rejects (including truncated frames).
    pub fn decode(&mut self, jpeg: &[u8]) -> Result<&LumaImage, DecodeError> {
        ipc::jpeg::check(jpeg, &self.limits).map_err(DecodeError::Rejected)?;
        let header = self
            .decompressor
            .read_header(jpeg)
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        let scale = scale_for(header.width);
        let scaled = header.scaled(scale);
        self.decompressor
            .set_scaling_factor(scale)
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        let (w, h) = (scaled.width, scaled.height);
        if self.image.width != w || self.image.height != h {
            self.image.width = w;
            self.image.height = h;
            self.image.pixels.resize(w * h, 0);
        }
        self.source = (header.width, header.height);
        let out = Image {
            pixels: self.image.pixels.as_mut_slice(),
            width: w,
            pitch: w,
            height: h,
            format: PixelFormat::GRAY,
        };
        self.decompressor
            .decompress(jpeg, out)
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        Ok(&self.image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient_rgb(w: usize, h: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let l = ((x * 255) / w) as u8;
                v.extend_from_slice(&[l, l, (y % 256) as u8 / 4 + l / 2]);
            }
        }
        v
    }

    #[test]
    fn decodes_640x480_at_one_quarter() {
        let jpeg = crate::test_jpeg::encode_rgb(640, 480, &gradient_rgb(640, 480), 80).unwrap();
        let mut d = LumaDecoder::new().unwrap();
        let img = d.decode(&jpeg).unwrap();
        assert_eq!((img.width, img.height), (160, 120));
        // Left dark, right bright: the gradient survives.
        assert!(img.pixels[0] < 30, "{}", img.pixels[0]);
        assert!(img.pixels[159] > 200, "{}", img.pixels[159]);
        assert_eq!(d.source_size(), (640, 480));
    }

    #[test]
    fn scale_keeps_small_frames_usable() {
        assert_eq!(scale_for(1920), ScalingFactor::new(1, 8));
        assert_eq!(scale_for(1024), ScalingFactor::new(1, 8));
        assert_eq!(scale_for(640), ScalingFactor::new(1, 4));
        assert_eq!(scale_for(320), ScalingFactor::new(1, 2));
        assert_eq!(scale_for(100), ScalingFactor::ONE);
    }

    #[test]
    fn corrupt_and_truncated_frames_are_errors_and_survived() {
        let mut d = LumaDecoder::new().unwrap();
        assert!(matches!(
            d.decode(b"not a jpeg at all"),
            Err(DecodeError::Rejected(FrameRejected::NotJpeg))
        ));
        assert!(d.decode(&[]).is_err());
        let jpeg = crate::test_jpeg::encode_rgb(640, 480, &gradient_rgb(640, 480), 80).unwrap();
        assert!(d.decode(&jpeg[..jpeg.len() / 2]).is_err());
        // And the decoder still works afterwards.
        assert_eq!(d.decode(&jpeg).unwrap().width, 160);
    }

    #[test]
    fn frames_over_the_limits_are_refused_before_decoding() {
        let mut d = LumaDecoder::new().unwrap();
        let small = crate::test_jpeg::encode_gray(640, 480, &vec![100; 640 * 480], 80).unwrap();
        d.set_limits(FrameLimits::for_camera(320, 240));
        assert!(matches!(
            d.decode(&small),
            Err(DecodeError::Rejected(FrameRejected::TooLarge { .. }))
        ));
        d.set_limits(FrameLimits::for_camera(640, 480));
        assert_eq!(d.decode(&small).unwrap().width, 160);
        assert!(matches!(
            d.decode(b"\xff\xd8\xff"),
            Err(DecodeError::Rejected(FrameRejected::Truncated))
        ));
    }

    #[test]
    fn geometry_change_resizes_the_buffer() {
        let mut d = LumaDecoder::new().unwrap();
        let a = crate::test_jpeg::encode_gray(640, 480, &vec![100; 640 * 480], 80).unwrap();
        let b = crate::test_jpeg::encode_gray(1920, 1080, &vec![100; 1920 * 1080], 80).unwrap();
        assert_eq!(d.decode(&a).unwrap().pixels.len(), 160 * 120);
        assert_eq!(d.decode(&b).unwrap().pixels.len(), 240 * 135);
    }
}
