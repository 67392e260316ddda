//! A process's memory figures from `/proc/<pid>/status`.

/// The `field` line (`VmRSS`, `VmHWM`, ...) of `/proc/<pid>/status`, in KiB; `pid` may be
/// `"self"`.
///
/// # Panics
/// The file cannot be read (the process is gone) or has no such field.
pub fn status_kib(pid: impl std::fmt::Display, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}"))
}
