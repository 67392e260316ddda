//! JPEG headers built byte by byte: what a hostile or odd camera sends, for the header checks.

/// SOI, an APP0 with a little body (as cameras send), a frame header with marker `sof`
/// (0xC0 baseline, 0xC2 progressive, ...) claiming `width`x`height` with one sampling byte
/// per component, and the first scan's header naming `scan_components` components, ending
/// after the spectral selection: the caller appends the entropy-coded data and EOI it wants.
pub fn headers(sof: u8, width: u16, height: u16, sampling: &[u8], scan_components: u8) -> Vec<u8> {
    let mut b = vec![0xFF, 0xD8];
    b.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x06, b'J', b'F', b'I', b'F']);
    let n = sampling.len() as u8;
    b.extend_from_slice(&[0xFF, sof]);
    b.extend_from_slice(&(8 + 3 * u16::from(n)).to_be_bytes());
    b.push(8);
    b.extend_from_slice(&height.to_be_bytes());
    b.extend_from_slice(&width.to_be_bytes());
    b.push(n);
    for (i, &hv) in sampling.iter().enumerate() {
        b.extend_from_slice(&[i as u8 + 1, hv, 0]);
    }
    b.extend_from_slice(&[0xFF, 0xDA]);
    b.extend_from_slice(&(6 + 2 * u16::from(scan_components)).to_be_bytes());
    b.push(scan_components);
    for i in 0..scan_components {
        b.extend_from_slice(&[i + 1, 0]);
    }
    b.extend_from_slice(&[0, 63, 0]);
    b
}
