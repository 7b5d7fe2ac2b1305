//! The binary runs exactly as the ThreatConnect platform runs a Job App: params from the
//! encrypted param file, legacy argv or a local JSON file; validation messages in message.tc;
//! exit codes; app.log; and no secret anywhere it writes.

use crate::support::*;
use base64::Engine;
use serde_json::{json, Value};
use tanium_tr_indicators::sim::lab::{Lab, RunResult as LabRun};
use tanium_tr_indicators::sim::tanium::TaniumSimOptions;
use tanium_tr_indicators::sim::tc::{TcSim, TcSimOptions};
use tanium_tr_indicators::tanium::model::ApiGeneration;

const KEY_128: &str = "k3y-0f-16-bytes!";
const KEY_256: &str = "0123456789abcdef0123456789ABCDEF";

fn env_for<'a>(file: &'a str, key: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("TC_APP_PARAM_FILE", file), ("TC_APP_PARAM_KEY", key)]
}

#[test]
fn aes128_param_file_is_read_typed_and_deleted() {
    let sb = Sandbox::new();
    let file = sb.param_file("params.enc", KEY_128, &good_params());
    let f = file.display().to_string();
    let r = sb.run(&["--print-config"], &env_for(&f, KEY_128));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !file.exists(),
        "the param file must be deleted after reading"
    );
    let c = config_of(&r);
    assert_eq!(c["tc"]["api_path"], "https://tc.example.com/api");
    assert_eq!(c["tc"]["auth"]["kind"], "hmac");
    assert_eq!(c["tc"]["auth"]["access_id"], "12345678901234567890");
    assert_eq!(c["tc"]["auth"]["secret_key"], "***");
    assert_eq!(c["tanium"]["base_url"], "https://tanium.example.com:8443");
    assert_eq!(c["tanium"]["username"], "svc-tanium");
    assert_eq!(c["tanium"]["password"], "***");
    assert_eq!(c["filters"]["owners"], json!(["Demo Org", "Another Org"]));
    assert_eq!(c["filters"]["types"], json!(["Address", "Host"]));
    assert_eq!(c["filters"]["include_tags"], json!(["apt", "crime"]));
    assert_eq!(c["filters"]["min_confidence"], 50);
    assert_eq!(c["checkpoint"]["last_modified"], "2026-01-02T03:04:05Z");
    assert_eq!(c["paths"]["out"], "job/out");
    assert_eq!(c["job_id"], "77");
    assert_eq!(c["api_user"], "svc-api");
    // --print-config only prints: no message.tc on success.
    assert_eq!(sb.read("job/out/message.tc"), "");
}

#[test]
fn aes256_param_file_runs_the_job_and_reports() {
    let (_guard, lab) = lab(ApiGeneration::V4, 40, 11);
    let sb = Sandbox::new();
    let params = with(lab_params(&lab), "tc_log_level", json!("debug"));
    std::fs::create_dir_all(sb.join("job/out")).unwrap();
    std::fs::write(
        sb.join("job/out/results.tc"),
        "last_modified = kept\nother = x\n",
    )
    .unwrap();
    let file = sb.param_file("in.bin", KEY_256, &params);
    let f = file.display().to_string();
    let r = sb.run(&[], &env_for(&f, KEY_256));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!file.exists());
    let message = sb.read("job/out/message.tc");
    let results = sb.read("job/out/results.tc");
    assert_synced(&message, &results);
    // The sync really wrote to Tanium, and message.tc says how much.
    let docs = lab.source_docs().len();
    assert!(docs > 0, "{message}");
    assert!(message.contains(&format!(": {docs} created,")), "{message}");
    assert_eq!(message.lines().count(), 1);
    // results.tc is updated in place: the old Last Modified is replaced, other keys are kept.
    let lines: Vec<&str> = results.lines().collect();
    assert!(
        lines[0].starts_with("last_modified = 20") && lines[1] == "other = x",
        "{results}"
    );
    assert_eq!(results.matches("last_modified = ").count(), 1, "{results}");
    let log = sb.read("job/log/app.log");
    assert!(
        log.contains("INFO  tanium-tr-indicators 1.0.0 starting (job 77)"),
        "{log}"
    );
    assert!(log.contains("DEBUG config: {"), "{log}");
    assert!(log.contains("INFO  finished: Synced: "), "{log}");
    assert_log_format(&log);
    // stderr gets the same lines.
    assert!(r.stderr.contains("starting (job 77)"));
    assert!(r.stderr.contains("finished: Synced: "));
    // A second run appends to app.log, and writes nothing to Tanium: nothing changed.
    let file = sb.param_file("in.bin", KEY_256, &params);
    let f = file.display().to_string();
    let r = sb.run(&[], &env_for(&f, KEY_256));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let message = sb.read("job/out/message.tc");
    assert!(
        message.contains(": 0 created, 0 updated, 0 removed"),
        "{message}"
    );
    assert_eq!(lab.source_docs().len(), docs);
    let log = sb.read("job/log/app.log");
    assert_eq!(log.matches("starting (job 77)").count(), 2);
    assert_log_format(&log);
}

