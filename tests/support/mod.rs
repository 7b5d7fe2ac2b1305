//! Helpers for the integration tests: run the real binary in a fresh temp dir with a clean
//! environment, write param files the way the platform does, start the lab (both simulators),
//! say which documents the app's source must hold (and which it holds), and CONNECT proxies.

pub mod docs;
pub mod tls;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{json, Value};
use tanium_tr_indicators::params::encrypt_param_file;
use tanium_tr_indicators::sim::dataset;
use tanium_tr_indicators::sim::lab::Lab;
use tanium_tr_indicators::sim::server::Server;
use tanium_tr_indicators::sim::tanium::TaniumSimOptions;
use tanium_tr_indicators::sim::tc::TcSimOptions;
use tanium_tr_indicators::tanium::model::ApiGeneration;
use tanium_tr_indicators::tc::model::Indicator;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tanium-tr-indicators");

/// What a run of the binary left behind.
pub struct RunResult {
    /// Exit code.
    pub code: i32,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

/// A fresh working folder the binary runs in.
pub struct Sandbox {
    /// Keeps the folder alive.
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    /// A new, empty folder.
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the folder.
    pub fn join(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Runs the binary here with only PATH and `env` in its environment.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> RunResult {
        let out = Command::new(BIN)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .args(args)
            .output()
            .expect("binary runs");
        RunResult {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Writes `params` as the platform does (AES-CBC, zero IV, PKCS#7, raw bytes) and returns
    /// the env pair that points the binary at it.
    pub fn param_file(&self, name: &str, key: &str, params: &Value) -> PathBuf {
        let path = self.join(name);
        let bytes = encrypt_param_file(key, params.to_string().as_bytes()).expect("encrypt");
        std::fs::write(&path, bytes).expect("write param file");
        path
    }

    /// A file's text, or "" when it does not exist.
    pub fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.join(p)).unwrap_or_default()
    }
}

/// One run of the binary with `extra` params on top of the lab's.
pub fn run_with(
    lab: &mut Lab,
    extra: &[(&str, Value)],
) -> tanium_tr_indicators::sim::lab::RunResult {
    let extra: serde_json::Map<String, Value> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    lab.run(&extra, &[]).unwrap()
}

/// Creates (`POST {base}/sources`) or deletes (`DELETE {base}/sources/{id}`, with `method`
/// `DELETE`) of sources, in both API generations: every run that may write takes a run lease
/// and deletes it, so a run that writes no document still makes one of each.
pub fn source_calls(s: &Server, method: &str) -> u64 {
    s.hits_where(|k| {
        [ApiGeneration::V4, ApiGeneration::V3].iter().any(|g| {
            let sources = format!("{method} {}/sources", g.base_path());
            k == sources
                || k.strip_prefix(&format!("{sources}/"))
                    .is_some_and(|id| !id.is_empty() && !id.contains('/'))
        })
    })
}

/// [`source_calls`] of both kinds: the run lease's requests (and the first run's source).
pub fn lease_calls(s: &Server) -> u64 {
    source_calls(s, "POST") + source_calls(s, "DELETE")
}

/// What starts the name of a run lease of the lab's source (see README, *Two runs at once*).
pub const LEASE_MARK: &str = "ThreatConnect [tanium-tr-indicators run lease] ";

/// The run leases of the lab's source, as (id, name).
pub fn run_leases(lab: &Lab) -> Vec<(i64, String)> {
    lab.tanium
        .sources()
        .into_iter()
        .filter(|(_, n)| n.starts_with(LEASE_MARK))
        .collect()
}

/// Moves the expiry of every run lease of the lab's source a minute into the past, as if the
/// lease's time had run out (a lease's end is written in its name); how many there were.
pub fn expire_leases(lab: &Lab) -> usize {
    let past = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let past = past
        .replace_nanosecond(0)
        .unwrap_or(past)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let leases = run_leases(lab);
    for (id, name) in &leases {
        let words: Vec<&str> = name.split(' ').collect();
        let renamed: Vec<&str> = words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i > 0 && words[i - 1] == "until" {
                    past.as_str()
                } else {
                    w
                }
            })
            .collect();
        lab.tanium.rename_source(*id, &renamed.join(" "));
    }
    leases.len()
}

/// A complete, valid set of job params (HMAC credentials).
pub fn good_params() -> Value {
    json!({
        "tc_api_path": "https://tc.example.com/api",
        "tc_api_access_id": "12345678901234567890",
        "tc_api_secret_key": "tc-secret-key-value",
        "tc_log_path": "job/log",
        "tc_out_path": "job/out",
        "tc_temp_path": "job/tmp",
        "tc_in_path": "job/in",
        "tc_job_id": "77",
        "api_user": "svc-api",
        "tanium_address": "tanium.example.com:8443",
        "tanium_username": "svc-tanium",
        "tanium_password": "tanium-password-value",
        "verify_ssl": true,
        "tanium_source": "ThreatConnect",
        "owners": ["Demo Org", "Another Org"],
        "indicator_types": "Address|Host",
        "last_modified": "2026-01-02T03:04:05Z",
        "include_tags": "apt, crime",
        "min_confidence": "50",
        "tc_log_level": "info"
    })
}

/// Sets one key of a JSON object.
pub fn with(mut v: Value, k: &str, val: Value) -> Value {
    v[k] = val;
    v
}

/// Removes one key of a JSON object.
pub fn without(mut v: Value, k: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove(k);
    }
    v
}

