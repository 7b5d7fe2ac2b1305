//! A lab: both simulators on loopback plus a way to run the real binary against them exactly as
//! the TC job executor does (encrypted param file in the environment, results.tc carried over to
//! the next run). Shared by the demo, the end-to-end tests, the benchmark and the chaos test.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::params;
use crate::sim::tanium::{TaniumSim, TaniumSimOptions};
use crate::sim::tc::{TcSim, TcSimOptions};
use crate::tanium::model::ApiGeneration;

/// One finished run of the binary.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// message.tc (empty when missing).
    pub message: String,
    /// results.tc as key -> value.
    pub results: BTreeMap<String, String>,
    /// What the binary printed.
    pub stdout: String,
    /// What the binary printed on stderr.
    pub stderr: String,
    /// app.log of this run.
    pub log: String,
    /// The run's folder (in/, out/, log/, tmp/).
    pub dir: PathBuf,
    /// Whether the encrypted param file was gone after the run.
    pub param_file_deleted: bool,
    /// Wall time.
    pub elapsed: Duration,
    /// Peak resident set size of the app process in KiB, simulators excluded (GNU time's
    /// `%M`); None when [`RSS_TOOL`] is not installed.
    pub peak_rss_kb: Option<u64>,
    /// CPU seconds (user + system) the app process used; None without [`RSS_TOOL`].
    pub cpu_secs: Option<f64>,
}

/// A run of the binary that was started and not yet waited for, so a test can kill it mid-run.
#[derive(Debug)]
pub struct Running {
    child: Child,
    dir: PathBuf,
    param_file: PathBuf,
    started: Instant,
}

impl Running {
    /// Kills the process (SIGKILL: no cleanup runs, as when the platform kills a job).
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()
    }

    /// Whether the process has ended, without waiting.
    pub fn has_exited(&mut self) -> std::io::Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }
}

/// Both simulators, a working folder and the params that point the app at them.
pub struct Lab {
    /// The ThreatConnect simulator.
    pub tc: TcSim,
    /// The Tanium simulator.
    pub tanium: TaniumSim,
    /// Where each run gets a folder.
    pub dir: PathBuf,
    /// The app binary to run.
    pub binary: PathBuf,
    /// Params every run gets (the sims' addresses and credentials, defaults for the job).
    pub params: Map<String, Value>,
    /// Params the "platform" persisted from earlier runs' results.tc.
    pub persisted: Map<String, Value>,
    /// Persist results.tc after an exit 3 too (the platform's behaviour there is unconfirmed).
    pub persist_on_partial: bool,
    /// Program and leading arguments that start the app instead of `binary` itself
    /// (e.g. `python3 <unpacked>/run.py`, as the job executor starts a packaged app).
    pub launcher: Vec<String>,
    /// Run the app under [`RSS_TOOL`] to measure its peak RSS and CPU (the benchmark does;
    /// off by default because killing a measured run would leave the app itself running).
    pub measure_rss: bool,
    /// The TC_APP_PARAM_KEY the param files are encrypted with ([`LAB_PARAM_KEY`] unless changed).
    pub param_key: String,
    runs: u32,
}

/// GNU time (Debian package `time`), which runs the app as its own child and reports the
/// child's peak RSS. Reading `ru_maxrss` of a child of this (big, simulator-holding) process
/// would not do: Linux carries the parent's RSS high-water mark across fork / vfork + exec.
pub const RSS_TOOL: &str = "/usr/bin/time";

/// File in a run's folder where [`RSS_TOOL`] writes its figures.
const RSS_FILE: &str = "peak-rss.txt";

/// The param key used to encrypt the lab's param files (AES-256, as long as the platform's).
pub const LAB_PARAM_KEY: &str = "lab-param-key-0123456789abcdefgh";

impl Lab {
    /// Starts both simulators (Tanium speaking `generation`) and prepares `dir`.
    pub fn start(dir: &Path, binary: &Path, generation: ApiGeneration) -> std::io::Result<Lab> {
        Lab::start_with(
            dir,
            binary,
            TcSimOptions::default(),
            TaniumSimOptions::new(generation),
        )
    }

    /// Like [`Lab::start`], with the simulators' credentials chosen by the caller (the secrets
    /// tests plant their own).
    pub fn start_with(
        dir: &Path,
        binary: &Path,
        opts: TcSimOptions,
        t: TaniumSimOptions,
    ) -> std::io::Result<Lab> {
        fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let tc = TcSim::start(opts.clone())?;
        let tanium = TaniumSim::start(t.clone())?;
        let params = json!({
            "tc_api_path": tc.api_path(),
            "tc_api_access_id": opts.access_id,
            "tc_api_secret_key": opts.secret_key,
            "api_user": "lab-api-user",
            "tanium_address": tanium.url(),
            "tanium_username": t.username,
            "tanium_password": t.password,
            "verify_ssl": true,
            "tanium_source": "ThreatConnect",
            "last_modified": "90 days ago",
            "tc_log_level": "info",
            "tc_job_id": "42",
        });
        Ok(Lab {
            tc,
            tanium,
            dir,
            binary: binary.to_path_buf(),
            params: params.as_object().cloned().unwrap_or_default(),
            persisted: Map::new(),
            persist_on_partial: true,
            launcher: Vec::new(),
            measure_rss: false,
            param_key: LAB_PARAM_KEY.to_string(),
            runs: 0,
        })
    }

    /// Sets a job param for every following run.
    pub fn set(&mut self, name: &str, value: Value) {
        self.params.insert(name.to_string(), value);
    }

    /// Runs the binary once, as the platform does, with `extra` params and extra argv.
    pub fn run(&mut self, extra: &Map<String, Value>, args: &[&str]) -> std::io::Result<RunResult> {
        let running = self.start_run(extra, args)?;
        self.finish(running)
    }

