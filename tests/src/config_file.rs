//! The shipped `systemd/mecam.toml`, generated from the code: every key of the three services,
//! commented out, with its default as the service itself prints it (`--print-config` over an
//! empty file) and the first sentence of the key's doc comment in the service's `config.rs`.
//! `tests/tests/config_file.rs` checks the shipped file is exactly this.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;

/// The command that rewrites the shipped file (said by the test when the two differ).
pub const REGENERATE: &str = "cargo build --workspace --bins && cargo run -q -p mecam-system-tests --bin mecam-default-config > systemd/mecam.toml";

/// Each section: its service, its config struct, and that struct's source.
const SECTIONS: [(&str, &str, &str, &str); 4] = [
    (
        "capture",
        "capture-svc",
        "CaptureConfig",
        include_str!("../../capture-svc/src/config.rs"),
    ),
    (
        "motion",
        "motion-svc",
        "MotionConfig",
        include_str!("../../motion-svc/src/config.rs"),
    ),
    (
        "mqtt",
        "motion-svc",
        "MqttConfig",
        include_str!("../../motion-svc/src/mqtt/config.rs"),
    ),
    (
        "web",
        "web-svc",
        "WebConfig",
        include_str!("../../web-svc/src/config.rs"),
    ),
];

/// Width the explanations are wrapped at.
const WIDTH: usize = 96;

const HEADER: &str = "\
# mecam configuration (/etc/mecam/mecam.toml): one section per service. Every key is optional
# and shown below commented out, with its default; remove the `#` to change one. Unknown keys
# are refused by name. The units pass no flag that overrides a key: what this file says
# happens. `capture-svc --print-config` (and motion-svc, web-svc) print the values in effect.
#
# Generated from the code (each key's doc comment and default); do not edit by hand, edit the
# code and run:
#   cargo build --workspace --bins && cargo run -q -p mecam-system-tests --bin mecam-default-config > systemd/mecam.toml
";

/// One key of a config struct, as its source declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The name in the file (after any `serde(rename)`).
    pub name: String,
    /// The first sentence of its doc comment.
    pub explanation: String,
}

/// The keys of `pub struct NAME` in `source`, in declaration order: fields with a `///` doc
/// comment, less `#[serde(skip)]` ones.
///
/// # Errors
/// No such struct, or a field without a doc comment.
pub fn keys(source: &str, name: &str) -> anyhow::Result<Vec<Key>> {
    let start = format!("pub struct {name} {{");
    let body = source
        .split_once(&start)
        .and_then(|(_, rest)| rest.split_once("\n}"))
        .map(|(body, _)| body)
        .with_context(|| format!("no `{start}` in the source"))?;
    let (mut keys, mut doc, mut rename, mut skip) = (Vec::new(), Vec::new(), None, false);
    for line in body.lines().map(str::trim) {
        if let Some(d) = line.strip_prefix("///") {
            doc.push(d.trim().to_owned());
        } else if line.starts_with("#[serde(skip") {
            skip = true;
        } else if let Some(r) = line.strip_prefix("#[serde(rename = \"") {
            rename = r.split('"').next().map(str::to_owned);
        } else if let Some(field) = line.strip_prefix("pub ") {
            let field = field
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            anyhow::ensure!(
                !doc.is_empty() || skip,
                "{name}.{field} has no doc comment: say in one sentence what it does"
            );
            if !skip {
                keys.push(Key {
                    name: rename.take().unwrap_or(field),
                    explanation: first_sentence(&doc.join(" ")),
                });
            }
            (doc, rename, skip) = (Vec::new(), None, false);
        }
    }
    Ok(keys)
}

/// The first sentence of a doc comment, without intra-doc link brackets.
fn first_sentence(doc: &str) -> String {
    let doc = doc.replace("[`", "`").replace("`]", "`");
    let end = doc
        .match_indices(". ")
        .map(|(i, _)| i + 1)
        .next()
        .unwrap_or(doc.len());
    doc[..end].trim().to_owned()
}

