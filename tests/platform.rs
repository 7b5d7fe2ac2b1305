//! The binary runs exactly as the ThreatConnect platform runs a Job App: params from the
//! encrypted param file, legacy argv or a local JSON file; validation messages in message.tc;
//! exit codes; app.log; and no secret anywhere it writes.

mod support;

use base64::Engine;
use serde_json::{json, Value};
use support::*;

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
    assert_eq!(c["last_modified"], "2026-01-02T03:04:05Z");
    assert_eq!(c["paths"]["out"], "job/out");
    assert_eq!(c["job_id"], "77");
    assert_eq!(c["api_user"], "svc-api");
    // --print-config only prints: no message.tc on success.
    assert_eq!(sb.read("job/out/message.tc"), "");
}

#[test]
fn aes256_param_file_runs_the_job_and_reports() {
    let sb = Sandbox::new();
    let params = with(good_params(), "tc_log_level", json!("debug"));
    std::fs::create_dir_all(sb.join("job/out")).unwrap();
    std::fs::write(sb.join("job/out/results.tc"), "last_modified = kept\n").unwrap();
    let file = sb.param_file("in.bin", KEY_256, &params);
    let f = file.display().to_string();
    let r = sb.run(&[], &env_for(&f, KEY_256));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!file.exists());
    assert_eq!(
        sb.read("job/out/message.tc"),
        "configuration is valid; sync not built yet\n"
    );
    assert_eq!(
        sb.read("job/out/results.tc"),
        "last_modified = kept\n",
        "the placeholder job has no results to write"
    );
    let log = sb.read("job/log/app.log");
    assert!(
        log.contains("INFO  tanium-tr-indicators 1.0.0 starting (job 77)"),
        "{log}"
    );
    assert!(log.contains("DEBUG config: {"), "{log}");
    for line in log.lines() {
        // 2026-01-02T03:04:05.678Z LEVEL message
        let (ts, rest) = line.split_once(' ').unwrap();
        assert_eq!(ts.len(), 24, "{line}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{line}");
        let level = rest.split_whitespace().next().unwrap();
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{line}"
        );
    }
    // stderr gets the same lines.
    assert!(r.stderr.contains("starting (job 77)"));
    // A second run appends to app.log.
    let file = sb.param_file("in.bin", KEY_256, &params);
    let f = file.display().to_string();
    assert_eq!(sb.run(&[], &env_for(&f, KEY_256)).code, 0);
    assert_eq!(
        sb.read("job/log/app.log")
            .matches("starting (job 77)")
            .count(),
        2
    );
}

