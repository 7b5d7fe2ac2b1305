//! The `.tcx` package: reproducible bytes, exact layout and modes, and a `run.py` that starts
//! the bundled binary the way the TC job executor does.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use crate::support::BIN;
use tanium_tr_indicators::package::{
    build_tcx, glibc_max_version, PackageOptions, APP_NAME, BINARY_NAME, MAX_GLIBC, RUN_PY,
};
use tempfile::TempDir;
use zip::ZipArchive;

const FOLDER: &str = "TaniumTrIndicators_v1";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/package")
}

/// Copies the fixture app dir and `binary` into a fresh temp dir, with the given file mode and
/// mtime, so two builds can differ in everything the package must not depend on.
fn app_copy(binary: &Path, mode: u32, mtime_secs: u64) -> (TempDir, PackageOptions) {
    let dir = tempfile::tempdir().unwrap();
    let app_dir = dir.path().join("app");
    fs::create_dir(&app_dir).unwrap();
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_secs);
    let mut copies = vec![];
    for name in ["install.json", "layout.json", "README.md"] {
        copies.push((fixture_dir().join(name), app_dir.join(name)));
    }
    let bin_copy = dir.path().join("bin");
    copies.push((binary.to_path_buf(), bin_copy.clone()));
    for (from, to) in copies {
        fs::copy(&from, &to).unwrap();
        fs::set_permissions(&to, fs::Permissions::from_mode(mode)).unwrap();
        fs::File::options()
            .write(true)
            .open(&to)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    let out_dir = dir.path().join("out");
    let opts = PackageOptions {
        app_dir,
        binary: bin_copy,
        out_dir,
    };
    (dir, opts)
}

/// A small shell script standing in for the binary where its content does not matter.
fn fake_binary() -> PathBuf {
    fixture_dir().join("fake-binary.sh")
}

fn fixture_options(binary: &Path) -> (TempDir, PackageOptions) {
    app_copy(binary, 0o644, 1_700_000_000)
}

/// Unpacks into `dest`; `keep_modes` false mimics unzippers (Java's, Python's zipfile) that
/// drop the unix mode bits, leaving every file 0644.
fn unpack(tcx: &Path, dest: &Path, keep_modes: bool) -> PathBuf {
    let mut zip = ZipArchive::new(fs::File::open(tcx).unwrap()).unwrap();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let path = dest.join(entry.enclosed_name().unwrap());
        if entry.is_dir() {
            fs::create_dir_all(&path).unwrap();
            continue;
        }
        let mut data = vec![];
        entry.read_to_end(&mut data).unwrap();
        fs::write(&path, data).unwrap();
        let mode = if keep_modes {
            entry.unix_mode().unwrap() & 0o777
        } else {
            0o644
        };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }
    dest.join(FOLDER)
}

fn python(dir: &Path, args: &[&str]) -> Output {
    Command::new("python3")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("python3 must be installed: the TC job executor starts the app through run.py")
}

