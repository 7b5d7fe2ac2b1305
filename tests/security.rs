//! Security claims of SECURITY.md that no other test file proves: TLS certificates are checked
//! unless the job turns it off, redirects are never followed (so credentials never go to a
//! host the job did not name), and the Tanium sessions a run is handed are never written.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::support::tls::{self_signed, server_config};
use crate::support::{empty_lab, lab};
use serde_json::{json, Map};
use tanium_tr_indicators::sim::server::{Server, SimRequest, SimResponse};
use tanium_tr_indicators::tanium::model::ApiGeneration;

/// An HTTPS server with a self-signed certificate for 127.0.0.1 (no CA anyone trusts signed
/// it) that answers every request with 401; counts connections and the requests it could read
/// (only possible after a handshake).
fn tls_server() -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
    let config = server_config(&self_signed(&["localhost", "127.0.0.1"], false));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let seen = requests.clone();
    let conns = connections.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            conns.fetch_add(1, Ordering::SeqCst);
            let config = config.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut reader = BufReader::new(&mut tls);
                let mut line = String::new();
                // The request head (a failed handshake ends here with an error).
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"text":"not authorized"}"#;
                let _ = write!(
                    tls,
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.flush();
            });
        }
    });
    (url, requests, connections)
}

/// SECURITY.md "TLS": certificates are verified by default; a server whose certificate no
/// trusted CA signed gets no request at all, and the refusal is final (not retried).
/// `verify_ssl = false` is the only way to talk to it.
#[test]
fn tls_certificates_are_verified_unless_the_job_turns_it_off() {
    let (url, requests, connections) = tls_server();
    let (_dir, mut lab) = empty_lab(ApiGeneration::V4);
    lab.set("tanium_address", json!(url));
    lab.set("http_timeout_secs", json!("5"));
    lab.params.remove("verify_ssl");
    let r = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(r.code, 1, "{}", r.message);
    let host = url.trim_start_matches("https://");
    assert!(
        r.message.starts_with(&format!(
            "Tanium certificate of {host} not trusted: self-signed: the server's certificate \
             signs itself; add it to CA Certificate or the system store"
        )),
        "{}",
        r.message
    );
    assert!(!r.message.contains("unreachable"), "{}", r.message);
    assert_eq!(
        requests.load(Ordering::SeqCst),
        0,
        "no request without a trusted certificate"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "a refused certificate is not retried: one attempt, one look at the certificate"
    );

    lab.set("verify_ssl", json!(false));
    let r = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(r.message.contains("login refused (401)"), "{}", r.message);
    assert!(
        requests.load(Ordering::SeqCst) >= 1,
        "with verify_ssl off the login reaches it"
    );
}

/// SECURITY.md "Whom the app talks to": a redirect (here from ThreatConnect to another host)
/// is an answer, not an instruction: nothing is sent to the other host.
#[test]
fn redirects_are_never_followed() {
    let other_hits = Arc::new(AtomicU64::new(0));
    let seen = other_hits.clone();
    let other = Server::start(
        0,
        Arc::new(move |_r: &SimRequest| {
            seen.fetch_add(1, Ordering::SeqCst);
            SimResponse::json(200, &json!({"status": "Success", "data": []}))
        }),
    )
    .unwrap();
    let target = format!("{}/api/v3/indicators", other.url());
    let redirecting = Server::start(
        0,
        Arc::new(move |_r: &SimRequest| {
            SimResponse::text(302, "moved").with_header("Location", &target)
        }),
    )
    .unwrap();
    let (_dir, mut lab) = empty_lab(ApiGeneration::V3);
    lab.set("tc_api_path", json!(format!("{}/api", redirecting.url())));
    let r = lab.run(&Map::new(), &[]).unwrap();
    assert_ne!(r.code, 0, "{}", r.message);
    assert!(r.message.contains("302"), "{}", r.message);
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);
}

/// SECURITY.md "Secrets": a Tanium session token is a credential. Every session the simulator
/// handed out (one that went stale at once and the one the re-login got, in both API
/// generations) stays out of everything the run writes, at trace level, and out of what it
/// stores in Tanium.
#[test]
fn tanium_sessions_never_reach_what_the_app_writes() {
    for generation in [ApiGeneration::V4, ApiGeneration::V3] {
        let (_dir, mut lab) = lab(generation, 40, 12);
        lab.set("tc_log_level", json!("trace"));
        lab.tanium.expire_next_session_at_once();
        let r = lab.run(&Map::new(), &[]).unwrap();
        assert_eq!(r.code, 0, "{generation:?}: {}\n{}", r.message, r.log);
        assert!(!lab.source_docs().is_empty(), "{generation:?}: it synced");
        let sessions = lab.tanium.issued_sessions();
        assert!(
            sessions.len() >= 2,
            "{generation:?}: re-logged in: {sessions:?}"
        );
        let results = std::fs::read_to_string(r.dir.join("out/results.tc")).unwrap();
        let stored: String = lab
            .source_docs()
            .into_iter()
            .map(|d| format!("{}\n{}\n", d.name, d.body))
            .chain(lab.tanium.sources().into_iter().map(|(_, n)| n))
            .collect();
        let places = [
            ("stdout", &r.stdout),
            ("stderr", &r.stderr),
            ("app.log", &r.log),
            ("message.tc", &r.message),
            ("results.tc", &results),
            ("Tanium", &stored),
        ];
        for session in &sessions {
            for (place, text) in places {
                assert!(
                    !text.contains(session.as_str()),
                    "{generation:?}: session {session} leaked into {place}"
                );
            }
        }
    }
}

/// SECURITY.md proves each claim by naming a test (`file::test`), and the README and docs name
/// tests the same way: every test they name exists, so a renamed or removed test cannot leave a
/// claim standing on nothing.
#[test]
fn every_test_the_documents_cite_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("SECURITY.md"), root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    let mut cited = 0;
    let mut missing = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for quoted in text.split('`').skip(1).step_by(2) {
            let Some((file, test)) = quoted.split_once(".rs::") else {
                continue;
            };
            if !(file.starts_with("tests/") || file.starts_with("src/"))
                || test.is_empty()
                || !test.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                continue;
            }
            cited += 1;
            let source =
                std::fs::read_to_string(root.join(format!("{file}.rs"))).unwrap_or_default();
            if !source.contains(&format!("fn {test}(")) {
                missing.push(format!("{}: {quoted}", doc.display()));
            }
        }
    }
    assert!(
        cited >= 40,
        "only {cited} citations found: the parser lost them"
    );
    assert!(
        missing.is_empty(),
        "cited tests that do not exist:\n{}",
        missing.join("\n")
    );
}