/// The JSON `--print-config` printed.
pub fn config_of(r: &RunResult) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            r.stdout, r.stderr
        )
    })
}

/// A lab (both simulators, Tanium speaking `generation`, the simulators' default credentials)
/// in a fresh folder, TC holding the `n` indicators `dataset::generate` makes from `seed`; the
/// folder lives as long as the returned guard.
pub fn lab(generation: ApiGeneration, n: usize, seed: u64) -> (tempfile::TempDir, Lab) {
    lab_with(
        TcSimOptions::default(),
        TaniumSimOptions::new(generation),
        n,
        seed,
    )
}

/// [`lab`] with TC holding nothing yet, for tests that load their own records.
pub fn empty_lab(generation: ApiGeneration) -> (tempfile::TempDir, Lab) {
    lab(generation, 0, 0)
}

/// [`lab`] with the simulators' options (credentials, switches) chosen by the test.
pub fn lab_with(
    tc: TcSimOptions,
    tanium: TaniumSimOptions,
    n: usize,
    seed: u64,
) -> (tempfile::TempDir, Lab) {
    let dir = tempfile::tempdir().expect("temp dir");
    let lab = Lab::start_with(dir.path(), Path::new(BIN), tc, tanium).expect("lab starts");
    lab.tc.load(dataset::generate(n, seed));
    (dir, lab)
}

/// The name of the document an indicator must have ("ThreatConnect <Type> <normalised
/// value>"), written from the TC data alone, independently of the app's code; None for a value
/// that cannot be sent.
pub fn expected_name(i: &Indicator) -> Option<String> {
    let field = |f: &Option<String>| {
        f.as_deref()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or(&i.summary)
            .trim()
            .to_string()
    };
    let value = match i.type_name.as_str() {
        "Address" => field(&i.ip).parse::<IpAddr>().ok()?.to_string(),
        "Host" => {
            let h = field(&i.host_name);
            let h = h.strip_suffix('.').unwrap_or(&h).to_lowercase();
            let ok_char = |c: char| {
                if c.is_ascii() {
                    c.is_ascii_alphanumeric() || "-_.".contains(c)
                } else {
                    !c.is_whitespace() && !c.is_control()
                }
            };
            let labels_ok = h
                .split('.')
                .all(|l| !l.is_empty() && l.chars().count() <= 63);
            if h.is_empty() || h.chars().count() > 253 || !h.chars().all(ok_char) || !labels_ok {
                return None;
            }
            h
        }
        "File" => {
            let mut first = None;
            for (f, len) in [(&i.md5, 32), (&i.sha1, 40), (&i.sha256, 64)] {
                if let Some(v) = f.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                    if v.len() != len || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return None;
                    }
                    first.get_or_insert(v.to_ascii_lowercase());
                }
            }
            first?
        }
        _ => return None,
    };
    Some(format!("ThreatConnect {} {}", i.type_name, value))
}

/// The ThreatAssess band label a score earns (README, *ThreatAssess Labels*): Low from 0, Medium
/// from 250, High from 500, Critical from 750.
pub fn band(score: Option<i64>) -> Option<&'static str> {
    match score? {
        s if s >= 750 => Some("ThreatAssess Critical"),
        s if s >= 500 => Some("ThreatAssess High"),
        s if s >= 250 => Some("ThreatAssess Medium"),
        s if s >= 0 => Some("ThreatAssess Low"),
        _ => None,
    }
}

