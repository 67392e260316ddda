//! The torn-read path, made deterministic: a hook runs between the copy and the re-check
//! of the lock, where a racing writer would be.

use std::cell::RefCell;
use std::rc::Rc;

use std::sync::atomic::Ordering;

use super::layout::SlotField;
use super::*;

thread_local! {
    static AFTER_COPY: RefCell<Option<Box<dyn FnMut()>>> = RefCell::new(None);
}

/// Called by `read_slot` between the copy and the re-check.
pub(super) fn after_copy() {
    AFTER_COPY.with(|h| {
        if let Some(hook) = h.borrow_mut().as_mut() {
            hook();
        }
    });
}

fn set_hook(hook: Option<Box<dyn FnMut()>>) {
    AFTER_COPY.with(|h| *h.borrow_mut() = hook);
}

fn info() -> FrameInfo {
    FrameInfo {
        width: 4,
        height: 2,
        format: FrameFormat::Jpeg,
        mono_ns: 1,
        wall_ns: 2,
    }
}

#[test]
fn a_copy_raced_by_the_writer_is_torn_counted_and_never_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frames");
    let writer = Rc::new(RefCell::new(RegionWriter::create(&path, 256).unwrap()));
    let reader = RegionReader::open(&path).unwrap();
    let meta = writer.borrow_mut().publish(&info(), &[1; 100]).unwrap();
    let mut buf = Vec::with_capacity(256);

    // 1. The writer enters the slot during the copy: the lock is odd at the re-check.
    let w = Rc::clone(&writer);
    let slot = meta.slot as usize;
    set_hook(Some(Box::new(move || {
        let w = w.borrow();
        let lock = w.map.slot(slot, SlotField::Lock);
        w.map
            .set_slot(slot, SlotField::Lock, lock | 1, Ordering::Release);
    })));
    assert_eq!(
        reader.read_slot(meta.slot, meta.seq, &mut buf),
        Err(ReadError::Torn)
    );
    assert!(buf.is_empty(), "the torn copy is discarded");
    assert_eq!(reader.stats().torn, 1);
    set_hook(None);
    // Put the lock back as the writer would on leaving (even, one step on).
    {
        let w = writer.borrow();
        let lock = w.map.slot(slot, SlotField::Lock);
        w.map
            .set_slot(slot, SlotField::Lock, lock + 1, Ordering::Release);
    }

    // 2. The writer laps the reader during the copy: three publishes later the same slot
    //    holds another frame and its lock is even again, but not the value seen before.
    let meta = writer.borrow_mut().publish(&info(), &[2; 120]).unwrap();
    let w = Rc::clone(&writer);
    set_hook(Some(Box::new(move || {
        let mut w = w.borrow_mut();
        for fill in 3..6 {
            w.publish(&info(), &[fill; 80]).unwrap();
        }
    })));
    assert_eq!(
        reader.read_slot(meta.slot, meta.seq, &mut buf),
        Err(ReadError::Torn)
    );
    assert!(buf.is_empty());
    assert_eq!(reader.stats().torn, 2);
    assert_eq!(reader.stats().read, 0, "nothing torn was ever delivered");
    set_hook(None);

    // Without a racing writer the newest frame reads whole.
    let got = reader.read_latest(&mut buf).unwrap();
    assert_eq!((got.seq, buf.as_slice()), (5, &[5u8; 80][..]));
    assert_eq!(reader.stats().read, 1);
}
