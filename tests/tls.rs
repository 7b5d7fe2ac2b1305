//! Trust and failures as an admin meets them, through the real binary: a Tanium behind a
//! private CA is trusted through CA Certificate or the system store (`SSL_CERT_FILE`) and
//! refused otherwise, every certificate problem is named in words, and each kind of network
//! failure (DNS, refused, timeout, an HTML page, an error status) says the host and the kind in
//! a message.tc of at most 255 characters, never a library's debug print nor raw HTML.

use std::net::TcpListener;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::server::{Server, SimRequest, SimResponse};
use tanium_tr_indicators::tanium::model::ApiGeneration;
use time::macros::datetime;

use crate::support::tls::{self_signed, Ca, ServerCert, TlsFront};
use crate::support::{lab, lab_params, ConnectProxy, Sandbox};

/// Lab whose Tanium simulator is reached through a TLS front serving `cert`.
fn tanium_behind(cert: &ServerCert) -> (tempfile::TempDir, Lab, TlsFront) {
    let (dir, mut lab) = lab(ApiGeneration::V4, 30, 21);
    let front = TlsFront::start(cert, lab.tanium.server().addr());
    lab.set("tanium_address", json!(front.url));
    (dir, lab, front)
}

fn run(lab: &mut Lab, args: &[&str]) -> RunResult {
    lab.run(&Map::new(), args).expect("the binary runs")
}

/// What every failed run must show: exit 1, one line of at most 255 characters that starts
/// with `lead` and holds `action`, and neither it nor the log shows a Rust debug print, the
/// word "unreachable" for a certificate, or HTML.
fn assert_failed(r: &RunResult, lead: &str, action: &str) {
    assert_eq!(r.code, 1, "{}", r.message);
    let m = r
        .message
        .strip_prefix("Check failed: ")
        .unwrap_or(&r.message);
    let m = ["Tanium: ", "ThreatConnect: "]
        .iter()
        .find_map(|side| m.strip_prefix(side))
        .unwrap_or(m);
    for side in ["Tanium", "ThreatConnect"] {
        assert!(
            !r.message.contains(&format!("{side}: {side} ")),
            "the side is named once: {}",
            r.message
        );
    }
    assert!(m.starts_with(lead), "{}", r.message);
    assert!(m.contains(action), "{}", r.message);
    assert!(r.message.chars().count() <= 255, "{}", r.message);
    assert_eq!(r.message.lines().count(), 1);
    for text in [&r.message, &r.log] {
        for debug in [
            "Other(",
            "OtherError",
            "InvalidCertificate",
            "Custom {",
            "kind:",
        ] {
            assert!(!text.contains(debug), "{debug} in {text}");
        }
        assert!(!text.to_lowercase().contains("<html"), "{text}");
    }
    if lead.contains("certificate") {
        assert!(!r.message.contains("unreachable"), "{}", r.message);
    }
}

#[test]
fn a_private_ca_is_trusted_through_ca_certificate_or_ssl_cert_file_and_refused_otherwise() {
    let ca = Ca::new();
    let (_d, mut lab, front) = tanium_behind(&ca.server(&["127.0.0.1"]));
    let refused = format!("Tanium certificate of {} not trusted: ", front.host());
    let unknown = "unknown issuer: the server's certificate is not signed by a trusted CA; add it \
                   to CA Certificate or the system store";
    for args in [&["check"][..], &[]] {
        let before = front.connections();
        let r = run(&mut lab, args);
        assert_failed(&r, &refused, unknown);
        assert_eq!(
            front.connections() - before,
            2,
            "refused once, not retried: one attempt, one look at whether the certificate signs \
             itself"
        );
    }
    assert_eq!(front.handshakes(), 0);
    assert_eq!(
        lab.tanium.server().total_requests(),
        0,
        "nothing reached Tanium"
    );

    lab.set("ca_certificate", json!(ca.pem()));
    let r = run(&mut lab, &["check"]);
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(r.stdout.contains("ok   Tanium"), "{}", r.stdout);
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(r.message.starts_with("Synced: "), "{}", r.message);
    let synced = lab.source_docs().len();
    assert!(synced > 0);

    // The system store: the executor's CA bundle, here named by SSL_CERT_FILE.
    let sb = Sandbox::new();
    let mut params = lab_params(&lab);
    params.as_object_mut().unwrap().remove("ca_certificate");
    std::fs::write(sb.join("local.json"), params.to_string()).unwrap();
    std::fs::write(sb.join("bundle.pem"), ca.pem()).unwrap();
    let other = sb.join("other-bundle.pem");
    std::fs::write(&other, Ca::new().pem()).unwrap();
    let bundle = sb.join("bundle.pem").display().to_string();
    let with_store = |store: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--params", "local.json"]);
        let r = sb.run(&all, &[("SSL_CERT_FILE", store)]);
        (r, sb.read("job/out/message.tc").trim_end().to_string())
    };
    let (r, message) = with_store(&bundle, &["check"]);
    assert_eq!(r.code, 0, "{message}\n{}", r.stderr);
    assert!(r.stdout.contains("ok   Tanium"), "{}", r.stdout);
    let (r, message) = with_store(&bundle, &[]);
    assert_eq!(r.code, 0, "{message}\n{}", r.stderr);
    assert!(message.starts_with("Synced: "), "{message}");
    let (r, message) = with_store(&other.display().to_string(), &[]);
    assert_eq!(r.code, 1, "{message}");
    assert!(
        message.starts_with(&format!("{refused}{unknown}")),
        "{message}"
    );
}

