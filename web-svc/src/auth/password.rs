//! The admin password: an argon2id hash in a 0600 file in the state directory, written
//! atomically, never mistaken for "no password" when it cannot be used.

use std::path::{Path, PathBuf};

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Params, Version};

use super::{MAX_PASSWORD_LEN, MIN_PASSWORD_LEN, PASSWORD_FILE};

/// Why a password could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too short or too long.
    #[error("the password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters long")]
    BadLength,
    /// First-visit setup after a password exists.
    #[error("a password is already set; log in, or use `web-svc set-password` to change it")]
    AlreadySet,
    /// The state directory is not writable.
    #[error(
        "cannot write the password file in {dir}: {source}; check that the state directory exists and belongs to the service user"
    )]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// argon2 refused (should not happen with these parameters).
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// First-visit setup while a password file exists but cannot be used.
    #[error(transparent)]
    Broken(PasswordFileError),
}

/// Why an existing password file cannot be used. Never treated as "no password": that would
/// reopen first-visit setup to anyone on the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordFileError {
    /// The file exists but cannot be read (owner, mode, a directory in its place).
    #[error(
        "cannot read the password file {path}: {reason}; it must be a file the service user can read: set the password again as that user (`sudo -u mecam web-svc set-password --state-dir {dir}`) or give it to them (`chown mecam: {path}`)"
    )]
    Unreadable {
        /// The password file.
        path: PathBuf,
        /// The state directory.
        dir: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The file does not hold an argon2id hash (damaged or edited).
    #[error(
        "the password file {path} does not hold an argon2id hash (damaged?); set the password again (`sudo -u mecam web-svc set-password --state-dir {dir}`)"
    )]
    Invalid {
        /// The password file.
        path: PathBuf,
        /// The state directory.
        dir: PathBuf,
    },
}

/// argon2id memory in KiB: 7 MiB with 5 passes (an OWASP-recommended pair), about a quarter
/// second on a Pi Zero 2 W.
pub const ARGON2_M_KIB: u32 = 7 * 1024;
/// argon2id passes.
pub const ARGON2_T: u32 = 5;
/// Largest memory cost accepted from a hash file (a bigger one is refused, not allocated).
pub const ARGON2_MAX_M_KIB: u32 = 64 * 1024;
/// Hash output length in bytes.
const HASH_LEN: usize = 32;

fn argon2_raw(
    m_kib: u32,
    t: u32,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    if m_kib > ARGON2_MAX_M_KIB {
        return Err(format!(
            "argon2 memory cost {m_kib} KiB is over the limit {ARGON2_MAX_M_KIB}"
        ));
    }
    let params = Params::new(m_kib, t, 1, Some(out.len())).map_err(|e| e.to_string())?;
    // The work area lives only while hashing: at most MAX_CONCURRENT_CHECKS at once, each
    // several MiB, mapped on its own and given back to the kernel when dropped (the service
    // called `ipc::heap::release_large_blocks`), so nothing of it stays resident between
    // logins.
    let mut memory = vec![argon2::Block::default(); params.block_count()];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(password, salt, out, &mut memory)
        .map_err(|e| e.to_string())
}

/// A PHC string (`$argon2id$v=19$m=..,t=..,p=1$salt$hash`) for `password`.
pub fn hash_phc(password: &str) -> Result<String, String> {
    use base64::Engine as _;
    let salt: [u8; 16] = rand::random();
    let mut out = [0u8; HASH_LEN];
    argon2_raw(ARGON2_M_KIB, ARGON2_T, password.as_bytes(), &salt, &mut out)?;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    Ok(format!(
        "$argon2id$v=19$m={ARGON2_M_KIB},t={ARGON2_T},p=1${}${}",
        b64.encode(salt),
        b64.encode(out)
    ))
}

/// Checks `password` against a PHC hash string. CPU-heavy: call from a blocking thread.
pub fn verify(hash: &str, password: &str) -> bool {
    use base64::Engine as _;
    if password.len() > MAX_PASSWORD_LEN * 4 {
        return false;
    }
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&h) else {
        return false;
    };
    if h.algorithm.as_str() != "argon2id" || params.p_cost() != 1 {
        return false;
    }
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let Ok(salt) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(salt.as_str()) else {
        return false;
    };
    let expected = expected.as_bytes();
    let mut out = vec![0u8; expected.len()];
    if argon2_raw(
        params.m_cost(),
        params.t_cost(),
        password.as_bytes(),
        &salt,
        &mut out,
    )
    .is_err()
    {
        return false;
    }
    // Constant-time comparison.
    out.iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The password file.
#[derive(Debug, Clone)]
pub struct PasswordStore {
    dir: PathBuf,
}