/// The sorted names of the documents the app's source must hold: one per active indicator in
/// TC that `keep` selects and that can be sent.
pub fn expected(lab: &Lab, keep: impl Fn(&Indicator) -> bool) -> Vec<String> {
    let mut v: Vec<String> = lab
        .tc
        .snapshot()
        .iter()
        .filter(|i| i.active && keep(i))
        .filter_map(expected_name)
        .collect();
    v.sort();
    v
}

/// The sorted names of the documents the app's source holds, after checking that no two share
/// an identity (intrinsic id).
pub fn held(lab: &Lab) -> Vec<String> {
    let docs = lab.source_docs();
    let mut ids: Vec<&str> = docs.iter().map(|d| d.intrinsic_id.as_str()).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "two documents share an intrinsic id");
    let mut v: Vec<String> = docs.into_iter().map(|d| d.name).collect();
    v.sort();
    v
}

/// The lab's params (both simulators, their credentials) with the job folders of
/// [`good_params`], for running the binary in a [`Sandbox`].
pub fn lab_params(lab: &Lab) -> Value {
    let mut p = Value::Object(lab.params.clone());
    for k in [
        "tc_log_path",
        "tc_out_path",
        "tc_temp_path",
        "tc_in_path",
        "tc_job_id",
    ] {
        p[k] = good_params()[k].clone();
    }
    p
}

/// Asserts message.tc and results.tc of a run that really synced: the summary, and the
/// checkpoint entries the next run reads (Last Modified and the full-reconcile time as ISO UTC).
pub fn assert_synced(message: &str, results: &str) {
    assert!(message.starts_with("Synced: "), "message.tc: {message}");
    let value = |k: &str| {
        results
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap_or_else(|| panic!("results.tc has no {k}:\n{results}"))
            .to_string()
    };
    for k in ["last_modified", "last_full_reconcile"] {
        let v = value(k);
        let t = time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{k} = {v} is not ISO-8601: {e}"));
        assert!(v.ends_with('Z') && t.offset().is_utc(), "{k} = {v}");
    }
    assert!(!value("filter_fingerprint").is_empty(), "{results}");
}

/// A CONNECT proxy on 127.0.0.1; counts what it did.
pub struct ConnectProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `host:port` of every tunnel it opened.
    pub targets: Arc<Mutex<Vec<String>>>,
    /// CONNECTs refused for missing or wrong credentials.
    pub refused: Arc<AtomicU64>,
}

impl ConnectProxy {
    /// A proxy that asks for Basic credentials (407 otherwise) and tunnels only to 127.0.0.1;
    /// it lives until the test process ends.
    pub fn start(user: &str, password: &str) -> ConnectProxy {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        ConnectProxy::serve(Some(expected))
    }

    /// A proxy that asks for no credentials and sends every tunnel to 127.0.0.1 on the port
    /// asked for, whatever the host, so the app can be given a host name (a Tanium Cloud one)
    /// while it talks to a simulator.
    pub fn to_loopback() -> ConnectProxy {
        ConnectProxy::serve(None)
    }

    fn serve(credentials: Option<String>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let (targets, refused) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicU64::new(0)),
        );
        let (t, r) = (targets.clone(), refused.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (credentials, t, r) = (credentials.clone(), t.clone(), r.clone());
                std::thread::spawn(move || {
                    let _ = tunnel(client, credentials.as_deref(), &t, &r);
                });
            }
        });
        ConnectProxy {
            addr,
            targets,
            refused,
        }
    }

    /// Where the tunnels went, one entry per tunnel.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }

    /// How many CONNECTs were refused.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

/// Serves one proxy connection: read the CONNECT head byte by byte (nothing of the tunnel is
/// read early), check the credentials when there are any, then copy both ways until either
/// side closes.
fn tunnel(
    mut client: TcpStream,
    credentials: Option<&str>,
    targets: &Mutex<Vec<String>>,
    refused: &AtomicU64,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let target = lines
        .next()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or("")
        .to_string();
    if let Some(expected) = credentials {
        let auth_ok = lines.any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("proxy-authorization") && v.trim() == expected
            })
        });
        if !auth_ok || !target.starts_with("127.0.0.1:") {
            refused.fetch_add(1, Ordering::SeqCst);
            client.write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        }
    }
    let Some(port) = target
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
    else {
        return client.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    };
    let upstream = TcpStream::connect(("127.0.0.1", port))?;
    targets.lock().unwrap().push(target);
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let (mut c_read, mut u_write) = (client.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let _ = std::io::copy(&mut u_read, &mut c_write);
    let _ = c_write.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
    Ok(())
}