/// Each certificate problem in words, refused once (never retried); a self-signed server
/// certificate pasted into CA Certificate is trusted.
#[test]
fn certificate_problems_are_named_in_words_and_final() {
    let ca = Ca::new();
    let past = Some((
        datetime!(2020-01-01 0:00 UTC),
        datetime!(2021-01-02 0:00 UTC),
    ));
    let future = Some((
        datetime!(2125-01-01 0:00 UTC),
        datetime!(2126-01-01 0:00 UTC),
    ));
    let cases: Vec<(ServerCert, &str, &str)> = vec![
        (
            ca.server_valid(&["127.0.0.1"], past),
            "expired on 2021-01-02",
            "renew the server's certificate",
        ),
        (
            ca.server_valid(&["127.0.0.1"], future),
            "not yet valid (valid from 2125-01-01)",
            "check the clocks of the server and the job server",
        ),
        (
            ca.server(&["tanium.internal.example"]),
            "wrong host name: not issued for 127.0.0.1",
            "use a name it lists in Tanium Address, or reissue it (it lists \
             tanium.internal.example)",
        ),
        (
            self_signed(&["127.0.0.1"], true),
            "self-signed CA certificate, never trusted as a server's own",
            "issue the server one signed by a CA (in CA Certificate), or turn Verify SSL Cert off",
        ),
    ];
    for (cert, why, action) in cases {
        let (_d, mut lab, front) = tanium_behind(&cert);
        lab.set("ca_certificate", json!(ca.pem()));
        let r = run(&mut lab, &["check"]);
        let lead = format!("Tanium certificate of {} not trusted: {why}", front.host());
        assert_failed(&r, &lead, action);
        assert_eq!(front.connections(), 1, "{why}: refused once, not retried");
        assert_eq!(front.handshakes(), 0);
    }

    let own = self_signed(&["127.0.0.1"], false);
    let (_d, mut lab, front) = tanium_behind(&own);
    let r = run(&mut lab, &[]);
    assert_failed(
        &r,
        &format!(
            "Tanium certificate of {} not trusted: self-signed: the server's certificate signs \
             itself",
            front.host()
        ),
        "add it to CA Certificate or the system store",
    );
    assert_eq!(front.handshakes(), 0);
    lab.set("ca_certificate", json!(own.pem));
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(front.handshakes() > 0);
}

/// A CA Certificate that is not one is refused before anything is sent, naming the label.
#[test]
fn a_bad_ca_certificate_is_refused_up_front() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 0, 0);
    for (value, says) in [
        (
            json!("MIIBkTCB+wIJ"),
            "CA Certificate holds no certificate: paste the PEM text",
        ),
        (
            json!("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----"),
            "CA Certificate holds a private key: paste only certificates",
        ),
        (
            json!("&{TC:TEXT:corp_ca}"),
            "CA Certificate cannot be a ThreatConnect variable",
        ),
    ] {
        let r = lab
            .run(
                &Map::from_iter([("ca_certificate".to_string(), value)]),
                &[],
            )
            .unwrap();
        assert_eq!(r.code, 1, "{}", r.message);
        assert!(r.message.starts_with(says), "{}", r.message);
        assert!(!r.message.contains("MHcCAQEEIB") && !r.log.contains("MHcCAQEEIB"));
        assert_eq!(lab.tc.server().total_requests(), 0);
        assert_eq!(lab.tanium.server().total_requests(), 0);
    }
}

/// A lab run with one param changed.
fn run_with(lab: &mut Lab, name: &str, value: Value) -> RunResult {
    lab.run(&Map::from_iter([(name.to_string(), value)]), &[])
        .expect("the binary runs")
}

#[test]
fn a_host_without_dns_record_is_named() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 0, 0);
    let r = run_with(
        &mut lab,
        "tanium_address",
        json!("https://tanium.corp.invalid:8443"),
    );
    assert_failed(
        &r,
        "Tanium host not found: tanium.corp.invalid has no DNS record",
        "check Tanium Address and the job server's DNS",
    );
}