#[test]
fn package_is_reproducible_and_holds_exactly_the_app() {
    let (_a, opts_a) = app_copy(Path::new(BIN), 0o600, 1_600_000_000);
    let (_b, opts_b) = app_copy(Path::new(BIN), 0o664, 1_700_000_000);
    let tcx_a = build_tcx(&opts_a).unwrap();
    let tcx_b = build_tcx(&opts_b).unwrap();
    assert_eq!(tcx_a, opts_a.out_dir.join(format!("{FOLDER}.tcx")));
    let bytes = fs::read(&tcx_a).unwrap();
    assert!(
        bytes == fs::read(&tcx_b).unwrap(),
        "same inputs with other mtimes and modes must give the same bytes"
    );
    // Rebuilding over an existing package is fine and still gives the same bytes.
    assert_eq!(build_tcx(&opts_a).unwrap(), tcx_a);
    assert!(bytes == fs::read(&tcx_a).unwrap());
    let leftovers: Vec<_> = fs::read_dir(&opts_a.out_dir).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "only the .tcx stays in the out dir");

    let mut zip = ZipArchive::new(fs::File::open(&tcx_a).unwrap()).unwrap();
    let mut listing = vec![];
    for i in 0..zip.len() {
        let entry = zip.by_index(i).unwrap();
        let time = entry.last_modified().unwrap();
        assert_eq!(
            (
                time.year(),
                time.month(),
                time.day(),
                time.hour(),
                time.minute()
            ),
            (1980, 1, 1, 0, 0),
            "{}: fixed timestamp",
            entry.name()
        );
        if !entry.is_dir() {
            assert_eq!(entry.compression(), zip::CompressionMethod::Deflated);
        }
        listing.push((
            entry.name().to_string(),
            entry.unix_mode().unwrap() & 0o7777,
        ));
    }
    let expected: Vec<(String, u32)> = [
        ("/", 0o755),
        ("/install.json", 0o644),
        ("/layout.json", 0o644),
        ("/README.md", 0o644),
        ("/run.py", 0o755),
        ("/tanium-tr-indicators", 0o755),
    ]
    .iter()
    .map(|(name, mode)| (format!("{FOLDER}{name}"), *mode))
    .collect();
    assert_eq!(listing, expected);

    let read = |zip: &mut ZipArchive<fs::File>, name: &str| {
        let mut data = vec![];
        zip.by_name(&format!("{FOLDER}/{name}"))
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        data
    };
    assert_eq!(
        read(&mut zip, "install.json"),
        fs::read(fixture_dir().join("install.json")).unwrap()
    );
    assert_eq!(
        read(&mut zip, "README.md"),
        fs::read(fixture_dir().join("README.md")).unwrap()
    );
    assert_eq!(read(&mut zip, "run.py"), RUN_PY.as_bytes());
    assert_eq!(read(&mut zip, BINARY_NAME), fs::read(BIN).unwrap());
    assert_eq!(APP_NAME, "TaniumTrIndicators");
}

#[test]
fn run_py_launcher_is_python36_and_execs_the_bundled_binary() {
    for needle in [
        "os.execv(BINARY, [BINARY] + sys.argv[1:])",
        "\"tanium-tr-indicators\")",
        "os.chmod(BINARY",
        "if __name__ == \"__main__\":",
    ] {
        assert!(RUN_PY.contains(needle), "run.py lacks {needle:?}");
    }
    // TC executors may run an old Python: the launcher must parse as Python 3.6.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("run.py"), RUN_PY).unwrap();
    let check = "import ast; ast.parse(open('run.py').read(), 'run.py', feature_version=(3, 6))";
    let out = python(dir.path(), &["-c", check]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unpacked_run_py_starts_the_binary() {
    let (dir, opts) = fixture_options(Path::new(BIN));
    let tcx = build_tcx(&opts).unwrap();
    let folder = unpack(&tcx, &dir.path().join("installed"), true);
    // The platform starts `python run.py` or `python -m run` from the app folder: try both.
    for launch in [
        &["run.py", "--version"][..],
        &["-m", "run", "--version"][..],
    ] {
        let out = python(&folder, launch);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{launch:?}: {:?} {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(env!("CARGO_PKG_VERSION")) && stdout.contains("tanium-tr-indicators"),
            "{launch:?} printed {stdout:?}"
        );
    }
}

#[test]
fn run_py_restores_the_exec_bit_and_passes_argv_env_and_exit_code() {
    // A stand-in binary that echoes what it got and exits 3 (partial failure), so argv,
    // environment and exit code passthrough are checked independently of the app's CLI.
    let (dir, opts) = fixture_options(&fake_binary());
    let tcx = build_tcx(&opts).unwrap();
    let folder = unpack(&tcx, &dir.path().join("installed"), false);
    let binary = folder.join(BINARY_NAME);
    assert_eq!(
        fs::metadata(&binary).unwrap().permissions().mode() & 0o777,
        0o644
    );

    let out = Command::new("python3")
        .args(["run.py", "--tc_log_path", "/tmp/log", "two words", ""])
        .env("TC_APP_PARAM_FILE", "/in/params.bin")
        .env("TC_APP_PARAM_KEY", "k3y")
        .current_dir(&folder)
        .output()
        .expect("python3 must be installed");
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[--tc_log_path]\n[/tmp/log]\n[two words]\n[]\nfile=/in/params.bin key=k3y\n"
    );
    assert_eq!(
        fs::metadata(&binary).unwrap().permissions().mode() & 0o111,
        0o111
    );
}

#[test]
fn run_py_reports_a_missing_binary() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("run.py"), RUN_PY).unwrap();
    let out = python(dir.path(), &["run.py"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("run.py: cannot start ") && stderr.contains(BINARY_NAME),
        "{stderr}"
    );
}

