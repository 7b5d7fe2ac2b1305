//! The platform's reporting channels: app.log, message.tc, results.tc and the exit code.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// The log file name inside `tc_log_path`, as tcex names it.
pub const LOG_FILE: &str = "app.log";
/// The one-line status the job table shows.
pub const MESSAGE_FILE: &str = "message.tc";
/// Params the platform stores for the next run.
pub const RESULTS_FILE: &str = "results.tc";
/// The platform's limit for message.tc.
pub const MESSAGE_MAX_CHARS: usize = 255;

/// Values that must never be written anywhere (tcex's "filter sensitive"): every credential
/// is registered here once known, and log lines, message.tc and `--print-config` are masked.
static SENSITIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Shortest value worth masking; shorter ones would garble every line they happen to match.
const MIN_MASKED_LEN: usize = 3;

/// Registers a credential so that it is masked wherever the app writes text, also in its
/// JSON-escaped form (the config is logged and printed as JSON).
pub fn mask_secret(value: &str) {
    if value.chars().count() < MIN_MASKED_LEN {
        return;
    }
    let escaped = serde_json::to_string(value).unwrap_or_default();
    let escaped = escaped
        .strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .unwrap_or(value);
    let mut list = SENSITIVE.lock().unwrap_or_else(|p| p.into_inner());
    for v in [value, escaped] {
        if !list.iter().any(|known| known == v) {
            list.push(v.to_string());
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    list.sort_by_key(|v| std::cmp::Reverse(v.len()));
}

/// Replaces every registered credential in `text` with `***`.
pub fn redact(text: &str) -> String {
    let list = SENSITIVE.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = text.to_string();
    for v in list.iter() {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), crate::secret::REDACTED);
        }
    }
    out
}

/// How a run ended, as the platform reads the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything worked.
    Success = 0,
    /// The run could not do its job.
    Failure = 1,
    /// Some items failed; the rest was delivered.
    Partial = 3,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Writes each formatted record to both the log file and stderr.
struct Tee {
    file: Mutex<fs::File>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // stderr is best effort: a closed stderr must not stop the file log.
        let _ = io::stderr().write_all(buf);
        match self.file.lock() {
            Ok(mut f) => f.write_all(buf),
            Err(poisoned) => poisoned.into_inner().write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        match self.file.lock() {
            Ok(mut f) => f.flush(),
            Err(poisoned) => poisoned.into_inner().flush(),
        }
    }
}

/// Sends log records to `{log_dir}/app.log` (appended) and stderr, one line per event with a
/// UTC timestamp and level. HTTP library internals are capped at warn: they may print URLs
/// whose queries carry tokens.
pub fn init_logging(level: log::LevelFilter, log_dir: &Path) -> Result<()> {
    fs::create_dir_all(log_dir).map_err(|e| Error::io(log_dir, e))?;
    let path = log_dir.join(LOG_FILE);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    env_logger::Builder::new()
        .filter_level(level)
        .filter_module("ureq", level.min(log::LevelFilter::Warn))
        .filter_module("ureq_proto", level.min(log::LevelFilter::Warn))
        .filter_module("rustls", level.min(log::LevelFilter::Warn))
        .format(move |buf, record| {
            let now = time::OffsetDateTime::now_utc();
            let ts = now.format(&fmt).unwrap_or_default();
            let msg = redact(&record.args().to_string()).replace(['\r', '\n'], " ");
            writeln!(buf, "{ts} {:<5} {msg}", record.level())
        })
        .target(env_logger::Target::Pipe(Box::new(Tee {
            file: Mutex::new(file),
        })))
        .try_init()
        .map_err(|e| Error::Other(format!("logging is already set up: {e}")))
}

/// Flattens a message to one line of at most 255 characters (cut with "...").
pub fn one_line(msg: &str) -> String {
    let flat: String = msg
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if flat.chars().count() <= MESSAGE_MAX_CHARS {
        flat
    } else {
        let cut: String = flat.chars().take(MESSAGE_MAX_CHARS - 3).collect();
        format!("{}...", cut.trim_end())
    }
}