/// Every app.log line is `2026-01-02T03:04:05.678Z LEVEL message`.
fn assert_log_format(log: &str) {
    assert!(!log.is_empty());
    for line in log.lines() {
        let (ts, rest) = line.split_once(' ').unwrap();
        assert_eq!(ts.len(), 24, "{line}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{line}");
        let level = rest.split_whitespace().next().unwrap();
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{line}"
        );
    }
}

#[test]
fn a_file_encrypted_by_tcex_is_accepted() {
    // Known answer from tcex 5.0.0 (tests/fixtures/tcex/known-answer-vectors.json): the
    // platform's own encryption, not ours.
    let vectors: Value =
        serde_json::from_str(include_str!("fixtures/tcex/known-answer-vectors.json")).unwrap();
    let vector = &vectors["aes_param_file"][0];
    let (key, cipher) = (
        vector["key"].as_str().unwrap(),
        vector["ciphertext_base64"].as_str().unwrap(),
    );
    let sb = Sandbox::new();
    let file = sb.join("tcex.enc");
    std::fs::write(
        &file,
        base64::engine::general_purpose::STANDARD
            .decode(cipher)
            .unwrap(),
    )
    .unwrap();
    let f = file.display().to_string();
    let r = sb.run(
        &[
            "--print-config",
            "--tc_token",
            "TOKEN:1:2",
            "--tanium_address",
            "t.local",
            "--tanium_username",
            "u",
        ],
        &env_for(&f, key),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let c = config_of(&r);
    assert_eq!(c["tc"]["api_path"], "https://tc.example.com/api");
    assert_eq!(
        c["filters"]["owners"],
        json!(["Demo Org", "Another \"Owner\""])
    );
    assert_eq!(c["tanium"]["http"]["verify_tls"], true);
    assert_eq!(c["log_level"], "info");
    assert!(!r.stdout.contains("w0rd"));
    assert!(!file.exists());
}

#[test]
fn legacy_argv_params() {
    let sb = Sandbox::new();
    let r = sb.run(
        &[
            "--print-config",
            "--tc_api_path",
            "https://tc.example.com/api",
            "--api_access_id",
            "legacy-id",
            "--api_secret_key",
            "legacy-secret",
            "--tanium_address",
            "http://tanium.local",
            "--tanium_username",
            "u",
            "--tanium_password",
            "p",
            "--owners",
            "Org A",
            "--owners",
            "Org B",
            "--indicator_types",
            "File",
            "--tc_proxy_external",
            "--tc_proxy_host",
            "proxy.local",
            "--tc_proxy_port",
            "3128",
            "--tc_proxy_password",
            "proxy-pw",
            "--last_modified",
            "2 weeks ago",
            "--tc_log_level",
            "critical",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let c = config_of(&r);
    assert_eq!(c["tc"]["auth"]["access_id"], "legacy-id");
    assert_eq!(c["tanium"]["base_url"], "http://tanium.local");
    assert_eq!(c["filters"]["owners"], json!(["Org A", "Org B"]));
    assert_eq!(c["filters"]["types"], json!(["File"]));
    assert_eq!(c["tanium"]["http"]["proxy"]["host"], "proxy.local");
    assert_eq!(c["tanium"]["http"]["proxy"]["port"], 3128);
    assert_eq!(c["tanium"]["http"]["proxy"]["password"], "***");
    assert_eq!(c["tc"]["http"]["proxy"], Value::Null);
    assert_eq!(c["log_level"], "error");
    assert_eq!(c["paths"]["out"], "./out");
    assert!(!r.stdout.contains("proxy-pw") && !r.stdout.contains("legacy-secret"));
}

#[test]
fn local_json_file_and_precedence_of_sources() {
    let sb = Sandbox::new();
    // Param file < --params JSON < argv.
    let file = sb.param_file(
        "p.enc",
        KEY_128,
        &with(
            with(good_params(), "min_rating", json!("1")),
            "tql",
            json!("from file"),
        ),
    );
    std::fs::write(
        sb.join("local.json"),
        json!({"min_rating": "2", "tql": "from json", "intel_format": "OpenIOC"}).to_string(),
    )
    .unwrap();
    let f = file.display().to_string();
    let r = sb.run(
        &[
            "--params",
            "local.json",
            "--print-config",
            "--min_rating",
            "3",
        ],
        &env_for(&f, KEY_128),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let c = config_of(&r);
    assert_eq!(c["filters"]["min_rating"], 3);
    assert_eq!(c["filters"]["tql"], "from json");
    assert_eq!(c["intel_format"], "OpenIOC");
    assert_eq!(c["filters"]["min_confidence"], 50);

    // A local JSON file alone is a complete source for a run.
    let (_guard, lab) = lab(ApiGeneration::V4, 20, 11);
    let sb = Sandbox::new();
    std::fs::write(sb.join("local.json"), lab_params(&lab).to_string()).unwrap();
    let r = sb.run(&["--params", "local.json"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_synced(
        &sb.read("job/out/message.tc"),
        &sb.read("job/out/results.tc"),
    );
    assert!(!lab.source_docs().is_empty());
    assert!(
        sb.join("local.json").exists(),
        "only the param file is deleted"
    );
}

#[test]
fn bad_params_exit_1_with_a_message_that_names_the_param() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "min_confidence",
            json!("abc"),
            "Minimum Confidence Rating must be a whole number from 0 to 100, got 'abc'",
        ),
        (
            "min_threatassess_score",
            json!("5000"),
            "Minimum ThreatAssess Score must be a whole number from 0 to 1000, got '5000'",
        ),
        (
            "min_rating",
            json!("6"),
            "Minimum Threat Rating must be a whole number from 0 to 5, got '6'",
        ),
        (
            "max_false_positives",
            json!("many"),
            "Maximum False Positive Count must be a whole number, 0 or more, got 'many'",
        ),
        (
            "last_modified",
            json!("last tuesday"),
            "Last Modified must be a time such as",
        ),
        (
            "tanium_address",
            json!("gopher://t"),
            "Tanium Address must be an https:// or http:// URL or a host name",
        ),
        (
            "verify_ssl",
            json!("sometimes"),
            "Verify SSL Cert must be true or false, got 'sometimes'",
        ),
        (
            "indicator_types",
            json!("Address|Email"),
            "Indicator Types must be among Address, File, Host, got 'Email'",
        ),
        (
            "tc_log_level",
            json!("verbose"),
            "Logging Level must be one of trace, debug, info, warning, error, critical",
        ),
        (
            "tanium_workers",
            json!("64"),
            "Parallel Tanium Writes must be a whole number from 1 to 32, got '64'",
        ),
        ("tanium_username", json!(""), "Tanium Username is required"),
    ];
    for (k, v, want) in cases {
        let sb = Sandbox::new();
        let file = sb.param_file("p.enc", KEY_128, &with(good_params(), k, v.clone()));
        let f = file.display().to_string();
        let r = sb.run(&[], &env_for(&f, KEY_128));
        assert_eq!(r.code, 1, "{k}={v}");
        let msg = sb.read("job/out/message.tc");
        assert!(msg.contains(want), "{k}={v}: {msg}");
        assert_eq!(msg.lines().count(), 1);
        assert!(msg.trim_end().chars().count() <= 255);
        assert!(sb.read("job/log/app.log").contains(want), "{k}: app.log");
        assert_eq!(sb.read("job/out/results.tc"), "");
        assert!(!file.exists());
    }
    // Missing TC credentials are a clear startup error.
    let sb = Sandbox::new();
    let p = without(
        without(good_params(), "tc_api_access_id"),
        "tc_api_secret_key",
    );
    std::fs::write(sb.join("p.json"), p.to_string()).unwrap();
    let r = sb.run(&["--params", "p.json", "--print-config"], &[]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "");
    assert!(sb
        .read("job/out/message.tc")
        .contains("ThreatConnect credentials are missing"));
}

#[test]
fn corrupt_file_wrong_key_and_missing_key_are_clear_errors() {
    // Wrong key: reported in the tc_out_path from argv, file still deleted, key never echoed.
    let sb = Sandbox::new();
    let file = sb.param_file("p.enc", KEY_128, &good_params());
    let f = file.display().to_string();
    let wrong = "wrong-key-16byte";
    let r = sb.run(&["--tc_out_path", "argv-out"], &env_for(&f, wrong));
    assert_eq!(r.code, 1);
    let msg = sb.read("argv-out/message.tc");
    assert!(
        msg.contains("wrong TC_APP_PARAM_KEY or a damaged file"),
        "{msg}"
    );
    assert!(!file.exists());
    assert!(!msg.contains(wrong) && !r.stderr.contains(wrong));

    // Damaged file: not a whole number of blocks, and a truncated-but-aligned one.
    for (name, mutate) in [
        (
            "short",
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 5)) as Box<dyn Fn(&mut Vec<u8>)>,
        ),
        (
            "flipped",
            Box::new(|b: &mut Vec<u8>| {
                let n = b.len();
                b[n - 1] ^= 0x55;
            }),
        ),
        ("empty", Box::new(|b: &mut Vec<u8>| b.clear())),
    ] {
        let sb = Sandbox::new();
        let file = sb.param_file("p.enc", KEY_256, &good_params());
        let mut bytes = std::fs::read(&file).unwrap();
        mutate(&mut bytes);
        std::fs::write(&file, bytes).unwrap();
        let f = file.display().to_string();
        let r = sb.run(&[], &env_for(&f, KEY_256));
        assert_eq!(r.code, 1, "{name}");
        let msg = sb.read("out/message.tc");
        assert!(
            msg.starts_with("job parameters unusable: "),
            "{name}: {msg}"
        );
        assert!(msg.contains("damaged"), "{name}: {msg}");
        assert!(!r.stderr.contains("panicked"), "{name}: {}", r.stderr);
    }

    // A key of the wrong length, a missing key, a missing file.
    let sb = Sandbox::new();
    let file = sb.param_file("p.enc", KEY_128, &good_params());
    let f = file.display().to_string();
    assert_eq!(sb.run(&[], &env_for(&f, "short")).code, 1);
    assert!(sb
        .read("out/message.tc")
        .contains("must be 16, 24 or 32 bytes long"));
    let file = sb.param_file("p.enc", KEY_128, &good_params());
    let f = file.display().to_string();
    assert_eq!(sb.run(&[], &[("TC_APP_PARAM_FILE", f.as_str())]).code, 1);
    assert!(sb
        .read("out/message.tc")
        .contains("TC_APP_PARAM_KEY is not"));
    assert_eq!(sb.run(&[], &env_for("/nonexistent/p.enc", KEY_128)).code, 1);
    assert!(sb
        .read("out/message.tc")
        .contains("cannot read the param file"));
}

#[test]
fn tc_variables_are_resolved_with_hmac_or_token() {
    // The TC simulator checks the HMAC signature (or the token) of every request.
    let tc = TcSim::start(TcSimOptions::default()).unwrap();
    tc.set_variable("TC", "tanium host", "tanium.example.com");
    tc.set_variable("TC", "tanium pw", "resolved-secret");
    let sb = Sandbox::new();
    let params = with(
        with(
            with(
                with(good_params(), "tc_api_path", json!(tc.api_path())),
                "tc_api_secret_key",
                json!(TcSimOptions::default().secret_key),
            ),
            "tanium_address",
            json!("&{TC:TEXT:tanium host}"),
        ),
        "tanium_password",
        json!("&{TC:KEYCHAIN:tanium pw}"),
    );
    let file = sb.param_file(
        "p.enc",
        KEY_128,
        &with(params.clone(), "tc_log_level", json!("trace")),
    );
    let f = file.display().to_string();
    let r = sb.run(&["--print-config"], &env_for(&f, KEY_128));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        tc.server().hits("GET /api/internal/variable/runtime/TC/"),
        2
    );
    let c = config_of(&r);
    assert_eq!(c["tanium"]["base_url"], "https://tanium.example.com");
    assert_eq!(c["tanium"]["password"], "***");
    for text in [&r.stdout, &r.stderr, &sb.read("job/log/app.log")] {
        assert!(!text.contains("resolved-secret"));
    }

    // An unknown variable: exit 1 and the message names the param.
    let sb = Sandbox::new();
    let bad = with(params.clone(), "tanium_username", json!("&{TC:TEXT:nope}"));
    let file = sb.param_file("p.enc", KEY_128, &bad);
    let f = file.display().to_string();
    assert_eq!(sb.run(&[], &env_for(&f, KEY_128)).code, 1);
    let msg = sb.read("job/out/message.tc");
    assert!(
        msg.contains("Tanium Username") && msg.contains("404"),
        "{msg}"
    );

    // A wrong secret key: TC refuses to resolve, and the message names the param.
    let sb = Sandbox::new();
    let file = sb.param_file(
        "p.enc",
        KEY_128,
        &with(params.clone(), "tc_api_secret_key", json!("not-the-key")),
    );
    let f = file.display().to_string();
    assert_eq!(sb.run(&[], &env_for(&f, KEY_128)).code, 1);
    let msg = sb.read("job/out/message.tc");
    assert!(msg.contains("401"), "{msg}");

    // Token auth.
    let tc = TcSim::start(TcSimOptions {
        token: "TOKEN:77:abc".into(),
        ..TcSimOptions::default()
    })
    .unwrap();
    tc.set_variable("TC", "pw", "tok-resolved");
    let sb = Sandbox::new();
    let p = without(
        without(
            with(
                with(
                    with(good_params(), "tc_api_path", json!(tc.api_path())),
                    "tc_token",
                    json!("TOKEN:77:abc"),
                ),
                "tanium_password",
                json!("&{TC:KEYCHAIN:pw}"),
            ),
            "tc_api_access_id",
        ),
        "tc_api_secret_key",
    );
    std::fs::write(sb.join("p.json"), p.to_string()).unwrap();
    let r = sb.run(&["--params", "p.json", "--print-config"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        tc.server().hits("GET /api/internal/variable/runtime/TC/pw"),
        1
    );
    assert_eq!(config_of(&r)["tc"]["auth"]["kind"], "token");
    assert!(!r.stdout.contains("tok-resolved") && !r.stdout.contains("TOKEN:77:abc"));
}

/// One run of the secrets test: params, extra params, argv, expected exit code, and what else
/// must hold afterwards.
struct Scenario {
    name: &'static str,
    params: serde_json::Map<String, Value>,
    extra: serde_json::Map<String, Value>,
    args: &'static [&'static str],
    code: i32,
    check: fn(&LabRun, &Lab),
}