#[test]
fn a_file_encrypted_by_tcex_is_accepted() {
    // Known answer from tcex 5.0.0 (reference/known-answer-vectors.json): the platform's own
    // encryption, not ours.
    let cipher = "syf0Sfq05NbkFWoTlvH1N3VeSI1PyIUENXwssHw8AGPH+LBiXC2ApZzdhMQ6K8406sb0wQDVPRd+fagdhdOyy5TsNlMMn5KhwT8cX7XzDchc97JN0XcobAxijTjbLkcqhGgaRCOYNOgNRkxtw+paRtAmiXcgCaUIqZzuC+GIhlRABMlMaZVgVuGQfgOGSo4mjYTFV8hWBplExypvLhIRaZo1SbCH3csp4Ho4rWpG2ELJ0z/n2SCGpY+/Bl7rEV0A";
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
        &env_for(&f, "abcdefghijklmnop"),
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

    // A local JSON file alone is a complete source for dry runs.
    let sb = Sandbox::new();
    std::fs::write(sb.join("local.json"), good_params().to_string()).unwrap();
    let r = sb.run(&["--params", "local.json"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        sb.read("job/out/message.tc"),
        "configuration is valid; sync not built yet\n"
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
    let (server, rejected) = variables_server(
        vec![
            ("tanium host", "tanium.example.com"),
            ("tanium pw", "resolved-secret"),
        ],
        Expect::Hmac {
            access_id: "12345678901234567890".into(),
            secret: "tc-secret-key-value".into(),
        },
    );
    let sb = Sandbox::new();
    let params = with(
        with(
            with(
                good_params(),
                "tc_api_path",
                json!(format!("{}/api", server.url())),
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
    assert!(rejected.lock().unwrap().is_empty());
    assert_eq!(server.hits("GET /api/internal/variable/runtime/TC/"), 2);
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

    // Token auth.
    let (server, rejected) = variables_server(
        vec![("pw", "tok-resolved")],
        Expect::Token("TOKEN:77:abc".into()),
    );
    let sb = Sandbox::new();
    let p = without(
        without(
            with(
                with(
                    with(
                        good_params(),
                        "tc_api_path",
                        json!(format!("{}/api", server.url())),
                    ),
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
    assert!(rejected.lock().unwrap().is_empty());
    assert_eq!(server.hits("GET /api/internal/variable/runtime/TC/pw"), 1);
    assert_eq!(config_of(&r)["tc"]["auth"]["kind"], "token");
}

#[test]
fn no_secret_appears_anywhere_the_app_writes() {
    let tc_secret = "SECRET-tc-key-9f8e7d";
    let tc_token = "SECRET-token-1a2b3c";
    let tanium_pw = "SECRET-tanium-pw-4d5e";
    let proxy_pw = "SECRET-proxy-pw-6f7a";
    let resolved = "SECRET-resolved-keychain-8b9c";
    let param_key = "SECRET-key-0d1e2";
    assert_eq!(param_key.len(), 16);
    let (server, _) = variables_server(
        vec![("other", resolved)],
        Expect::Hmac {
            access_id: "12345678901234567890".into(),
            secret: tc_secret.into(),
        },
    );
    let planted = json!({
        "tc_api_path": format!("{}/api", server.url()),
        "tc_api_access_id": "12345678901234567890",
        "tc_api_secret_key": tc_secret,
        "tc_token": tc_token,
        "tc_token_expires": "1900000000",
        "tanium_password": tanium_pw,
        "tc_proxy_host": "127.0.0.1",
        "tc_proxy_port": "9",
        "tc_proxy_username": "proxy-user",
        "tc_proxy_password": proxy_pw,
        "tc_proxy_external": true,
        "tql": "&{TC:KEYCHAIN:other}",
        "tc_log_level": "trace",
    });
    let mut merged = good_params();
    for (k, v) in planted.as_object().unwrap() {
        merged[k] = v.clone();
    }
    let scenarios: Vec<(&str, Value, Vec<&str>, i32)> = vec![
        ("success", merged.clone(), vec![], 0),
        ("print-config", merged.clone(), vec!["--print-config"], 0),
        (
            "validation failure",
            with(merged.clone(), "min_rating", json!("99")),
            vec![],
            1,
        ),
        (
            "bad proxy",
            with(merged.clone(), "tc_proxy_port", json!("x")),
            vec![],
            1,
        ),
    ];
    let secrets = [
        tc_secret, tc_token, tanium_pw, proxy_pw, resolved, param_key,
    ];
    for (name, params, args, code) in scenarios {
        let sb = Sandbox::new();
        // results.tc from an earlier run is kept as it is.
        std::fs::create_dir_all(sb.join("job/out")).unwrap();
        std::fs::write(
            sb.join("job/out/results.tc"),
            "last_modified = 2026-01-01T00:00:00Z\n",
        )
        .unwrap();
        let file = sb.param_file("p.enc", param_key, &params);
        let f = file.display().to_string();
        let r = sb.run(&args, &env_for(&f, param_key));
        assert_eq!(r.code, code, "{name}: {}", r.stderr);
        let log = sb.read("job/log/app.log");
        assert!(!log.is_empty(), "{name}: app.log written at trace");
        let places = [
            ("stdout", r.stdout.clone()),
            ("stderr", r.stderr.clone()),
            ("app.log", log),
            ("message.tc", sb.read("job/out/message.tc")),
            ("results.tc", sb.read("job/out/results.tc")),
        ];
        for (place, text) in &places {
            for s in secrets {
                assert!(
                    !text.contains(s),
                    "{name}: {s} leaked into {place}:\n{text}"
                );
            }
        }
        if code == 1 {
            assert!(!sb.read("job/out/message.tc").is_empty(), "{name}");
        }
    }
    // The wrong-key path never echoes the key either.
    let sb = Sandbox::new();
    let file = sb.param_file("p.enc", param_key, &merged);
    let f = file.display().to_string();
    let r = sb.run(&[], &env_for(&f, "SECRET-wrongkey1"));
    assert_eq!(r.code, 1);
    for text in [
        r.stdout,
        r.stderr,
        sb.read("out/message.tc"),
        sb.read("log/app.log"),
    ] {
        assert!(!text.contains("SECRET-wrongkey1") && !text.contains(param_key));
    }
}

#[test]
fn help_version_and_unbuilt_subcommands() {
    let sb = Sandbox::new();
    let r = sb.run(&["--help"], &[]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("--print-config") && r.stdout.contains("--params FILE"));
    let r = sb.run(&["--version"], &[]);
    assert_eq!((r.code, r.stdout.trim()), (0, "tanium-tr-indicators 1.0.0"));
    for cmd in ["demo", "package"] {
        let r = sb.run(&[cmd], &[]);
        assert_eq!(r.code, 1, "{cmd}");
        assert!(r.stderr.contains("not built yet"), "{cmd}: {}", r.stderr);
    }
    // A stray positional argument is a command-line error reported in message.tc.
    let r = sb.run(&["--tc_out_path", "o", "stray"], &[]);
    assert_eq!(r.code, 1);
    assert!(sb
        .read("o/message.tc")
        .contains("unexpected argument 'stray'"));
}
