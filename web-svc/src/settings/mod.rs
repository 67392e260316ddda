//! The settings page's model: the values in effect (the administrator's `[motion]` with the
//! overrides file over it), saving a form into the overrides file (only what differs from the
//! administrator's values), resetting it, and motion-svc's live preview.
//!
//! The file, its schema and its validation are the `tuning` crate's, the same code motion-svc
//! reads it with; motion-svc picks a change up within a second, without a restart.
//!
//! Here: [`SettingsStore`]; `form.rs` turns a posted form into values and per-field
//! problems; `page.rs` renders the page; `preview.rs` fetches the preview from motion-svc.

use std::path::PathBuf;

use tuning::{Overrides, StoreError, Tunables};

pub mod form;
pub mod page;
pub mod preview;

pub use preview::PreviewProxy;

/// The values in effect, as the page shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    /// Administrator's values with the overrides over them.
    pub tunables: Tunables,
    /// The overrides file could not be used: why (the administrator's values are shown; a
    /// reset replaces the file).
    pub problem: Option<String>,
}

/// The overrides file and the administrator's values.
#[derive(Debug)]
pub struct SettingsStore {
    path: PathBuf,
    admin: Tunables,
    /// motion-svc's live preview.
    pub preview: PreviewProxy,
}

impl SettingsStore {
    /// The store of `path`, over the administrator's `admin` values, with the preview socket
    /// at `preview_socket`.
    pub fn new(path: PathBuf, admin: Tunables, preview_socket: PathBuf) -> SettingsStore {
        SettingsStore {
            path,
            admin,
            preview: PreviewProxy::new(preview_socket),
        }
    }

    /// The administrator's values (what a reset goes back to).
    pub fn admin(&self) -> &Tunables {
        &self.admin
    }

    /// The overrides file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The values in effect (reads the file: call off the async runtime).
    pub fn current(&self) -> Current {
        let mut tunables = self.admin.clone();
        match tuning::store::read(&self.path) {
            Ok(o) => {
                tunables.apply(&o);
                Current {
                    tunables,
                    problem: None,
                }
            }
            Err(e) => Current {
                tunables,
                problem: Some(e.to_string()),
            },
        }
    }

    /// Saves `want` as the overrides that differ from the administrator's values (blocking).
    ///
    /// # Errors
    /// A value out of range (nothing written), a broken overrides file (reset it), or the
    /// file system's refusal.
    pub fn save(&self, want: &Tunables) -> Result<Overrides, StoreError> {
        let o = want.overrides_from(&self.admin);
        tuning::store::update(&self.path, |file| *file = o)
    }

    /// Back to the administrator's values; armed or disarmed stays as it is (a broken file
    /// is replaced, and detection is armed).
    ///
    /// # Errors
    /// The file system's refusal.
    pub fn reset(&self) -> Result<(), StoreError> {
        let detection = tuning::store::read(&self.path)
            .ok()
            .and_then(|o| o.detection);
        tuning::store::write(
            &self.path,
            &Overrides {
                detection,
                ..Overrides::default()
            },
        )
    }
}
