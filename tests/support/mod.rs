//! Helpers for the integration tests: run the real binary in a fresh temp dir with a clean
//! environment, write param files the way the platform does, and a tiny TC variables server.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tanium_tr_indicators::params::encrypt_param_file;
use tanium_tr_indicators::secret::Secret;
use tanium_tr_indicators::sim::server::{Handler, Server, SimRequest, SimResponse};
use tanium_tr_indicators::tc::auth::hmac_authorization;

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

/// How the variables server checks credentials.
#[derive(Clone)]
pub enum Expect {
    /// HMAC over the exact request target, with the `Timestamp` header.
    Hmac {
        /// Access id.
        access_id: String,
        /// Secret key.
        secret: String,
    },
    /// `Authorization: TC-Token <token>`.
    Token(String),
}

/// A TC stand-in that answers `/api/internal/variable/runtime/TC/{key}` from `vars`, checking
/// auth on every request; rejected requests are recorded.
pub fn variables_server(
    vars: Vec<(&'static str, &'static str)>,
    expect: Expect,
) -> (Server, Arc<Mutex<Vec<String>>>) {
    let rejected = Arc::new(Mutex::new(Vec::new()));
    let rej = rejected.clone();
    let handler: Handler = Arc::new(move |r: &SimRequest| {
        let auth = r.header("authorization").unwrap_or("").to_string();
        let ok = match &expect {
            Expect::Hmac { access_id, secret } => r
                .header("timestamp")
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|ts| {
                    auth == hmac_authorization(
                        access_id,
                        &Secret::new(secret.as_str()),
                        &r.target,
                        "GET",
                        ts,
                    )
                }),
            Expect::Token(t) => auth == format!("TC-Token {t}"),
        };
        if !ok {
            rej.lock().unwrap().push(r.target.clone());
            return SimResponse::json(401, &json!({"status": "Failure", "message": "bad auth"}));
        }
        let path = r.decoded_path();
        let key = path.strip_prefix("/api/internal/variable/runtime/TC/");
        match key.and_then(|k| vars.iter().find(|(n, _)| *n == k)) {
            Some((_, v)) => SimResponse::json(200, &json!({ "data": v })),
            None => SimResponse::json(404, &json!({"status": "Failure", "message": "not found"})),
        }
    });
    (Server::start(0, handler).expect("server"), rejected)
}