/// Writes message.tc: one line, at most 255 characters, replacing any earlier message.
pub fn write_message(out_dir: &Path, msg: &str) -> Result<()> {
    fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let path = out_dir.join(MESSAGE_FILE);
    fs::write(&path, format!("{}\n", one_line(&redact(msg)))).map_err(|e| Error::io(&path, e))
}

/// Updates results.tc (`key = value` lines): a present key is updated in place, a new key is
/// appended, `None` removes the key; other lines are kept as they are.
pub fn update_results(out_dir: &Path, updates: &[(&str, Option<String>)]) -> Result<()> {
    fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let path = out_dir.join(RESULTS_FILE);
    let existing = match fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let clean = |v: &str| v.replace(['\r', '\n'], " ");
    let mut lines: Vec<String> = existing.lines().map(str::to_string).collect();
    for (key, value) in updates {
        let key = key.trim();
        let pos = lines
            .iter()
            .position(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == key));
        match (pos, value) {
            (Some(i), Some(v)) => lines[i] = format!("{key} = {}", clean(v)),
            (Some(i), None) => {
                lines.remove(i);
                // A key written twice by hand: remove every copy.
                lines.retain(|l| l.split_once('=').is_none_or(|(k, _)| k.trim() != key));
            }
            (None, Some(v)) => lines.push(format!("{key} = {}", clean(v))),
            (None, None) => {}
        }
    }
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    let tmp = out_dir.join(format!(".{RESULTS_FILE}.tmp"));
    fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_one_line_and_at_most_255_chars() {
        let dir = tempfile::tempdir().unwrap();
        write_message(dir.path(), "first\nsecond\r\n  third").unwrap();
        let m = fs::read_to_string(dir.path().join(MESSAGE_FILE)).unwrap();
        assert_eq!(m, "first second third\n");
        let long = "é".repeat(400);
        write_message(dir.path(), &long).unwrap();
        let m = fs::read_to_string(dir.path().join(MESSAGE_FILE)).unwrap();
        assert_eq!(m.trim_end_matches('\n').chars().count(), 255);
        assert!(m.ends_with("...\n"));
        assert_eq!(m.lines().count(), 1);
    }

    #[test]
    fn results_update_in_place_append_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESULTS_FILE);
        fs::write(&path, "a = 1\nlast_modified = old\nb = 2\n").unwrap();
        update_results(
            dir.path(),
            &[
                ("last_modified", Some("2024-01-01T00:00:00Z".into())),
                ("b", None),
                ("c", Some("x\ny".into())),
                ("missing", None),
            ],
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "a = 1\nlast_modified = 2024-01-01T00:00:00Z\nc = x y\n"
        );
        update_results(dir.path(), &[("a", Some("3".into()))]).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "a = 3\nlast_modified = 2024-01-01T00:00:00Z\nc = x y\n"
        );
        let fresh = tempfile::tempdir().unwrap();
        update_results(&fresh.path().join("out"), &[("k", Some("v".into()))]).unwrap();
        assert_eq!(
            fs::read_to_string(fresh.path().join("out").join(RESULTS_FILE)).unwrap(),
            "k = v\n"
        );
    }

    #[test]
    fn registered_secrets_are_masked_in_messages() {
        mask_secret("hunter2-xyz");
        mask_secret("ab");
        assert_eq!(redact("pw=hunter2-xyz, ab"), "pw=***, ab");
        let dir = tempfile::tempdir().unwrap();
        write_message(dir.path(), "login with hunter2-xyz failed").unwrap();
        let m = fs::read_to_string(dir.path().join(MESSAGE_FILE)).unwrap();
        assert_eq!(m, "login with *** failed\n");
        // A value with quotes or backslashes is masked in JSON text too.
        mask_secret("tag = \"x\\y\"");
        let json = serde_json::json!({ "tql": "tag = \"x\\y\"" }).to_string();
        assert_eq!(redact(&json), r#"{"tql":"***"}"#);
    }

    #[test]
    fn exit_codes_match_the_platform() {
        assert_eq!(ExitStatus::Success.code(), 0);
        assert_eq!(ExitStatus::Failure.code(), 1);
        assert_eq!(ExitStatus::Partial.code(), 3);
    }
}