/// results.tc of a lab run, as written.
fn results_of(r: &LabRun) -> String {
    std::fs::read_to_string(r.dir.join("out/results.tc")).unwrap_or_default()
}

#[test]
fn no_secret_appears_anywhere_the_app_writes() {
    let tc_secret = "SECRET-tc-key-9f8e7d";
    let tc_token = "SECRET-token-1a2b3c";
    let tanium_pw = "SECRET-tanium-pw-4d5e";
    let proxy_pw = "SECRET-proxy-pw-6f7a";
    // KEYCHAIN-resolved: a TQL that names a secret, and a Tanium API token.
    let resolved = "SECRET-resolved-keychain-8b9c";
    let tanium_token = "token-SECRET-tanium-api-3c4d";
    let param_key = "SECRET-key-0d1e2";
    let wrong_tanium_pw = "SECRET-wrong-tanium-pw-5e6f";
    let wrong_tc_secret = "SECRET-wrong-tc-key-7a8b";
    assert_eq!(param_key.len(), 16);

    // Simulators whose credentials are the planted secrets; a token that lives 2 minutes, so
    // the app renews it through /appAuth before using it.
    let mut t = TaniumSimOptions::new(ApiGeneration::V4);
    t.password = tanium_pw.into();
    t.api_token = Some(tanium_token.into());
    let (_guard, mut lab) = lab_with(
        TcSimOptions {
            secret_key: tc_secret.into(),
            token: tc_token.into(),
            token_ttl_secs: 120,
            ..TcSimOptions::default()
        },
        t,
        30,
        11,
    );
    lab.param_key = param_key.into();
    lab.tc
        .set_variable("TC", "filter", &format!("summary != \"{resolved}\""));
    lab.tc.set_variable("TC", "tanium token", tanium_token);
    let proxy = ConnectProxy::start("proxy-user", proxy_pw);
    let planted = json!({
        "tc_token": tc_token,
        "tc_token_expires": lab.tc.token_expires().to_string(),
        "tc_proxy_host": "127.0.0.1",
        "tc_proxy_port": proxy.addr.port().to_string(),
        "tc_proxy_username": "proxy-user",
        "tc_proxy_password": proxy_pw,
        "tc_proxy_external": true,
        "tc_proxy_tc": true,
        "tql": "&{TC:KEYCHAIN:filter}",
        "tc_log_level": "trace",
    });
    for (k, v) in planted.as_object().unwrap() {
        lab.set(k, v.clone());
    }
    let hmac_params = lab.params.clone();
    let mut token_params = hmac_params.clone();
    token_params.remove("tc_api_access_id");
    token_params.remove("tc_api_secret_key");
    token_params.insert(
        "tanium_password".into(),
        json!("&{TC:KEYCHAIN:tanium token}"),
    );
    let extra = |k: &str, v: Value| json!({ k: v }).as_object().unwrap().clone();
    let none = serde_json::Map::new();

    let scenarios = [
        Scenario {
            name: "HMAC sync through the proxy",
            params: hmac_params.clone(),
            extra: none.clone(),
            args: &[],
            code: 0,
            check: |r: &LabRun, lab: &Lab| {
                assert_synced(&r.message, &results_of(r));
                assert!(!lab.source_docs().is_empty());
                assert!(r.log.contains("using HMAC"), "{}", r.log);
                assert!(r.log.contains("resolved 1 ThreatConnect variable"));
            },
        },
        Scenario {
            name: "token sync with renewal and a Tanium API token",
            params: token_params.clone(),
            extra: none.clone(),
            args: &[],
            code: 0,
            check: |r: &LabRun, lab: &Lab| {
                assert_synced(&r.message, &results_of(r));
                assert!(lab.tc.renewals() >= 1, "the job token was renewed");
                assert!(r.log.contains("renewed the ThreatConnect job token"));
                assert!(r.log.contains("API token"), "{}", r.log);
            },
        },
        Scenario {
            name: "Tanium rejects the password",
            params: hmac_params.clone(),
            extra: extra("tanium_password", json!(wrong_tanium_pw)),
            args: &[],
            code: 1,
            check: |r: &LabRun, _: &Lab| {
                assert!(r.message.contains("Tanium rejected"), "{}", r.message);
            },
        },
        Scenario {
            name: "ThreatConnect rejects the signature",
            params: hmac_params.clone(),
            extra: serde_json::Map::from_iter([
                ("tc_api_secret_key".to_string(), json!(wrong_tc_secret)),
                ("tql".to_string(), json!("")),
            ]),
            args: &[],
            code: 1,
            check: |r: &LabRun, _: &Lab| {
                assert!(
                    r.message.contains("ThreatConnect rejected"),
                    "{}",
                    r.message
                );
            },
        },
        Scenario {
            name: "print-config",
            params: hmac_params.clone(),
            extra: none.clone(),
            args: &["--print-config"],
            code: 0,
            check: |r: &LabRun, _: &Lab| {
                let c: Value = serde_json::from_str(&r.stdout).unwrap();
                assert_eq!(c["tc"]["auth"]["secret_key"], "***");
                assert_eq!(c["tanium"]["http"]["proxy"]["password"], "***");
            },
        },
        Scenario {
            name: "validation failure",
            params: hmac_params.clone(),
            extra: extra("min_rating", json!("99")),
            args: &[],
            code: 1,
            check: |r: &LabRun, _: &Lab| {
                assert!(r.message.contains("Minimum Threat Rating"), "{}", r.message);
            },
        },
        Scenario {
            name: "bad proxy",
            params: hmac_params.clone(),
            extra: extra("tc_proxy_port", json!("x")),
            args: &[],
            code: 1,
            check: |r: &LabRun, _: &Lab| {
                assert!(r.message.contains("tc_proxy_port"), "{}", r.message);
            },
        },
    ];
    let secrets = [
        tc_secret,
        tc_token,
        tanium_pw,
        proxy_pw,
        resolved,
        tanium_token,
        param_key,
        wrong_tanium_pw,
        wrong_tc_secret,
        // Every token /appAuth hands out is named so.
        "renewed-token",
    ];
    // The tokens the TC simulator accepted after each run (renewed ones included).
    let mut tokens: Vec<String> = Vec::new();
    for Scenario {
        name,
        params,
        extra,
        args,
        code,
        check,
    } in scenarios
    {
        lab.params = params;
        lab.persisted.clear();
        let r = lab.run(&extra, args).unwrap();
        assert_eq!(r.code, code, "{name}: {}\n{}", r.message, r.stderr);
        assert!(r.param_file_deleted, "{name}");
        assert!(!r.log.is_empty(), "{name}: app.log written at trace");
        if code == 1 {
            assert!(!r.message.is_empty(), "{name}");
        }
        check(&r, &lab);
        tokens.push(lab.tc.token());
        // Tanium sessions are credentials too, expired ones included.
        tokens.extend(lab.tanium.issued_sessions());
        let results = results_of(&r);
        let places = [
            ("stdout", &r.stdout),
            ("stderr", &r.stderr),
            ("app.log", &r.log),
            ("message.tc", &r.message),
            ("results.tc", &results),
        ];
        for s in secrets
            .iter()
            .copied()
            .chain(tokens.iter().map(String::as_str))
        {
            for (place, text) in places {
                assert!(
                    !text.contains(s),
                    "{name}: {s} leaked into {place}:\n{text}"
                );
            }
        }
    }
    // Both sides went through the proxy, with its credentials.
    let targets = proxy.targets();
    for url in [lab.tc.api_path(), lab.tanium.url()] {
        let port = url.rsplit(':').next().unwrap().trim_end_matches("/api");
        assert!(
            targets.contains(&format!("127.0.0.1:{port}")),
            "{url}: {targets:?}"
        );
    }
    assert_eq!(proxy.refused(), 0);
    assert!(
        tokens.iter().any(|t| t != tc_token),
        "a renewed token was checked"
    );
    assert!(
        !lab.tanium.issued_sessions().is_empty(),
        "a Tanium session was checked"
    );

    // The wrong-key path never echoes either key.
    let sb = Sandbox::new();
    let params = with(lab_params(&lab), "tc_log_level", json!("trace"));
    let file = sb.param_file("p.enc", param_key, &params);
    let f = file.display().to_string();
    let r = sb.run(&[], &env_for(&f, "SECRET-wrongkey1"));
    assert_eq!(r.code, 1);
    for text in [
        r.stdout,
        r.stderr,
        sb.read("out/message.tc"),
        sb.read("log/app.log"),
    ] {
        assert!(!text.contains("SECRET-"), "{text}");
    }
}

