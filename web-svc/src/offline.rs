//! The "camera offline" placeholder: a small grey JPEG with the words and the UTC time, drawn
//! with a built-in 5x7 bitmap font. Rendered at most once a second by the fan-out; never used
//! for live frames (those are the camera's own JPEG bytes).

/// Width of the placeholder in pixels.
pub const WIDTH: u16 = 640;
/// Height of the placeholder in pixels.
pub const HEIGHT: u16 = 360;
const SCALE: usize = 5;
const GLYPH_W: usize = 5;
const GLYPH_H: usize = 7;

/// 5x7 glyphs, one byte per row, the low 5 bits left to right.
fn glyph(c: char) -> [u8; GLYPH_H] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        _ => [0; GLYPH_H],
    }
}

fn draw_text(pixels: &mut [u8], y0: usize, scale: usize, text: &str) {
    let w = WIDTH as usize;
    let advance = (GLYPH_W + 1) * scale;
    let text_w = text.chars().count() * advance;
    let x0 = w.saturating_sub(text_w) / 2;
    for (i, c) in text.chars().enumerate() {
        let rows = glyph(c);
        for (gy, row) in rows.iter().enumerate() {
            for gx in 0..GLYPH_W {
                if row & (0x10 >> gx) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    let y = y0 + gy * scale + dy;
                    let start = y * w + x0 + i * advance + gx * scale;
                    if let Some(px) = pixels.get_mut(start..start + scale) {
                        px.fill(235);
                    }
                }
            }
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the Unix epoch (civil-from-days, proleptic
/// Gregorian).
pub fn format_utc(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Renders the placeholder for `unix_s` into `out` (cleared; its allocation is reused).
///
/// # Panics
/// Never for the fixed geometry used here (the encoder only fails on zero sizes).
pub fn render(unix_s: u64, out: &mut Vec<u8>) {
    let mut pixels = vec![48u8; WIDTH as usize * HEIGHT as usize];
    draw_text(&mut pixels, 110, SCALE, "CAMERA OFFLINE");
    draw_text(&mut pixels, 200, 3, &format_utc(unix_s));
    out.clear();
    let encoder = jpeg_encoder::Encoder::new(&mut *out, 80);
    encoder
        .encode(&pixels, WIDTH, HEIGHT, jpeg_encoder::ColorType::Luma)
        .expect("fixed non-zero geometry always encodes");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_times() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_795_545_000), "2026-11-24 18:30:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn renders_a_jpeg_that_changes_with_the_time() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        render(1_795_545_000, &mut a);
        render(1_795_545_001, &mut b);
        assert_eq!(&a[..2], &[0xFF, 0xD8]);
        assert_eq!(&a[a.len() - 2..], &[0xFF, 0xD9]);
        assert_ne!(a, b);
    }
}