impl PasswordStore {
    /// The store in `state_dir`.
    pub fn new(state_dir: &Path) -> PasswordStore {
        PasswordStore {
            dir: state_dir.to_owned(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(PASSWORD_FILE)
    }

    /// The stored hash, or `None` if there is no password file.
    ///
    /// # Errors
    /// The file exists but cannot be read, or holds no argon2id hash.
    pub fn load(&self) -> Result<Option<String>, PasswordFileError> {
        let path = self.path();
        let unreadable = |e: std::io::Error| PasswordFileError::Unreadable {
            path: path.clone(),
            dir: self.dir.clone(),
            reason: e.to_string(),
        };
        // Read on every logged-in request: a FIFO or device in its place must not hang it
        // (opening a FIFO blocks), nor a huge file cost much.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(unreadable(std::io::Error::other("not a regular file")));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(e)),
        }
        let mut bytes = Vec::new();
        match std::fs::File::open(&path)
            .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 4096), &mut bytes))
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(e)),
        }
        let invalid = || PasswordFileError::Invalid {
            path: path.clone(),
            dir: self.dir.clone(),
        };
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let hash = text.trim();
        if !PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str() == "argon2id") {
            return Err(invalid());
        }
        Ok(Some(hash.to_owned()))
    }

    /// Stores `password`, replacing any old one (`set-password`).
    ///
    /// # Errors
    /// See [`PasswordError`].
    pub fn set(&self, password: &str) -> Result<(), PasswordError> {
        let tmp = self.write_tmp(password)?;
        std::fs::rename(&tmp, self.path()).map_err(|source| PasswordError::Io {
            dir: self.dir.clone(),
            source,
        })
    }

    /// Stores `password` only if none is set (first-visit setup); atomic against a race.
    ///
    /// # Errors
    /// [`PasswordError::AlreadySet`] if one is set, else see [`PasswordError`].
    pub fn set_if_absent(&self, password: &str) -> Result<(), PasswordError> {
        match self.load() {
            Ok(None) => {}
            Ok(Some(_)) => return Err(PasswordError::AlreadySet),
            Err(e) => return Err(PasswordError::Broken(e)),
        }
        let tmp = self.write_tmp(password)?;
        let linked = std::fs::hard_link(&tmp, self.path());
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(PasswordError::AlreadySet)
            }
            Err(source) => Err(PasswordError::Io {
                dir: self.dir.clone(),
                source,
            }),
        }
    }

    fn write_tmp(&self, password: &str) -> Result<PathBuf, PasswordError> {
        let len = password.chars().count();
        if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&len) {
            return Err(PasswordError::BadLength);
        }
        let hash = hash_phc(password).map_err(PasswordError::Hash)?;
        let io = |source| PasswordError::Io {
            dir: self.dir.clone(),
            source,
        };
        let tmp = self
            .dir
            .join(format!("{PASSWORD_FILE}.{}.tmp", std::process::id()));
        // Run as root (`sudo web-svc set-password`), the file would be root's and the
        // service could not read it: it goes to the owner of the state directory.
        super::setup_code::write_private(&self.dir, &tmp, &hash).map_err(io)?;
        Ok(tmp)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use super::*;

    #[test]
    fn password_file_is_private_and_first_setup_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = PasswordStore::new(dir.path());
        assert_eq!(store.load(), Ok(None));
        assert!(matches!(
            store.set_if_absent("short"),
            Err(PasswordError::BadLength)
        ));
        store.set_if_absent("correct horse").unwrap();
        let meta = std::fs::metadata(dir.path().join(PASSWORD_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(matches!(
            store.set_if_absent("another one"),
            Err(PasswordError::AlreadySet)
        ));
        let hash = store.load().unwrap().unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify(&hash, "correct horse"));
        assert!(!verify(&hash, "correct horsf"));
        store.set("another one").unwrap();
        assert!(verify(&store.load().unwrap().unwrap(), "another one"));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn an_unusable_password_file_is_an_error_never_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let store = PasswordStore::new(dir.path());
        let file = dir.path().join(PASSWORD_FILE);
        // A FIFO in its place is refused without opening it (opening would block).
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = store.load().unwrap_err();
        assert!(matches!(e, PasswordFileError::Unreadable { .. }), "{e}");
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        let e = store.load().unwrap_err();
        assert!(matches!(e, PasswordFileError::Unreadable { .. }), "{e}");
        assert!(
            e.to_string().contains("sudo -u mecam web-svc set-password"),
            "{e}"
        );
        assert!(matches!(
            store.set_if_absent("correct horse"),
            Err(PasswordError::Broken(_))
        ));
        std::fs::remove_dir(&file).unwrap();
        for bad in [
            &b"\xff\xfe\n"[..],
            b"",
            b"not a hash\n",
            b"$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\n",
        ] {
            std::fs::write(&file, bad).unwrap();
            let e = store.load().unwrap_err();
            assert!(
                matches!(e, PasswordFileError::Invalid { .. }),
                "{bad:?}: {e}"
            );
            assert!(matches!(
                store.set_if_absent("correct horse"),
                Err(PasswordError::Broken(_))
            ));
            assert_eq!(
                std::fs::read(&file).unwrap(),
                bad,
                "the file was left alone"
            );
        }
    }

    #[test]
    fn set_password_as_root_gives_the_file_to_the_state_directory_owner() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: set-password cannot change an owner; nothing to check");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // `nobody`, standing in for the service user that owns the state directory.
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        PasswordStore::new(dir.path()).set("correct horse").unwrap();
        let meta = std::fs::metadata(dir.path().join(PASSWORD_FILE)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}