#[test]
fn demo_never_empties_a_folder_it_did_not_make() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.join("precious")).unwrap();
    std::fs::write(sb.join("precious/notes.txt"), "keep me").unwrap();
    let r = sb.run(&["demo", "--out", "precious"], &[]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("is not empty and was not made by the demo"),
        "{}",
        r.stderr
    );
    assert_eq!(sb.read("precious/notes.txt"), "keep me");
    // Its own folder (marked) is emptied and reused; an empty one is fine too.
    std::fs::create_dir_all(sb.join("mine")).unwrap();
    let r = sb.run(&["demo", "--out", "mine"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(sb.join("mine/.tanium-tr-indicators-demo").is_file());
    std::fs::write(sb.join("mine/stale.txt"), "old run").unwrap();
    let r = sb.run(&["demo", "--out", "mine"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(!sb.join("mine/stale.txt").exists());
}

#[test]
fn help_version_and_subcommands() {
    let sb = Sandbox::new();
    let r = sb.run(&["--help"], &[]);
    assert_eq!(r.code, 0);
    for word in [
        "run",
        "check",
        "demo",
        "package",
        "--params FILE",
        "--dry-run",
        "--out DIR",
        "--print-config",
        "--help",
        "--version",
    ] {
        assert!(r.stdout.contains(word), "{word}: {}", r.stdout);
    }
    let r = sb.run(&["--version"], &[]);
    assert_eq!((r.code, r.stdout.trim()), (0, "tanium-tr-indicators 1.0.0"));

    // check: one line per check ("ok", or "--" for what only a write could prove), exit 0,
    // nothing written to Tanium or results.tc.
    let (_guard, mut lab) = lab(ApiGeneration::V4, 5, 11);
    let none = serde_json::Map::new();
    let r = lab.run(&none, &["check"]).unwrap();
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("ok ") || l.starts_with("-- ")),
        "{}",
        r.stdout
    );
    assert!(lines[0].starts_with("ok   ThreatConnect: ") && lines[4].starts_with("ok   Tanium: "));
    assert!(lines[1].starts_with("ok   ThreatConnect matching query"));
    assert_eq!(
        lines[2],
        "ok   ThreatConnect exclusion lists (Honor Exclusion Lists): readable; 0 lists apply to the job"
    );
    assert_eq!(
        lines[3],
        "ok   Safety rails: Block Unsafe Indicators on; Never Send 0 entries; Maximum Removal Percent 50; Maximum Indicators none; Maximum Indicator Age none; Honor Exclusion Lists on; Honor Expiry on; Deploy Intel on"
    );
    assert!(
        r.message.starts_with("Checks passed; not checked: "),
        "{}",
        r.message
    );
    assert!(r.results.is_empty());
    assert_eq!(lab.tanium.doc_count(), 0);
    // A wrong Tanium password: exit 1, and message.tc names Tanium.
    let extra = json!({"tanium_password": "not-the-password"});
    let r = lab.run(extra.as_object().unwrap(), &["check"]).unwrap();
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.message.contains("Tanium"), "{}", r.message);
    assert!(
        r.stdout.lines().any(|l| l.starts_with("FAIL Tanium")),
        "{}",
        r.stdout
    );
    assert!(r
        .stdout
        .lines()
        .any(|l| l.starts_with("ok   ThreatConnect")));

    // A stray positional argument is a command-line error reported in message.tc.
    let r = sb.run(&["--tc_out_path", "o", "stray"], &[]);
    assert_eq!(r.code, 1);
    assert!(sb
        .read("o/message.tc")
        .contains("unexpected argument 'stray'"));
}

