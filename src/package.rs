//! Builds the `.tcx` that ThreatConnect installs: one zip, one top-level folder, a `run.py`
//! launcher and the release binary.
//!
//! The platform launches Python apps only, so the package carries a tiny `run.py` (written
//! here, never hand-edited) that `exec`s the bundled binary with the same argv and environment.
//! The zip is reproducible: fixed entry order, timestamps, compression and permissions, so the
//! same inputs always give the same bytes.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// The newest glibc ThreatConnect's job executors can be counted on to have: a binary that
/// needs a newer `GLIBC_x.y` version does not start there.
pub const MAX_GLIBC: (u32, u32) = (2, 17);

/// Highest `GLIBC_x.y` version the binary needs from the C library, as the dynamic loader
/// checks it (the ELF's version needs); `None` for a static or musl binary.
pub fn glibc_max_version(binary: &Path) -> Result<Option<(u32, u32)>> {
    let names = version_needs(&read_file(binary)?)
        .map_err(|why| Error::Other(format!("{}: {why}", binary.display())))?;
    Ok(names.iter().filter_map(|n| glibc_version(n)).max())
}

/// `(2, 17)` from `GLIBC_2.17` (or `GLIBC_2.17.1`); None for `GLIBC_PRIVATE` and other names.
fn glibc_version(name: &str) -> Option<(u32, u32)> {
    let mut parts = name.strip_prefix("GLIBC_")?.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

const SHT_GNU_VERNEED: u64 = 0x6fff_fffe;
const MALFORMED: &str = "truncated or malformed ELF file";

/// The version names (`GLIBC_2.17`, `GCC_3.0`, ...) an ELF file needs from shared libraries:
/// every Vernaux entry of its SHT_GNU_verneed section (`.gnu.version_r`), named in the string
/// table that section links to.
// The ELF walk in the order the format nests (header, section table, verneed entries, their
// aux entries): each step reads the offsets the one before found.
fn version_needs(elf: &[u8]) -> std::result::Result<Vec<String>, &'static str> {
    if !elf.starts_with(b"\x7fELF") {
        return Err("not an ELF file");
    }
    let wide = match elf.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err("unknown ELF class"),
    };
    let little = match elf.get(5) {
        Some(1) => true,
        Some(2) => false,
        _ => return Err("unknown ELF byte order"),
    };
    let int = |at: u64, len: u64| -> std::result::Result<u64, &'static str> {
        let start = usize::try_from(at).map_err(|_| MALFORMED)?;
        let bytes = elf
            .get(start..start.saturating_add(len as usize))
            .filter(|b| b.len() == len as usize)
            .ok_or(MALFORMED)?;
        let fold = |n: u64, b: &u8| n << 8 | u64::from(*b);
        Ok(if little {
            bytes.iter().rev().fold(0, fold)
        } else {
            bytes.iter().fold(0, fold)
        })
    };
    let word = if wide { 8 } else { 4 };
    let (shoff, shentsize, mut shnum) = if wide {
        (int(0x28, 8)?, int(0x3a, 2)?, int(0x3c, 2)?)
    } else {
        (int(0x20, 4)?, int(0x2e, 2)?, int(0x30, 2)?)
    };
    // Section header fields: (type, offset, link, info).
    let section = |i: u64| -> std::result::Result<(u64, u64, u64, u64), &'static str> {
        let at = shoff.saturating_add(i.saturating_mul(shentsize));
        Ok((
            int(at + 4, 4)?,
            int(at + 8 + 2 * word, word)?,
            int(at + 8 + 4 * word, 4)?,
            int(at + 12 + 4 * word, 4)?,
        ))
    };
    if shnum == 0 && shoff != 0 {
        // More sections than e_shnum can count: section 0's size holds the number.
        shnum = int(shoff.saturating_add(8 + 3 * word), word)?;
    }
    let c_string = |at: u64| -> std::result::Result<String, &'static str> {
        let tail = usize::try_from(at)
            .ok()
            .and_then(|at| elf.get(at..))
            .ok_or(MALFORMED)?;
        let end = tail.iter().position(|b| *b == 0).ok_or(MALFORMED)?;
        Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
    };
    let mut names = Vec::new();
    for i in 0..shnum {
        let (kind, offset, link, info) = section(i)?;
        if kind != SHT_GNU_VERNEED {
            continue;
        }
        let strings = section(link)?.1;
        // Verneed: version u16, cnt u16, file u32, aux u32, next u32; Vernaux: hash u32,
        // flags u16, other u16, name u32, next u32. `aux` and `next` are relative offsets.
        let mut need = offset;
        for _ in 0..info {
            let mut aux = need.saturating_add(int(need.saturating_add(8), 4)?);
            for _ in 0..int(need.saturating_add(2), 2)? {
                names.push(c_string(
                    strings.saturating_add(int(aux.saturating_add(8), 4)?),
                )?);
                match int(aux.saturating_add(12), 4)? {
                    0 => break,
                    next => aux = aux.saturating_add(next),
                }
            }
            match int(need.saturating_add(12), 4)? {
                0 => break,
                next => need = need.saturating_add(next),
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF file (no code, no program headers) whose version needs list `needs`:
    /// the header, a string table, the verneed section and three section headers.
    fn elf(wide: bool, little: bool, needs: &[(&str, &[&str])]) -> Vec<u8> {
        let put = |out: &mut Vec<u8>, n: u64, len: usize| {
            let bytes = n.to_be_bytes();
            let mut b = bytes[8 - len..].to_vec();
            if little {
                b.reverse();
            }
            out.extend(b);
        };
        let word = if wide { 8 } else { 4 };
        let header = if wide { 64 } else { 52 };
        let mut strings = vec![0u8];
        let mut add = |s: &str| {
            let at = strings.len() as u64;
            strings.extend(s.as_bytes());
            strings.push(0);
            at
        };
        let mut verneed = Vec::new();
        for (i, (file, versions)) in needs.iter().enumerate() {
            let next = if i + 1 == needs.len() {
                0
            } else {
                16 + 16 * versions.len() as u64
            };
            put(&mut verneed, 1, 2);
            put(&mut verneed, versions.len() as u64, 2);
            put(&mut verneed, add(file), 4);
            put(&mut verneed, 16, 4);
            put(&mut verneed, next, 4);
            for (j, v) in versions.iter().enumerate() {
                put(&mut verneed, 0, 4);
                put(&mut verneed, 0, 4);
                put(&mut verneed, add(v), 4);
                put(
                    &mut verneed,
                    if j + 1 == versions.len() { 0 } else { 16 },
                    4,
                );
            }
        }
        let strings_at = header as u64;
        let verneed_at = strings_at + strings.len() as u64;
        let shoff = verneed_at + verneed.len() as u64;
        let mut out = b"\x7fELF".to_vec();
        out.extend([if wide { 2 } else { 1 }, if little { 1 } else { 2 }, 1]);
        out.resize(if wide { 0x28 } else { 0x20 }, 0);
        put(&mut out, shoff, word);
        out.resize(if wide { 0x3a } else { 0x2e }, 0);
        put(&mut out, if wide { 64 } else { 40 }, 2);
        put(&mut out, 3, 2);
        out.resize(header, 0);
        out.extend(&strings);
        out.extend(&verneed);
        let sections = [
            (0, 0, 0, 0, 0),
            (3, strings_at, strings.len() as u64, 0, 0),
            (
                0x6fff_fffe,
                verneed_at,
                verneed.len() as u64,
                1,
                needs.len() as u64,
            ),
        ];
        for (kind, offset, size, link, info) in sections {
            put(&mut out, 0, 4);
            put(&mut out, kind, 4);
            put(&mut out, 0, word);
            put(&mut out, 0, word);
            put(&mut out, offset, word);
            put(&mut out, size, word);
            put(&mut out, link, 4);
            put(&mut out, info, 4);
            put(&mut out, 0, word);
            put(&mut out, 0, word);
        }
        out
    }

    #[test]
    fn version_needs_are_read_from_the_elf_in_every_class_and_byte_order() {
        let needs: &[(&str, &[&str])] = &[
            ("libgcc_s.so.1", &["GCC_3.0"]),
            ("libm.so.6", &["GLIBC_2.29"]),
            (
                "libc.so.6",
                &["GLIBC_2.2.5", "GLIBC_2.34", "GLIBC_PRIVATE", "GLIBC_2.9"],
            ),
        ];
        for (wide, little) in [(true, true), (false, false), (false, true), (true, false)] {
            let file = elf(wide, little, needs);
            assert_eq!(
                version_needs(&file).unwrap(),
                [
                    "GCC_3.0",
                    "GLIBC_2.29",
                    "GLIBC_2.2.5",
                    "GLIBC_2.34",
                    "GLIBC_PRIVATE",
                    "GLIBC_2.9"
                ],
                "wide {wide}, little-endian {little}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        fs::write(&path, elf(true, true, needs)).unwrap();
        assert_eq!(glibc_max_version(&path).unwrap(), Some((2, 34)));
        fs::write(
            &path,
            elf(true, true, &[("libc.so.6", &["GLIBC_2.17", "GLIBC_2.3.4"])]),
        )
        .unwrap();
        assert_eq!(glibc_max_version(&path).unwrap(), Some((2, 17)));
        // A static binary has no version needs.
        fs::write(&path, elf(true, true, &[])).unwrap();
        assert_eq!(glibc_max_version(&path).unwrap(), None);
    }

    #[test]
    fn a_file_that_is_not_a_whole_elf_is_an_error_not_a_panic() {
        let file = elf(true, true, &[("libc.so.6", &["GLIBC_2.17"])]);
        for len in 0..file.len() {
            let _ = version_needs(&file[..len]);
        }
        assert_eq!(version_needs(&file[..100]), Err(MALFORMED));
        assert_eq!(version_needs(b"#!/bin/sh\n"), Err("not an ELF file"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script");
        fs::write(&path, "#!/bin/sh\n").unwrap();
        let e = glibc_max_version(&path).unwrap_err().to_string();
        assert!(e.contains("script") && e.contains("not an ELF file"), "{e}");
    }

    #[test]
    fn glibc_versions_are_major_minor() {
        assert_eq!(glibc_version("GLIBC_2.17"), Some((2, 17)));
        assert_eq!(glibc_version("GLIBC_2.3.4"), Some((2, 3)));
        assert_eq!(glibc_version("GLIBC_PRIVATE"), None);
        assert_eq!(glibc_version("GCC_3.0"), None);
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
