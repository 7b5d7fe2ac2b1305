//! CI smoke variant of the benchmark (`benches/sync.rs`): 10k indicators through first sync,
//! no-change rerun, 1% changed and full reconcile with the test build of the binary. Fails when
//! a count that does not depend on timing moves at all (TC requests, Tanium document and label
//! writes, documents held: a doubled write is one more), when Tanium requests or bytes sent
//! exceed the figures in `benches/baseline.json` by more than a tenth, when the app's peak RSS
//! exceeds 2x (never on wall time), or when a no-change rerun writes anything; the same at 500
//! indicators per document against `benches/baseline-grouped-500.json`.
//!
//! Ignored by a plain `cargo test` (it takes a while in a debug build); CI runs
//! `cargo test --test integration -- --ignored bench_smoke::`. `BENCH_RECORD=1` rewrites the baseline.
//! The quick test here pins what the memory-lean sync index must still get right.

use crate::support::{empty_lab, source_calls, BIN};
use std::path::PathBuf;

use serde_json::{json, Map};
use std::time::Duration;
use tanium_tr_indicators::sim::dataset;
use tanium_tr_indicators::tanium::model::ApiGeneration;

use tanium_tr_indicators::sim::bench::{
    self, Baseline, BenchLabels, BenchOptions, BenchTcRails, Phase,
};
use tanium_tr_indicators::sim::lab::RSS_TOOL;

const SIZE: usize = 10_000;

fn baseline_path(per_document: u32) -> PathBuf {
    let name = if per_document == 1 {
        "benches/baseline.json".to_string()
    } else {
        format!("benches/baseline-grouped-{per_document}.json")
    };
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[test]
#[ignore = "CI smoke benchmark: cargo test --test integration -- --ignored bench_smoke::"]
fn smoke_10k_matches_the_recorded_figures() {
    smoke(1);
}

#[test]
#[ignore = "CI smoke benchmark: cargo test --test integration -- --ignored bench_smoke::"]
fn smoke_10k_grouped_by_500_matches_the_recorded_figures() {
    smoke(500);
}

fn smoke(per_document: u32) {
    assert!(
        std::path::Path::new(RSS_TOOL).exists(),
        "{RSS_TOOL} is needed to measure the app's peak RSS (Debian: apt-get install time)"
    );
    let dir = tempfile::tempdir().unwrap();
    let opts = BenchOptions {
        binary: PathBuf::from(BIN),
        dir: dir.path().to_path_buf(),
        latency: Duration::ZERO,
        workers: None,
        seed: 7,
        phases: Phase::ALL.to_vec(),
        app_log_level: "warning".into(),
        labels: BenchLabels::Default,
        per_document,
        tc_rails: BenchTcRails::Default,
    };
    let results = bench::run_size(&opts, SIZE, &mut |r| {
        eprintln!(
            "{}: {:.2} s, TC {} req, Tanium {} req ({} writes), {} KiB",
            r.phase.label(),
            r.wall_secs,
            r.tc_requests,
            r.tanium_requests,
            r.tanium_writes,
            r.peak_rss_kb.unwrap_or(0)
        )
    })
    .unwrap();
    eprintln!("{}", bench::table(&results));

    // Invariants that hold whatever was recorded.
    let phase = |p: Phase| results.iter().find(|r| r.phase == p).unwrap();
    for r in &results {
        assert_eq!(r.exit_code, 0, "{}: {}", r.phase.label(), r.message);
        assert!(
            r.peak_rss_kb.is_some(),
            "{}: no RSS figure",
            r.phase.label()
        );
    }
    let first = phase(Phase::FirstSync);
    let documents = if per_document == 1 {
        SIZE as u64 * 8 / 10
    } else {
        SIZE as u64 * 8 / 10 / u64::from(per_document)
    };
    assert!(first.tanium_writes > documents, "{first:?}");
    let quiet = phase(Phase::NoChange);
    assert_eq!(quiet.tanium_writes, 0, "a no-change rerun wrote to Tanium");
    // The matching query, the removal check, the owners and one deleted list per owner; the
    // exclusion lists (none in this instance) and the expiry check.
    assert!(
        quiet.tc_requests <= 5 + dataset::OWNERS.len() as u64,
        "no-change rerun: {quiet:?}"
    );
    let changed = phase(Phase::Changed1Pct);
    // One write per changed indicator, or per document the changes fall in.
    let most = if per_document == 1 {
        SIZE as u64 / 100
    } else {
        first.docs_after as u64
    };
    assert!(
        changed.tanium_writes > 0 && changed.tanium_writes <= most,
        "{changed:?}"
    );
    assert_eq!(phase(Phase::FullReconcile).tanium_writes, 0);
    for r in &results {
        assert_eq!(r.docs_after, first.docs_after, "{}", r.phase.label());
    }

    if std::env::var_os("BENCH_RECORD").is_some() {
        let note = format!(
            "cargo test --test integration -- --ignored bench_smoke:: (debug build of the app), {SIZE} indicators, \
             {per_document} per document, {} cores; counts are exact, RSS is GNU time's %M in KiB; wall time is never compared",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let text = serde_json::to_string_pretty(&bench::to_json(&note, &results)).unwrap();
        std::fs::write(baseline_path(per_document), text + "\n").unwrap();
        eprintln!("recorded {}", baseline_path(per_document).display());
        return;
    }
    let baseline: Baseline =
        serde_json::from_str(&std::fs::read_to_string(baseline_path(per_document)).unwrap())
            .unwrap();
    let bad = bench::regressions(&baseline, &results);
    assert!(
        bad.is_empty(),
        "regressions against {}:\n{}",
        baseline_path(per_document).display(),
        bad.join("\n")
    );
}

#[test]
fn same_identity_twice_in_one_run_creates_one_document_and_reruns_write_nothing() {
    let (_dir, mut lab) = empty_lab(ApiGeneration::V4);
    let mut hosts: Vec<_> = dataset::generate(300, 3)
        .filter(|i| i.type_name == "Host" && i.active)
        .collect();
    assert!(hosts.len() > 40);
    // A second TC indicator whose value differs only in case: the same document identity.
    let mut twin = hosts[0].clone();
    twin.id = 1_000_000;
    twin.summary = twin.summary.to_uppercase();
    twin.host_name = Some(twin.summary.clone());
    hosts.push(twin);
    let n = hosts.len();
    lab.tc.load(hosts);
    // Small pages, so the twins and the index's merges span pages.
    lab.set("tc_page_size", json!("7"));
    let first = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(first.code, 0, "{}", first.message);
    assert_eq!(lab.source_docs().len(), n - 1, "{}", first.message);
    assert!(
        first.message.contains(&format!("{} created", n - 1)),
        "{}",
        first.message
    );

    lab.tanium.server().reset_counters();
    let full = lab
        .run(
            &Map::from_iter([("reconcile_interval_hours".to_string(), json!("0"))]),
            &[],
        )
        .unwrap();
    assert_eq!(full.code, 0, "{}", full.message);
    assert!(
        full.message.contains("0 created, 0 updated, 0 removed"),
        "{}",
        full.message
    );
    let s = lab.tanium.server();
    assert_eq!(s.hits("POST /plugin") - source_calls(s, "POST"), 0);
    assert_eq!(lab.source_docs().len(), n - 1);
}