#[test]
fn build_fails_clearly_without_readme_or_binary() {
    let (_dir, opts) = fixture_options(&fake_binary());
    fs::remove_file(opts.app_dir.join("README.md")).unwrap();
    let err = build_tcx(&opts).unwrap_err().to_string();
    assert!(err.contains("README.md"), "{err}");

    let (_dir, mut opts) = fixture_options(&fake_binary());
    opts.binary = opts.app_dir.join("no-such-binary");
    let err = build_tcx(&opts).unwrap_err().to_string();
    assert!(err.contains("no-such-binary"), "{err}");
    assert!(
        !opts.out_dir.join(format!("{FOLDER}.tcx")).exists(),
        "no package after a failure"
    );
}

#[test]
fn layout_json_is_optional() {
    let (_dir, opts) = fixture_options(&fake_binary());
    fs::remove_file(opts.app_dir.join("layout.json")).unwrap();
    let tcx = build_tcx(&opts).unwrap();
    let zip = ZipArchive::new(fs::File::open(tcx).unwrap()).unwrap();
    let names: Vec<&str> = zip.file_names().collect();
    assert!(
        !names.iter().any(|n| n.ends_with("layout.json")),
        "{names:?}"
    );
    assert_eq!(names.len(), 5, "{names:?}");
}

/// The glibc 2.17 release binary when package.sh has built it (as in CI), else the test binary.
fn shipped_binary() -> PathBuf {
    let target_dir = Path::new(BIN).parent().unwrap().parent().unwrap();
    let release = target_dir
        .join("x86_64-unknown-linux-gnu/release")
        .join(BINARY_NAME);
    if release.exists() {
        release
    } else {
        PathBuf::from(BIN)
    }
}

#[test]
fn the_packaged_app_syncs_when_started_like_the_platform_starts_it() {
    use tanium_tr_indicators::sim::{dataset, lab::Lab};
    use tanium_tr_indicators::tanium::model::ApiGeneration;
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tcx = build_tcx(&PackageOptions {
        app_dir: repo.to_path_buf(),
        binary: shipped_binary(),
        out_dir: dir.path().join("out"),
    })
    .unwrap();
    // Unpack without modes, as some unzippers do: run.py must restore the exec bit.
    let app = unpack(&tcx, dir.path(), false);
    let mut lab = Lab::start(
        &dir.path().join("lab"),
        &app.join(BINARY_NAME),
        ApiGeneration::V4,
    )
    .unwrap();
    lab.launcher = vec!["python3".into(), app.join("run.py").display().to_string()];
    lab.tc.load(dataset::generate(120, 21));
    let r = lab.run(&serde_json::Map::new(), &[]).unwrap();
    assert_eq!(r.code, 0, "{}\n{}\n{}", r.message, r.stderr, r.log);
    assert!(r.param_file_deleted);
    let expected = lab
        .tc
        .snapshot()
        .iter()
        .filter(|i| i.active && matches!(i.type_name.as_str(), "Address" | "File" | "Host"))
        .count();
    assert!(
        r.message.starts_with(&format!(
            "Synced: Tanium source \"ThreatConnect\" now holds {expected} documents"
        )),
        "{}",
        r.message
    );
    assert_eq!(lab.source_docs().len(), expected);
    assert!(r.results.contains_key("last_modified"));
}

#[test]
fn glibc_version_of_the_test_binary_is_read() {
    // The test-profile binary links glibc dynamically, so its version needs name one >= 2.2.
    let found = glibc_max_version(Path::new(BIN)).unwrap();
    assert!(matches!(found, Some((2, minor)) if minor >= 2), "{found:?}");
}

