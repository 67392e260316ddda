//! `ipc::jpeg`'s header checks on crafted headers: sizes, sampling, progressive memory.

use ipc::jpeg::*;

/// A JPEG's headers with the given frame marker, size, sampling and first-scan components,
/// and two bytes of entropy-coded data, never read.
fn headers(sof: u8, width: u16, height: u16, sampling: &[u8], scan_components: u8) -> Vec<u8> {
    let mut b = testkit::jpeg::headers(sof, width, height, sampling, scan_components);
    b.extend_from_slice(&[0x12, 0x34]);
    b
}

const YUV420: [u8; 3] = [0x22, 0x11, 0x11];

#[test]
fn a_baseline_camera_frame_passes_with_its_size() {
    let h = check(
        &headers(0xC0, 640, 480, &YUV420, 3),
        &FrameLimits::for_camera(640, 480),
    )
    .unwrap();
    assert_eq!((h.width, h.height, h.components), (640, 480, 3));
    assert_eq!(h.coding, Coding::Sequential);
    assert!(!h.buffers_whole_image());
    // 640x480 4:2:0: 40x30 MCUs of 6 blocks.
    assert_eq!(h.coefficient_bytes, 40 * 30 * 6 * 128);
}

#[test]
fn a_progressive_8192_square_is_refused_for_its_memory_and_for_its_size() {
    let b = headers(0xC2, 8192, 8192, &YUV420, 1);
    let h = inspect(&b).unwrap();
    assert!(h.buffers_whole_image());
    assert_eq!(h.coefficient_bytes, 192 << 20);
    assert_eq!(
        check(&b, &FrameLimits::default()),
        Err(FrameRejected::TooLarge {
            width: 8192,
            height: 8192
        })
    );
    let generous = FrameLimits {
        max_pixels: u64::MAX,
        ..FrameLimits::default()
    };
    assert_eq!(
        check(&b, &generous),
        Err(FrameRejected::TooMuchMemory { bytes: 192 << 20 })
    );
    assert!(matches!(
        check(&b, &FrameLimits::for_camera(640, 480)),
        Err(FrameRejected::TooLarge { .. })
    ));
}

#[test]
fn a_progressive_frame_of_the_cameras_size_is_fine() {
    let b = headers(0xC2, 1920, 1080, &YUV420, 3);
    assert!(check(&b, &FrameLimits::for_camera(1920, 1080)).is_ok());
}

#[test]
fn a_sequential_frame_in_several_scans_counts_as_buffered() {
    let b = headers(0xC0, 4096, 3072, &[0x11, 0x11, 0x11], 1);
    let h = inspect(&b).unwrap();
    assert!(h.multi_scan && h.buffers_whole_image());
    assert!(matches!(
        check(&b, &FrameLimits::default()),
        Err(FrameRejected::TooMuchMemory { .. })
    ));
    // The same image in one interleaved scan decodes a row at a time.
    assert!(
        check(
            &headers(0xC0, 4096, 3072, &[0x11, 0x11, 0x11], 3),
            &FrameLimits::default()
        )
        .is_ok()
    );
}

#[test]
fn malformed_headers_are_refused_never_panic() {
    let good = headers(0xC0, 640, 480, &YUV420, 3);
    for cut in 0..good.len() - 5 {
        assert!(inspect(&good[..cut]).is_err(), "cut at {cut}");
    }
    assert_eq!(inspect(b"GIF89a"), Err(FrameRejected::NotJpeg));
    assert_eq!(
        inspect(&headers(0xC0, 0, 480, &YUV420, 3)),
        Err(FrameRejected::Unsupported)
    );
    assert_eq!(
        inspect(&headers(0xC5, 640, 480, &YUV420, 3)),
        Err(FrameRejected::Unsupported)
    );
    // Every single-byte corruption of the headers is answered, never a panic.
    for i in 0..good.len() {
        for v in [0x00, 0x01, 0x7F, 0xD9, 0xFF] {
            let mut b = good.clone();
            b[i] = v;
            let _ = check(&b, &FrameLimits::default());
        }
    }
}
