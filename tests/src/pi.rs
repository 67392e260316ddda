//! The Raspberry Pi's architectures on this machine: minimal Debian bookworm root file systems
//! for `arm64` (64-bit Pi OS) and `armhf` (32-bit Pi OS), run through `qemu-user-static` and
//! binfmt_misc, booted with [`crate::nspawn::BootOptions::root`].
//!
//! A root file system is built once (`debootstrap --foreign`, then its second stage run by the
//! emulated shell in a chroot) into a cache directory outside the repository,
//! [`cache_dir`] (`$MECAM_ROOTFS_CACHE`, else [`DEFAULT_CACHE`]), and reused by every later
//! run: the boot lays a throwaway overlay over it, so a test never changes it. Two tests that
//! want the same one at once take turns on an `flock` beside it; the build goes to a private
//! directory renamed into place when complete, so a half-built one is never used.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// Where the root file systems are kept when `$MECAM_ROOTFS_CACHE` is not set.
pub const DEFAULT_CACHE: &str = "/var/cache/mecam-test";
/// The Debian release the Pi OS of today is built on.
pub const SUITE: &str = "bookworm";
/// The Debian mirror when `$MECAM_DEBIAN_MIRROR` is not set.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Packages beyond `minbase`: systemd as PID 1 (the units), dbus (systemctl), procps (kill).
pub const INCLUDE: &str = "systemd,systemd-sysv,dbus,procps";
/// The file whose presence marks a root file system as complete.
const COMPLETE: &str = ".mecam-rootfs-complete";

/// A Pi architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// 64-bit Pi OS (Pi 3, 4, 5, Zero 2 W).
    Arm64,
    /// 32-bit Pi OS (every Pi; the usual one on a Zero 2 W).
    Armhf,
}

impl Arch {
    /// Debian's name.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
        }
    }

    /// Rust's target triple.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
            Arch::Armhf => "armv7-unknown-linux-gnueabihf",
        }
    }

    /// The binfmt_misc entry (and `update-binfmts` name) of its qemu.
    pub fn binfmt_name(self) -> &'static str {
        match self {
            Arch::Arm64 => "qemu-aarch64",
            Arch::Armhf => "qemu-arm",
        }
    }

    /// The ELF header bytes and mask binfmt_misc matches (as `qemu-user-static` registers).
    fn elf_magic_mask(self) -> (&'static str, &'static str) {
        match self {
            Arch::Arm64 => (
                r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
                r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
            ),
            Arch::Armhf => (
                r"\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00",
                r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
            ),
        }
    }

    /// The static qemu binary `qemu-user-static` installs.
    fn qemu_static(self) -> String {
        format!("/usr/bin/{}-static", self.binfmt_name())
    }
}

/// The cache directory of the root file systems.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MECAM_ROOTFS_CACHE")
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// Why the emulated tests cannot run here, if they cannot (beyond [`crate::nspawn`]'s own).
pub fn unavailable(arch: Arch) -> Option<String> {
    if !Path::new(&arch.qemu_static()).exists() {
        return Some(format!(
            "{} not found: apt-get install qemu-user-static",
            arch.qemu_static()
        ));
    }
    if Command::new("debootstrap")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        return Some("debootstrap not found: apt-get install debootstrap".into());
    }
    None
}