#[test]
#[ignore = "needs ./package.sh first; CI runs it after package.sh"]
fn zigbuild_binary_needs_glibc_2_17_at_most() {
    // target/<profile>/<bin> -> target/x86_64-unknown-linux-gnu/release/<bin> (package.sh builds it).
    let target_dir = Path::new(BIN).parent().unwrap().parent().unwrap();
    let binary = target_dir
        .join("x86_64-unknown-linux-gnu/release")
        .join(BINARY_NAME);
    assert!(
        binary.exists(),
        "{} is missing: run ./package.sh first",
        binary.display()
    );
    let found = glibc_max_version(&binary).unwrap();
    assert!(
        found.is_none_or(|v| v <= (2, 17)),
        "{} needs GLIBC {found:?}, newer than 2.17",
        binary.display()
    );
}

/// The `.tcx` package.sh wrote (CI runs it before the tests), unpacked into `dest` the way
/// some unzippers do it (no modes).
fn shipped_package(dest: &Path) -> PathBuf {
    let target_dir = Path::new(BIN).parent().unwrap().parent().unwrap();
    let tcx = target_dir.join(format!("{FOLDER}.tcx"));
    assert!(
        tcx.is_file(),
        "{} is missing: run ./package.sh first",
        tcx.display()
    );
    let app = unpack(&tcx, dest, false);
    let binary = app.join(BINARY_NAME);
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    app
}

/// Runs `binary package` in a copy of the fixture app dir; returns the run and the .tcx path.
fn package_subcommand(binary: &Path) -> (TempDir, Output, PathBuf) {
    let (dir, opts) = fixture_options(&fake_binary());
    let out = Command::new(binary)
        .args(["package", "--out"])
        .arg(&opts.out_dir)
        .current_dir(&opts.app_dir)
        .output()
        .unwrap();
    let tcx = opts.out_dir.join(format!("{FOLDER}.tcx"));
    (dir, out, tcx)
}

#[test]
fn the_package_subcommand_refuses_a_binary_that_needs_a_newer_glibc() {
    let (_dir, out, tcx) = package_subcommand(Path::new(BIN));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The test build links the build machine's glibc: newer than 2.17 on any current Linux.
    match glibc_max_version(Path::new(BIN)).unwrap() {
        Some(needed) if needed > MAX_GLIBC => {
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            let needs = format!("this binary needs GLIBC {}.{}", needed.0, needed.1);
            assert!(
                stderr.contains(&needs) && stderr.contains("./package.sh"),
                "{stderr}"
            );
            assert!(!tcx.exists(), "no package from a refused binary");
        }
        _ => {
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            assert!(tcx.is_file());
        }
    }
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
#[ignore = "needs ./package.sh first; CI runs it after package.sh"]
fn the_packaged_binary_holds_only_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let binary = shipped_package(dir.path()).join(BINARY_NAME);

    let out = Command::new(&binary)
        .args(["demo", "--out", "demo-out"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("demo is not in this build"), "{stderr}");
    assert!(!dir.path().join("demo-out").exists());

    // Panic locations of simulator code and strings only the simulators and the demo use: the
    // test build (with the simulators) must hold each, or the marker proves nothing.
    let with_sims = fs::read(BIN).unwrap();
    let shipped = fs::read(&binary).unwrap();
    for marker in [
        "src/sim/",
        "sim-conn",
        "injected ",
        "ThreatConnect simulator: ",
    ] {
        assert!(
            holds(&with_sims, marker),
            "{marker:?} is not in the test build: choose another marker"
        );
        assert!(
            !holds(&shipped, marker),
            "the packaged binary holds simulator code ({marker:?})"
        );
    }

    // Built against glibc 2.17, it may package itself.
    let (_app, out, tcx) = package_subcommand(&binary);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let mut zip = ZipArchive::new(fs::File::open(tcx).unwrap()).unwrap();
    let mut packaged = vec![];
    zip.by_name(&format!("{FOLDER}/{BINARY_NAME}"))
        .unwrap()
        .read_to_end(&mut packaged)
        .unwrap();
    assert!(packaged == shipped);
}
