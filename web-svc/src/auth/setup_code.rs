//! The one-time setup code: while no password is set, the first-visit form asks for it, so
//! only someone who can read the install's output (`web-svc --print-setup-code`) or the
//! service log can choose the password, not anyone on the network. It is kept in a 0600 file
//! in the state directory beside the password and removed once a password is set.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::SETUP_CODE_FILE;

/// Characters of a code: upper-case letters and digits without the look-alikes `0 O 1 I`.
/// 32 of them, so a random byte modulo 32 picks one without bias.
const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Characters of a code (60 bits; guessing is bounded by the login limiter besides).
pub const SETUP_CODE_LEN: usize = 12;
/// Characters of a code's group, as printed (`ABCD-EFGH-JKLM`).
const GROUP: usize = 4;
/// Longest code accepted from a client, separators included (more is wrong without a look).
const MAX_GIVEN_LEN: usize = 64;

/// Why the setup code cannot be read or made.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot {what} the setup code {path}: {source}; the state directory must exist and belong to the service user (start mecam-web once, or run this as root or as that user)"
)]
pub struct SetupCodeError {
    what: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

/// The setup code file in a state directory.
#[derive(Debug, Clone)]
pub struct SetupCode {
    dir: PathBuf,
}

impl SetupCode {
    /// The setup code kept in `state_dir`.
    pub fn new(state_dir: &Path) -> SetupCode {
        SetupCode {
            dir: state_dir.to_owned(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(SETUP_CODE_FILE)
    }

    /// The stored code, `None` if there is none or the file does not hold one.
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub fn load(&self) -> Result<Option<String>, SetupCodeError> {
        let path = self.path();
        let err = |source| SetupCodeError {
            what: "read",
            path: path.clone(),
            source,
        };
        // A FIFO in its place must not hang the request that reads it.
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        }
        let mut text = String::new();
        match std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_GIVEN_LEN as u64).read_to_string(&mut text))
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Ok(None),
            Err(e) => return Err(err(e)),
        }
        let code = text.trim();
        let chars = normalise(code);
        Ok(
            (chars.len() == SETUP_CODE_LEN && chars.bytes().all(|b| ALPHABET.contains(&b)))
                .then(|| code.to_owned()),
        )
    }

    /// The stored code, or a new one made and stored (mode 0600, owned by the state
    /// directory's owner, so that run as root it is still the service user's). Two callers
    /// at once get the same code.
    ///
    /// # Errors
    /// The state directory cannot be written.
    pub fn ensure(&self) -> Result<String, SetupCodeError> {
        if let Some(code) = self.load()? {
            return Ok(code);
        }
        let path = self.path();
        let err = |source| SetupCodeError {
            what: "write",
            path: path.clone(),
            source,
        };
        let code = new_code();
        let tmp = self
            .dir
            .join(format!("{SETUP_CODE_FILE}.{}.tmp", std::process::id()));
        // A file there holds no code (damaged): it is replaced; else a code that another
        // process placed meanwhile is kept.
        let damaged = std::fs::symlink_metadata(&path).is_ok();
        let written = write_private(&self.dir, &tmp, &code);
        let placed = written.and_then(|()| {
            if damaged {
                std::fs::rename(&tmp, &path)
            } else {
                std::fs::hard_link(&tmp, &path)
            }
        });
        let _ = std::fs::remove_file(&tmp);
        match placed {
            Ok(()) => Ok(code),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                self.load()?.ok_or_else(|| err(e))
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Whether `given` is the stored code (case, spaces and dashes do not matter), compared
    /// in constant time. `false` when there is no code.
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub fn matches(&self, given: &str) -> Result<bool, SetupCodeError> {
        Ok(self
            .load()?
            .is_some_and(|stored| codes_match(&stored, given)))
    }

    /// Removes the code (a password is set: it must not work again).
    ///
    /// # Errors
    /// It exists and cannot be removed.
    pub fn remove(&self) -> Result<(), SetupCodeError> {
        match std::fs::remove_file(self.path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SetupCodeError {
                what: "remove",
                path: self.path(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// A random code, grouped for reading (`ABCD-EFGH-JKLM`).
fn new_code() -> String {
    let bytes: [u8; SETUP_CODE_LEN] = rand::random();
    let mut code = String::with_capacity(SETUP_CODE_LEN + SETUP_CODE_LEN / GROUP);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % GROUP == 0 {
            code.push('-');
        }
        code.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
    }
    code
}

/// The code's characters as compared: upper case, without spaces and dashes.
fn normalise(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Whether `given` is `stored`, in time that depends only on their lengths (both bounded).
pub fn codes_match(stored: &str, given: &str) -> bool {
    if given.len() > MAX_GIVEN_LEN {
        return false;
    }
    let (a, b) = (normalise(stored), normalise(given));
    a.len() == b.len()
        && !a.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Writes `text` and a newline to a new 0600 file at `tmp`, synced, owned by `dir`'s owner
/// (so that written as root it is still the service user's). Also the password file's.
pub(super) fn write_private(dir: &Path, tmp: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    let (dm, fm) = (std::fs::metadata(dir)?, f.metadata()?);
    if (fm.uid(), fm.gid()) != (dm.uid(), dm.gid()) {
        std::os::unix::fs::fchown(&f, Some(dm.uid()), Some(dm.gid()))?;
    }
    writeln!(f, "{text}")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_made_once_private_and_kept_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let sc = SetupCode::new(dir.path());
        assert!(sc.load().unwrap().is_none());
        assert!(!sc.matches("").unwrap(), "no code: nothing matches");
        let code = sc.ensure().unwrap();
        assert_eq!(normalise(&code).len(), SETUP_CODE_LEN, "{code}");
        assert_eq!(sc.ensure().unwrap(), code, "an unused code is kept");
        let meta = std::fs::metadata(sc.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(sc.matches(&code).unwrap());
        assert!(sc.matches(&code.to_lowercase().replace('-', " ")).unwrap());
        let mut wrong = code.clone().into_bytes();
        wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
        assert!(!sc.matches(std::str::from_utf8(&wrong).unwrap()).unwrap());
        assert!(!sc.matches("").unwrap());
        assert!(!sc.matches(&format!("{code}A")).unwrap());
        assert!(!sc.matches(&"-".repeat(10_000)).unwrap());
        sc.remove().unwrap();
        sc.remove().unwrap();
        assert!(
            !sc.matches(&code).unwrap(),
            "a removed code no longer works"
        );
        assert_ne!(sc.ensure().unwrap(), code, "a new code after removal");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn a_damaged_code_file_matches_nothing_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let sc = SetupCode::new(dir.path());
        for bad in [&b""[..], b"\n", b"\xff\xfe", b"ABCD", b"ABCD-EFGH-JKL0\n"] {
            std::fs::write(sc.path(), bad).unwrap();
            assert!(sc.load().unwrap().is_none(), "{bad:?}");
            assert!(!sc.matches("").unwrap(), "{bad:?}");
            let code = sc.ensure().unwrap();
            assert!(sc.matches(&code).unwrap(), "{bad:?}");
        }
    }

    #[test]
    fn codes_use_the_whole_alphabet_and_nothing_else() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let code = new_code();
            assert_eq!(code.len(), SETUP_CODE_LEN + SETUP_CODE_LEN / GROUP - 1);
            seen.extend(normalise(&code).bytes());
        }
        assert!(seen.iter().all(|b| ALPHABET.contains(b)));
        assert_eq!(seen.len(), ALPHABET.len(), "200 codes use every character");
    }

    #[test]
    fn made_as_root_the_code_belongs_to_the_state_directory_owner() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: cannot change an owner; nothing to check");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // `nobody`, standing in for the service user that owns the state directory.
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        let sc = SetupCode::new(dir.path());
        sc.ensure().unwrap();
        let meta = std::fs::metadata(sc.path()).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}
