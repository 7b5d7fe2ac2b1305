//! Builds the `.tcx` that ThreatConnect installs: one zip, one top-level folder, a `run.py`
//! launcher and the release binary.
//!
//! The platform launches Python apps only, so the package carries a tiny `run.py` (written
//! here, never hand-edited) that `exec`s the bundled binary with the same argv and environment.
//! The zip is reproducible: fixed entry order, timestamps, compression and permissions, so the
//! same inputs always give the same bytes.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::error::{Error, Result};

/// Stable app identifier used in the `.tcx` name and its top-level folder; TC keys upgrades on
/// `<APP_NAME>_v<major>`, so this must never change (and never contain spaces).
pub const APP_NAME: &str = "TaniumTrIndicators";

/// File name of the binary inside the package; `RUN_PY` executes exactly this file.
pub const BINARY_NAME: &str = "tanium-tr-indicators";

/// File name of the launcher inside the package; install.json's `programMain` must point at it.
pub const LAUNCHER_NAME: &str = "run.py";

/// The launcher the job executor starts (Python 3.6+): make the bundled binary executable
/// (unzipping may drop the mode bits), then replace this process with it, same argv and
/// environment, so `TC_APP_PARAM_FILE`/`TC_APP_PARAM_KEY` pass through and its exit code is ours.
pub const RUN_PY: &str = r#""""ThreatConnect launcher: runs the bundled tanium-tr-indicators binary (written by the packager)."""
import os
import stat
import sys

BINARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tanium-tr-indicators")
EXECUTABLE = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


def main():
    try:
        mode = os.stat(BINARY).st_mode
        if mode & EXECUTABLE != EXECUTABLE:
            os.chmod(BINARY, mode | EXECUTABLE)
        os.execv(BINARY, [BINARY] + sys.argv[1:])
    except OSError as err:
        sys.stderr.write("run.py: cannot start {}: {}\n".format(BINARY, err))
        sys.exit(1)


if __name__ == "__main__":
    main()
"#;

/// Files copied from the app dir after install.json, in archive order; `false` marks one that
/// may be absent (Job apps do not need layout.json, so it ships only when the repo has it).
const APP_FILES: [(&str, bool); 2] = [("layout.json", false), ("README.md", true)];

/// Mode bits of the package entries that are data, not programs.
const MODE_FILE: u32 = 0o644;
/// Mode bits of the launcher, the binary and the top-level folder.
const MODE_EXEC: u32 = 0o755;

/// What goes into a package and where it is written; the CLI and `examples/package.rs` fill it.
#[derive(Debug, Clone)]
pub struct PackageOptions {
    /// Folder holding install.json, README.md and (optionally) layout.json.
    pub app_dir: PathBuf,
    /// The release binary to ship (built against glibc 2.17 by `package.sh`).
    pub binary: PathBuf,
    /// Where `<APP_NAME>_v<major>.tcx` is written (created if missing).
    pub out_dir: PathBuf,
}

/// Writes `<out_dir>/<APP_NAME>_v<major>.tcx` from the options and returns its path.
///
/// The major version comes from install.json `programVersion`; install.json must launch
/// `run.py` (`programLanguage` PYTHON, `programMain` `run` or `run.py`), or TC would not start
/// the binary. The file is written under a temporary name and renamed, so a failed run never
/// leaves a half-written package behind.
pub fn build_tcx(opts: &PackageOptions) -> Result<PathBuf> {
    let install_path = opts.app_dir.join("install.json");
    let install = read_file(&install_path)?;
    let folder = package_folder(&install_path, &install)?;

    let mut entries: Vec<(String, Vec<u8>, u32)> =
        vec![(format!("{folder}/install.json"), install, MODE_FILE)];
    for (name, required) in APP_FILES {
        let path = opts.app_dir.join(name);
        if !required && !path.exists() {
            continue;
        }
        entries.push((format!("{folder}/{name}"), read_file(&path)?, MODE_FILE));
    }
    entries.push((
        format!("{folder}/{LAUNCHER_NAME}"),
        RUN_PY.as_bytes().to_vec(),
        MODE_EXEC,
    ));
    if !opts.binary.is_file() {
        return Err(Error::Other(format!(
            "package: binary {} is not a file (build it first)",
            opts.binary.display()
        )));
    }
    entries.push((
        format!("{folder}/{BINARY_NAME}"),
        read_file(&opts.binary)?,
        MODE_EXEC,
    ));

    fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;
    let target = opts.out_dir.join(format!("{folder}.tcx"));
    let partial = opts.out_dir.join(format!(".{folder}.tcx.partial"));
    let written = write_zip(&partial, &folder, &entries)
        .and_then(|()| fs::rename(&partial, &target).map_err(|e| Error::io(&target, e)));
    if written.is_err() {
        let _ = fs::remove_file(&partial);
    }
    written.map(|()| target)
}

