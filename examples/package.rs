//! Assembles the `.tcx` from an app dir and a built binary (called by `package.sh`).
//!
//! Usage: `cargo run --example package -- --binary <path> [--app-dir <dir>] [--out <dir>]
//! [--max-glibc <major.minor>]`. Prints the package path and sizes; exits 1 on any error,
//! including a binary that needs a newer glibc than `--max-glibc`.

use std::path::PathBuf;
use std::process::ExitCode;

use tanium_tr_indicators::package::{build_tcx, glibc_max_version, PackageOptions};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("package: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut app_dir = PathBuf::from(".");
    let mut out_dir = PathBuf::from("target");
    let mut binary = None;
    let mut max_glibc = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--app-dir" => app_dir = value()?.into(),
            "--out" => out_dir = value()?.into(),
            "--binary" => binary = Some(PathBuf::from(value()?)),
            "--max-glibc" => max_glibc = Some(parse_version(&value()?)?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let binary = binary.ok_or("--binary <path> is required")?;

    let glibc = glibc_max_version(&binary).map_err(|e| e.to_string())?;
    match glibc {
        Some((major, minor)) => println!("binary needs GLIBC {major}.{minor}"),
        None => println!("binary needs no GLIBC symbol versions (static)"),
    }
    if let (Some(found), Some(max)) = (glibc, max_glibc) {
        if found > max {
            return Err(format!(
                "{} needs GLIBC {}.{}, newer than the allowed {}.{}",
                binary.display(),
                found.0,
                found.1,
                max.0,
                max.1
            ));
        }
    }

    let opts = PackageOptions {
        app_dir,
        binary,
        out_dir,
    };
    let tcx = build_tcx(&opts).map_err(|e| e.to_string())?;
    println!(
        "binary:  {} ({} bytes)",
        opts.binary.display(),
        size(&opts.binary)?
    );
    println!("package: {} ({} bytes)", tcx.display(), size(&tcx)?);
    Ok(())
}

fn parse_version(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("--max-glibc {text:?} is not major.minor");
    let (major, minor) = text.split_once('.').ok_or_else(bad)?;
    Ok((
        major.parse().map_err(|_| bad())?,
        minor.parse().map_err(|_| bad())?,
    ))
}

fn size(path: &std::path::Path) -> Result<u64, String> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", path.display()))
}