#[test]
fn a_refused_connection_names_host_and_port() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 0, 0);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for (param, url, side, address) in [
        (
            "tanium_address",
            format!("http://{closed}"),
            "Tanium",
            "Tanium Address",
        ),
        (
            "tc_api_path",
            format!("http://{closed}/api"),
            "ThreatConnect",
            "the platform's API URL (tc_api_path)",
        ),
    ] {
        let r = run_with(&mut lab, param, json!(url));
        assert_failed(
            &r,
            &format!("{side} connection refused by {closed}"),
            &format!("check the port in {address} and firewalls"),
        );
    }
}

#[test]
fn a_server_that_never_answers_times_out_with_the_limit_named() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 0, 0);
    let stalling = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = stalling.local_addr().unwrap();
    // Accepts and holds every connection without a word, until the test process ends.
    std::thread::spawn(move || {
        let held: Vec<_> = stalling.incoming().take(16).collect();
        std::thread::sleep(std::time::Duration::from_secs(120));
        drop(held);
    });
    lab.set("http_timeout_secs", json!("1"));
    let r = run_with(&mut lab, "tanium_address", json!(format!("http://{addr}")));
    assert_failed(
        &r,
        &format!("Tanium timed out: {addr} did not answer POST /api/v2/session/login within 1 s"),
        "(2 attempts)",
    );
}

/// A server answering every request with `status` and an HTML page titled "Sign in".
fn html_server(status: u16) -> Server {
    Server::start(
        0,
        Arc::new(move |_r: &SimRequest| SimResponse {
            status,
            headers: vec![("Content-Type".into(), "text/html; charset=utf-8".into())],
            body: b"<!DOCTYPE html>\n<html><head><title>Sign in &amp; SSO</title></head>\
                    <body><form action=/login><input name=password></form></body></html>"
                .to_vec(),
        }),
    )
    .unwrap()
}

#[test]
fn an_html_page_is_not_the_api_and_never_shown() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 0, 0);
    let page = html_server(200);
    let host = page.addr().to_string();
    let r = run_with(&mut lab, "tanium_address", json!(page.url()));
    assert_failed(
        &r,
        &format!(
            "{host} is not the Tanium API: POST /api/v2/session/login answered 200 with an HTML \
             page (a login or proxy page)"
        ),
        "check Tanium Address and the proxy (page title \"Sign in & SSO\")",
    );
    let r = run_with(
        &mut lab,
        "tc_api_path",
        json!(format!("{}/api", page.url())),
    );
    assert_failed(
        &r,
        &format!("{host} is not the ThreatConnect API: GET /api/v3/"),
        "check the platform's API URL (tc_api_path) and the proxy",
    );
    // A proxy's error page: retried as the status says, then named the same way.
    let proxy_page = html_server(502);
    let r = run_with(&mut lab, "tanium_address", json!(proxy_page.url()));
    assert_failed(
        &r,
        &format!(
            "{} is not the Tanium API: POST /api/v2/session/login answered 502",
            proxy_page.addr()
        ),
        "check Tanium Address and the proxy",
    );
    assert_eq!(proxy_page.hits("POST /api/v2/session/login"), 5);
}

#[test]
fn an_error_status_names_host_status_and_reason() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 0, 0);
    let missing = Server::start(
        0,
        Arc::new(|_r: &SimRequest| SimResponse::text(404, "no such route")),
    )
    .unwrap();
    let r = run_with(&mut lab, "tanium_address", json!(missing.url()));
    assert_failed(
        &r,
        &format!(
            "Tanium at {} answered 404 Not Found to POST /api/v2/session/login",
            missing.addr()
        ),
        "no such route",
    );
}

#[test]
fn a_proxy_that_opens_no_tunnel_is_named_with_its_answer() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 0, 0);
    let proxy = ConnectProxy::start("proxy-user", "proxy-password");
    for (k, v) in [
        ("tc_proxy_host", json!("127.0.0.1")),
        ("tc_proxy_port", json!(proxy.addr.port().to_string())),
        ("tc_proxy_username", json!("proxy-user")),
        ("tc_proxy_password", json!("not-the-password")),
        ("tc_proxy_external", json!(true)),
    ] {
        lab.set(k, v);
    }
    let r = run(&mut lab, &[]);
    let tanium = lab.tanium.server().addr();
    assert_failed(
        &r,
        &format!("Tanium proxy {} opened no tunnel to {tanium}", proxy.addr),
        "it answered 407 Proxy Authentication Required; check the platform's proxy settings",
    );
    assert!(proxy.refused() >= 1);
    assert!(!r.message.contains("not-the-password") && !r.log.contains("not-the-password"));
}