/// From a shell each run starts fresh unless the previous results.tc is carried: with
/// `--results` the second run is incremental and writes nothing, as on the platform.
#[test]
fn shell_runs_carry_results_tc_with_the_results_option() {
    let (_guard, lab) = lab(ApiGeneration::V4, 30, 12);
    let sb = Sandbox::new();
    std::fs::write(sb.join("job.json"), lab_params(&lab).to_string()).unwrap();
    let args = ["--params", "job.json", "--results", "job/out/results.tc"];
    let r = sb.run(&args, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let log = sb.read("job/log/app.log");
    assert!(
        log.contains("--results job/out/results.tc: no such file yet"),
        "{log}"
    );
    assert!(log.contains("full reconcile: the source is empty"), "{log}");
    std::fs::remove_file(sb.join("job/log/app.log")).unwrap();
    lab.tanium.server().reset_counters();
    let r = sb.run(&args, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let log = sb.read("job/log/app.log");
    assert!(
        log.contains("incremental run: indicators modified after"),
        "{log}"
    );
    let message = sb.read("job/out/message.tc");
    assert!(
        message.contains(" 0 created, 0 updated, 0 removed"),
        "{message}"
    );
    // Without it, the same command line starts over: a full reconcile.
    std::fs::remove_file(sb.join("job/log/app.log")).unwrap();
    let r = sb.run(&["--params", "job.json"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let log = sb.read("job/log/app.log");
    assert!(log.contains("full reconcile: "), "{log}");
}
