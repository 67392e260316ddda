//! JPEG encoding for tests, benches and the bench camera (the service itself never encodes).
//! One file, included by the library's unit tests (`test_jpeg`), the integration tests
//! (`support`), the benches and the examples.

use turbojpeg::{Image, PixelFormat};

/// Encodes a greyscale buffer as a JPEG.
///
/// # Errors
/// Whatever libjpeg-turbo reports, as text.
pub fn encode_gray(
    width: usize,
    height: usize,
    pixels: &[u8],
    quality: i32,
) -> Result<Vec<u8>, String> {
    let img = Image {
        pixels,
        width,
        pitch: width,
        height,
        format: PixelFormat::GRAY,
    };
    encode(img, quality, turbojpeg::Subsamp::Gray)
}

/// Encodes an RGB buffer as a 4:2:0 JPEG, like a camera would (tests and benches).
///
/// # Errors
/// Whatever libjpeg-turbo reports, as text.
pub fn encode_rgb(
    width: usize,
    height: usize,
    pixels: &[u8],
    quality: i32,
) -> Result<Vec<u8>, String> {
    let img = Image {
        pixels,
        width,
        pitch: width * 3,
        height,
        format: PixelFormat::RGB,
    };
    encode(img, quality, turbojpeg::Subsamp::Sub2x2)
}

fn encode(img: Image<&[u8]>, quality: i32, subsamp: turbojpeg::Subsamp) -> Result<Vec<u8>, String> {
    let mut c = turbojpeg::Compressor::new().map_err(|e| e.to_string())?;
    c.set_quality(quality).map_err(|e| e.to_string())?;
    c.set_subsamp(subsamp).map_err(|e| e.to_string())?;
    c.compress_to_vec(img).map_err(|e| e.to_string())
}