/// Make the kernel run `arch`'s binaries through qemu, in any root: mount binfmt_misc if it
/// is not, and register the interpreter with the `F` flag (opened once, now, so it works
/// inside a chroot or container that has no qemu) if it is missing.
///
/// # Errors
/// The mount or registration failed, or an entry exists without the `F` flag (a chroot
/// could not find its interpreter): the message says what to do.
pub fn ensure_binfmt(arch: Arch) -> anyhow::Result<()> {
    let fs = Path::new("/proc/sys/fs/binfmt_misc");
    if !fs.join("register").exists() {
        run(Command::new("mount")
            .args(["-t", "binfmt_misc", "binfmt_misc"])
            .arg(fs))
        .context("mounting binfmt_misc (are we root?)")?;
    }
    let entry = fs.join(arch.binfmt_name());
    if !entry.exists() {
        // Debian's own registration first (binfmt-support), then a direct one.
        let _ = Command::new("update-binfmts")
            .args(["--enable", arch.binfmt_name()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if !entry.exists() {
        // qemu-user-static's own entry (for systemd-binfmt), else the same by hand.
        let conf = Path::new("/usr/lib/binfmt.d").join(format!("{}.conf", arch.binfmt_name()));
        let line = std::fs::read_to_string(&conf).unwrap_or_else(|_| {
            let (magic, mask) = arch.elf_magic_mask();
            format!(
                ":{}:M::{magic}:{mask}:{}:F",
                arch.binfmt_name(),
                arch.qemu_static()
            )
        });
        std::fs::write(fs.join("register"), line)
            .with_context(|| format!("registering {} with binfmt_misc", arch.binfmt_name()))?;
    }
    let text = std::fs::read_to_string(&entry)?;
    anyhow::ensure!(
        text.lines().next() == Some("enabled")
            && text
                .lines()
                .any(|l| l.strip_prefix("flags: ").is_some_and(|f| f.contains('F'))),
        "{} is registered with binfmt_misc but not enabled with the F flag, so a chroot \
         cannot find its interpreter: reinstall qemu-user-static, or \
         `echo -1 > {}` to let this test register it\n{text}",
        entry.display(),
        entry.display()
    );
    Ok(())
}

/// The root file system of `arch`, built now if the cache has none (see the module doc).
///
/// # Errors
/// debootstrap failed (its log is in the error; the half-built directory is left for
/// inspection and rebuilt by the next run).
pub fn rootfs(arch: Arch) -> anyhow::Result<PathBuf> {
    ensure_binfmt(arch)?;
    let cache = cache_dir();
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("creating the root file system cache {}", cache.display()))?;
    let name = format!("{SUITE}-{}", arch.debian());
    let dir = cache.join(&name);
    if dir.join(COMPLETE).exists() {
        return Ok(dir);
    }
    let lock = File::create(cache.join(format!("{name}.lock")))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("locking the root file system cache")?;
    if dir.join(COMPLETE).exists() {
        return Ok(dir);
    }
    let tmp = cache.join(format!("{name}.building"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("removing the half-built {}", tmp.display()))?;
    }
    let mirror = std::env::var("MECAM_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.to_owned());
    let started = std::time::Instant::now();
    run(Command::new("debootstrap")
        .args(["--foreign", "--variant=minbase"])
        .arg(format!("--arch={}", arch.debian()))
        .arg(format!("--include={INCLUDE}"))
        .arg(SUITE)
        .arg(&tmp)
        .arg(&mirror))
    .context("debootstrap, first stage (network to the Debian mirror? $MECAM_DEBIAN_MIRROR)")?;
    run(Command::new("chroot")
        .arg(&tmp)
        .args(["/debootstrap/debootstrap", "--second-stage"]))
    .context("debootstrap, second stage (emulated, in a chroot)")?;
    // apt inside the container fetches the package's dependencies from the same mirror. Its
    // lists are fetched once, here: parsing them is minutes under an emulated CPU.
    std::fs::write(
        tmp.join("etc/apt/sources.list"),
        format!("deb {mirror} {SUITE} main\n"),
    )?;
    std::fs::copy("/etc/resolv.conf", tmp.join("etc/resolv.conf"))
        .context("copying /etc/resolv.conf into the root for apt-get update")?;
    run(Command::new("chroot")
        .arg(&tmp)
        .args(["apt-get", "update", "-q"]))
    .context("apt-get update in the new root (network to the Debian mirror?)")?;
    std::fs::write(tmp.join(COMPLETE), "")?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir)?;
    println!(
        "built the {} root file system in {:.0?} at {}",
        arch.debian(),
        started.elapsed(),
        dir.display()
    );
    Ok(dir)
}

/// The package to install for `arch`: the newest `mecam_*_<arch>.deb` in `$MECAM_DEB_DIR`,
/// else in the repository's `target/package` (where `scripts/package` writes it).
///
/// # Errors
/// There is none: the message says how to make one.
pub fn deb(arch: Arch) -> Result<PathBuf, String> {
    let deb_dir = std::env::var_os("MECAM_DEB_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/package"),
        PathBuf::from,
    );
    let suffix = format!("_{}.deb", arch.debian());
    std::fs::read_dir(&deb_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("mecam_") && n.ends_with(&suffix)
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, deb)| deb)
        .ok_or_else(|| {
            format!(
                "no mecam_*{suffix} in {}: run `scripts/package {}` first (or set MECAM_DEB_DIR)",
                deb_dir.display(),
                arch.debian()
            )
        })
}

/// Run a command to completion; its output goes into the error if it fails.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        tail(&out.stdout),
        tail(&out.stderr)
    );
    Ok(())
}

/// The last 4 KiB of a command's output.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text.len().saturating_sub(4096);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}