/// `text` as `# ` comment lines of at most [`WIDTH`] characters.
fn comment(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() > 1 && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// The defaults of `service` (in `bin_dir`) as `key -> value` lines, from `--print-config`
/// over an empty config file.
///
/// # Errors
/// The service cannot run or prints no section.
pub fn defaults(bin_dir: &Path, service: &str) -> anyhow::Result<Vec<(String, String)>> {
    let tmp = tempfile::tempdir()?;
    let empty = tmp.path().join("mecam.toml");
    std::fs::write(&empty, "")?;
    print_config(bin_dir, service, &empty)
}

/// What `service --config FILE --print-config` prints, as `section.key -> value` lines.
///
/// # Errors
/// The service cannot run or refuses the file.
pub fn print_config(
    bin_dir: &Path,
    service: &str,
    file: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    let out = Command::new(bin_dir.join(service))
        .arg("--config")
        .arg(file)
        .arg("--print-config")
        .output()
        .with_context(|| format!("running {service} --print-config"))?;
    anyhow::ensure!(
        out.status.success(),
        "{service} --print-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut section = String::new();
    let mut lines = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((k, v)) = l.split_once(" = ") {
            lines.push((format!("{section}.{}", k.trim()), v.trim().to_owned()));
        }
    }
    Ok(lines)
}

/// The whole file, from the services in `bin_dir` and their sources.
///
/// # Errors
/// A service cannot print its defaults; a key has no doc comment; a printed key is not in
/// the struct (or the other way round for a key with a default).
pub fn generate(bin_dir: &Path) -> anyhow::Result<String> {
    let mut out = String::from(HEADER);
    for (section, service, name, source) in SECTIONS {
        let keys = keys(source, name)?;
        let prefix = format!("{section}.");
        let defaults: Vec<(String, String)> = defaults(bin_dir, service)?
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_owned(), v)))
            .collect();
        if let Some((k, _)) = defaults
            .iter()
            .find(|(k, _)| !keys.iter().any(|key| key.name == *k))
        {
            anyhow::bail!("{service} prints `{k}`, which is not a documented field of {name}");
        }
        out.push_str(&format!("\n[{section}]\n"));
        for key in keys {
            out.push('\n');
            match defaults.iter().find(|(k, _)| *k == key.name) {
                Some((_, v)) => {
                    out.push_str(&comment(&key.explanation));
                    out.push_str(&format!("#{} = {v}\n", key.name));
                }
                None => {
                    out.push_str(&comment(&format!(
                        "{} Not set by default.",
                        key.explanation
                    )));
                    out.push_str(&format!("#{} =\n", key.name));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_fields_and_their_doc_comments() {
        let src = "/// The struct.\npub struct C {\n    /// Frames a second. More is smoother.\n    pub fps: u32,\n    /// Hidden.\n    #[serde(skip)]\n    pub dir: PathBuf,\n    /// Replay for ever (see [`X`]).\n    #[serde(rename = \"loop\")]\n    pub loop_file: bool,\n}\n";
        let k = keys(src, "C").unwrap();
        assert_eq!(
            k,
            vec![
                Key {
                    name: "fps".into(),
                    explanation: "Frames a second.".into()
                },
                Key {
                    name: "loop".into(),
                    explanation: "Replay for ever (see `X`).".into()
                },
            ]
        );
        let e = keys("pub struct C {\n    pub fps: u32,\n}\n", "C").unwrap_err();
        assert!(e.to_string().contains("C.fps has no doc comment"), "{e}");
        assert!(keys(src, "D").is_err());
    }

    #[test]
    fn long_explanations_are_wrapped_as_comments() {
        let text = "word ".repeat(60);
        let c = comment(&text);
        assert!(c.lines().count() > 1);
        assert!(c.lines().all(|l| l.starts_with("# ") && l.len() <= WIDTH));
        assert_eq!(c.split_whitespace().filter(|w| *w == "word").count(), 60);
    }
}