    /// Starts the binary as [`Lab::run`] does without waiting for it; [`Lab::finish`] collects it.
    /// stdout and stderr go to files in the run's folder, so a chatty run never blocks on a pipe.
    pub fn start_run(
        &mut self,
        extra: &Map<String, Value>,
        args: &[&str],
    ) -> std::io::Result<Running> {
        self.runs += 1;
        let run_dir = self.dir.join(format!("run-{:03}", self.runs));
        let (inp, out, log, tmp) = (
            run_dir.join("in"),
            run_dir.join("out"),
            run_dir.join("log"),
            run_dir.join("tmp"),
        );
        for d in [&inp, &out, &log, &tmp] {
            fs::create_dir_all(d)?;
        }
        let mut p = self.params.clone();
        for (k, v) in &self.persisted {
            p.insert(k.clone(), v.clone());
        }
        for (k, v) in extra {
            p.insert(k.clone(), v.clone());
        }
        p.insert("tc_in_path".into(), json!(inp.display().to_string()));
        p.insert("tc_out_path".into(), json!(out.display().to_string()));
        p.insert("tc_log_path".into(), json!(log.display().to_string()));
        p.insert("tc_temp_path".into(), json!(tmp.display().to_string()));
        let plain = serde_json::to_vec(&Value::Object(p))?;
        let cipher = params::encrypt_param_file(&self.param_key, &plain)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let param_file = inp.join(".app_params.json");
        fs::write(&param_file, cipher)?;
        let started = Instant::now();
        let (program, lead): (PathBuf, Vec<String>) = match self.launcher.split_first() {
            Some((program, lead)) => (program.into(), lead.to_vec()),
            None => (self.binary.clone(), Vec::new()),
        };
        // GNU time measures the app alone; only when asked, since killing it would orphan the app.
        let mut cmd = if self.measure_rss && Path::new(RSS_TOOL).exists() {
            let mut c = Command::new(RSS_TOOL);
            c.arg("-f")
                .arg("%M %U %S")
                .arg("-o")
                .arg(run_dir.join(RSS_FILE))
                .arg(program);
            c
        } else {
            Command::new(program)
        };
        let child = cmd
            .args(lead)
            .args(args)
            .current_dir(&run_dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(params::PARAM_FILE_ENV, &param_file)
            .env(params::PARAM_KEY_ENV, &self.param_key)
            .stdin(Stdio::null())
            .stdout(fs::File::create(run_dir.join("stdout.txt"))?)
            .stderr(fs::File::create(run_dir.join("stderr.txt"))?)
            .spawn()?;
        Ok(Running {
            child,
            dir: run_dir,
            param_file,
            started,
        })
    }

    /// Starts one run per entry of `extras` at once, none waiting for another (as when the
    /// platform starts a job while its last run still works), then collects them all in the
    /// order they were started.
    pub fn run_together(
        &mut self,
        extras: &[Map<String, Value>],
    ) -> std::io::Result<Vec<RunResult>> {
        let mut started: Vec<Running> = Vec::new();
        for extra in extras {
            match self.start_run(extra, &[]) {
                Ok(r) => started.push(r),
                Err(e) => {
                    for mut r in started {
                        let _ = r.kill();
                        let _ = r.child.wait();
                    }
                    return Err(e);
                }
            }
        }
        started.into_iter().map(|r| self.finish(r)).collect()
    }

    /// Waits for a started run and collects it; persists results.tc as the platform does.
    pub fn finish(&mut self, mut running: Running) -> std::io::Result<RunResult> {
        let status = running.child.wait()?;
        let elapsed = running.started.elapsed();
        let run_dir = running.dir;
        // GNU time puts "Command exited with non-zero status N" before the figures.
        let figures: Vec<f64> = fs::read_to_string(run_dir.join(RSS_FILE))
            .ok()
            .and_then(|t| t.lines().last().map(str::to_string))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let (peak_rss_kb, cpu_secs) = match figures[..] {
            [rss, user, sys] => (Some(rss as u64), Some(user + sys)),
            _ => (None, None),
        };
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        let out = run_dir.join("out");
        let results: BTreeMap<String, String> = read(out.join("results.tc"))
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(" = ")?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        let code = status.code().unwrap_or(-1);
        if code == 0 || (code == 3 && self.persist_on_partial) {
            for (k, v) in &results {
                self.persisted.insert(k.clone(), json!(v));
            }
        }
        Ok(RunResult {
            code,
            message: read(out.join("message.tc")).trim_end().to_string(),
            results,
            stdout: read(run_dir.join("stdout.txt")),
            stderr: read(run_dir.join("stderr.txt")),
            log: read(run_dir.join("log").join("app.log")),
            param_file_deleted: !running.param_file.exists(),
            dir: run_dir,
            elapsed,
            peak_rss_kb,
            cpu_secs,
        })
    }

    /// Waits until neither simulator serves a connection any more (every request the last run
    /// sent, delayed or orphaned by a kill, has been handled); false after `limit`.
    pub fn quiesce(&self, limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            if self.tc.server().open_connections() == 0
                && self.tanium.server().open_connections() == 0
            {
                return true;
            }
            if started.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The documents of the app's source, as (name, intrinsic id) pairs.
    pub fn source_docs(&self) -> Vec<crate::sim::tanium::SimDoc> {
        let name = self
            .params
            .get("tanium_source")
            .and_then(Value::as_str)
            .unwrap_or("ThreatConnect")
            .to_string();
        match self.tanium.source_id(&name) {
            Some(id) => self.tanium.docs_in(id),
            None => Vec::new(),
        }
    }
}
