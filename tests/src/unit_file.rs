//! The repository's unit files in `systemd/`, read as text: a key's values, `MemoryMax`.

use anyhow::Context as _;

use crate::bins;

/// The text of the repository's unit `name` (e.g. `mecam-web.service`).
///
/// # Errors
/// The file is unreadable.
pub fn text(name: &str) -> anyhow::Result<String> {
    let path = bins::systemd_dir().join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Every value of `key=` in `text`, in order.
pub fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// A systemd byte size (`64M`, `1G`, `512K`, `1048576`) in bytes.
///
/// # Errors
/// Not a plain byte size (percentages and `infinity` are not).
pub fn bytes(v: &str) -> anyhow::Result<u64> {
    let v = v.trim();
    let (num, mult) = match v.chars().last() {
        Some('K') => (&v[..v.len() - 1], 1 << 10),
        Some('M') => (&v[..v.len() - 1], 1 << 20),
        Some('G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    Ok(num
        .parse::<u64>()
        .with_context(|| format!("{v:?} is not a byte size"))?
        * mult)
}

/// The unit's `MemoryMax` in bytes.
///
/// # Errors
/// Unreadable unit, or not exactly one `MemoryMax=` with a byte size.
pub fn memory_max(name: &str) -> anyhow::Result<u64> {
    let t = text(name)?;
    let v = values(&t, "MemoryMax");
    anyhow::ensure!(v.len() == 1, "{name}: {} MemoryMax= lines", v.len());
    bytes(v[0])
}

/// The unit of a service binary (`web-svc` → `mecam-web.service`).
pub fn unit_of(service: &str) -> String {
    format!("mecam-{}.service", service.trim_end_matches("-svc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_and_units() {
        assert_eq!(bytes("64M").unwrap(), 64 << 20);
        assert_eq!(bytes("512K").unwrap(), 512 << 10);
        assert_eq!(bytes("1G").unwrap(), 1 << 30);
        assert_eq!(bytes("4096").unwrap(), 4096);
        assert!(bytes("50%").is_err());
        assert_eq!(unit_of("web-svc"), "mecam-web.service");
        assert_eq!(values("A=1\nAB=2\nA=3\n", "A"), vec!["1", "3"]);
    }

    #[test]
    fn every_service_has_a_memory_max() {
        for b in bins::SERVICES {
            assert!(memory_max(&unit_of(b)).unwrap() >= 1 << 20, "{b}");
        }
    }
}