/// `<APP_NAME>_v<major>` from install.json, after checking it launches `run.py`.
fn package_folder(path: &Path, install: &[u8]) -> Result<String> {
    let bad = |what: String| Error::Other(format!("package: {}: {what}", path.display()));
    let json: serde_json::Value =
        serde_json::from_slice(install).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let field = |name: &str| json.get(name).and_then(serde_json::Value::as_str);

    let version = field("programVersion").ok_or_else(|| bad("programVersion missing".into()))?;
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            bad(format!(
                "programVersion {version:?} is not major.minor.patch"
            ))
        })?;
    let language = field("programLanguage").unwrap_or_default();
    if !language.eq_ignore_ascii_case("PYTHON") {
        return Err(bad(format!(
            "programLanguage is {language:?}; the package starts through run.py, so it must be PYTHON"
        )));
    }
    let main = field("programMain").unwrap_or_default();
    if main != "run" && main != LAUNCHER_NAME {
        return Err(bad(format!(
            "programMain is {main:?}; the package starts through run.py, so it must be \"run\""
        )));
    }
    Ok(format!("{APP_NAME}_v{major}"))
}

/// Writes the archive: the folder entry, then each file, all with fixed metadata.
fn write_zip(path: &Path, folder: &str, entries: &[(String, Vec<u8>, u32)]) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut zip = ZipWriter::new(file);
    let zip_err = |e: zip::result::ZipError| {
        Error::Other(format!("package: writing {}: {e}", path.display()))
    };
    // DateTime::default() is 1980-01-01 00:00:00, the earliest time a zip can hold.
    let base = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(9))
        .last_modified_time(DateTime::default())
        .large_file(false);
    zip.add_directory(format!("{folder}/"), base.unix_permissions(MODE_EXEC))
        .map_err(zip_err)?;
    for (name, data, mode) in entries {
        zip.start_file(name.as_str(), base.unix_permissions(*mode))
            .map_err(zip_err)?;
        zip.write_all(data).map_err(|e| Error::io(path, e))?;
    }
    let mut file = zip.finish().map_err(zip_err)?;
    file.flush().map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, e))
}

/// Highest `GLIBC_x.y` symbol version the binary needs (`objdump -T`), so packaging can refuse
/// a binary the TC job executor's older glibc cannot load; `None` for a static or musl binary.
pub fn glibc_max_version(binary: &Path) -> Result<Option<(u32, u32)>> {
    let output = Command::new("objdump")
        .arg("-T")
        .arg(binary)
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                Error::Other("objdump not found: install binutils to check glibc versions".into())
            }
            _ => Error::Other(format!("running objdump -T {}: {e}", binary.display())),
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // A static binary has no dynamic symbol table: nothing from glibc is needed at load time.
        if stderr.contains("not a dynamic object") {
            return Ok(None);
        }
        return Err(Error::Other(format!(
            "objdump -T {} failed: {}",
            binary.display(),
            stderr.trim()
        )));
    }
    Ok(max_glibc_in(&String::from_utf8_lossy(&output.stdout)))
}

/// The highest `GLIBC_major.minor[.patch]` named in `objdump -T` output (patch ignored).
pub fn max_glibc_in(objdump_output: &str) -> Option<(u32, u32)> {
    objdump_output
        .split("GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let version: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let mut parts = version.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next()?.parse().ok()?;
            Some((major, minor))
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_glibc_reads_symbol_versions_and_ignores_private() {
        let out = "\
0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.2.5) write
0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.17) clock_gettime
0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.3) __tls_get_addr
0000000000000000      DF *UND*  0000000000000000 (GLIBC_PRIVATE) _dl_foo
0000000000000000  w   D  *UND*  0000000000000000  Base        __gmon_start__
";
        assert_eq!(max_glibc_in(out), Some((2, 17)));
        assert_eq!(max_glibc_in("GLIBC_2.9 GLIBC_2.10"), Some((2, 10)));
        assert_eq!(max_glibc_in("DYNAMIC SYMBOL TABLE:\nno symbols\n"), None);
        assert_eq!(max_glibc_in("(GLIBC_PRIVATE) x"), None);
    }

    #[test]
    fn folder_name_uses_major_version_and_requires_the_launcher() {
        let p = Path::new("install.json");
        let ok = br#"{"programVersion":"3.4.5","programLanguage":"PYTHON","programMain":"run"}"#;
        assert_eq!(package_folder(p, ok).unwrap(), "TaniumTrIndicators_v3");
        let java = br#"{"programVersion":"1.0.0","programLanguage":"JAVA","programMain":"run"}"#;
        assert!(package_folder(p, java)
            .unwrap_err()
            .to_string()
            .contains("programLanguage"));
        let main = br#"{"programVersion":"1.0.0","programLanguage":"PYTHON","programMain":"app"}"#;
        assert!(package_folder(p, main)
            .unwrap_err()
            .to_string()
            .contains("programMain"));
        let version = br#"{"programVersion":"v1","programLanguage":"PYTHON","programMain":"run"}"#;
        assert!(package_folder(p, version)
            .unwrap_err()
            .to_string()
            .contains("programVersion"));
        assert!(package_folder(p, b"{")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
    }
}
