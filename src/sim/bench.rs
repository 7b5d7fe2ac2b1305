//! The throughput / memory benchmark: both simulators in this process, the real binary run by
//! the [`Lab`] through four phases (first sync, no-change rerun, 1% changed, full reconcile),
//! and on request a fifth (detections: alerts raised on the documents, reported to TC), with
//! per-phase request counts, bytes sent and the app's own peak RSS. Shared by
//! `benches/sync.rs` (the documented command) and the CI smoke test (`tests/bench_smoke.rs`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::sim::dataset;
use crate::sim::lab::Lab;
use crate::tanium::model::ApiGeneration;

/// One benchmark run's settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The app binary (a release build for real figures).
    pub binary: PathBuf,
    /// Working folder (one sub-folder per dataset size).
    pub dir: PathBuf,
    /// Latency the simulators add to every answer (a WAN stand-in).
    pub latency: Duration,
    /// `tanium_workers` for the job (None: the app's default).
    pub workers: Option<usize>,
    /// Dataset seed.
    pub seed: u64,
    /// Phases to run, in order (the first is always the first sync).
    pub phases: Vec<Phase>,
    /// The app's `tc_log_level` (`warning` keeps logging out of the figures).
    pub app_log_level: String,
    pub labels: BenchLabels,
    /// `indicators_per_document` for the job (1: one document per indicator).
    pub per_document: u32,
    pub tc_rails: BenchTcRails,
}

/// What the job makes of ThreatConnect's exclusion lists and expiry dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchTcRails {
    /// Honor Exclusion Lists and Honor Expiry off: the job as it was before them.
    Off,
    /// The app's defaults (both on) against an instance without exclusion lists.
    #[default]
    Default,
    /// Both on, the instance holding lists shaped like TC's defaults and an Organization list
    /// (`tc_like_defaults`), and every 50th indicator an expiry a year ahead.
    Lists,
}

impl BenchTcRails {
    pub fn label(self) -> &'static str {
        match self {
            BenchTcRails::Off => "off",
            BenchTcRails::Default => "default",
            BenchTcRails::Lists => "lists",
        }
    }

    pub fn parse(s: &str) -> Option<BenchTcRails> {
        Some(match s.trim() {
            "off" => BenchTcRails::Off,
            "default" => BenchTcRails::Default,
            "lists" => BenchTcRails::Lists,
            _ => return None,
        })
    }
}

/// Which labels the job gives its documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchLabels {
    /// Tanium Labels empty: no label request at all.
    Off,
    /// The app's default: every document labelled ThreatConnect.
    #[default]
    Default,
    /// The default, labels for the dataset's tags APT* and Malware (about a fifth of the
    /// indicators carry one) and a ThreatAssess band on every scored indicator.
    Rich,
}

impl BenchLabels {
    pub fn label(self) -> &'static str {
        match self {
            BenchLabels::Off => "off",
            BenchLabels::Default => "default",
            BenchLabels::Rich => "rich",
        }
    }

    pub fn parse(s: &str) -> Option<BenchLabels> {
        Some(match s.trim() {
            "off" => BenchLabels::Off,
            "default" => BenchLabels::Default,
            "rich" => BenchLabels::Rich,
            _ => return None,
        })
    }

    fn params(self) -> Vec<(&'static str, serde_json::Value)> {
        match self {
            BenchLabels::Off => vec![("tanium_labels", json!(""))],
            BenchLabels::Default => Vec::new(),
            BenchLabels::Rich => vec![
                ("tags_as_labels", json!("apt*, Malware")),
                ("threatassess_labels", json!(true)),
            ],
        }
    }
}

/// A step of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Empty source, every qualifying indicator is created.
    FirstSync,
    /// Nothing changed since the previous run: an incremental run with nothing to do.
    NoChange,
    /// 1% of the indicators (every 100th id) modified in TC, then an incremental run.
    Changed1Pct,
    /// `reconcile_interval_hours` = 0: the whole match set is compared with the source.
    FullReconcile,
    /// [`DETECTION_ALERTS`] alerts raised on a tenth of the indicators, then a run that reports
    /// them as observations. When it is among the phases, every phase runs with Report Tanium
    /// Detections on (switching it later would rewrite the source).
    Detections,
}

/// Alerts the detections phase raises (the figure: 10k over a 100k-indicator source).
pub const DETECTION_ALERTS: usize = 10_000;

impl Phase {
    /// The four phases every benchmark runs unless told otherwise, in order.
    pub const ALL: [Phase; 4] = [
        Phase::FirstSync,
        Phase::NoChange,
        Phase::Changed1Pct,
        Phase::FullReconcile,
    ];

    /// Table label.
    pub fn label(self) -> &'static str {
        match self {
            Phase::FirstSync => "first sync",
            Phase::NoChange => "no-change rerun",
            Phase::Changed1Pct => "1% changed",
            Phase::FullReconcile => "full reconcile",
            Phase::Detections => "10k alerts reported",
        }
    }
}

/// What one phase cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseResult {
    /// Indicators in the TC simulator.
    pub size: usize,
    /// Which phase.
    pub phase: Phase,
    /// `tanium_workers` the job ran with (0: the app's default).
    pub workers: usize,
    /// Injected latency in milliseconds.
    pub latency_ms: u64,
    /// The app's exit code.
    pub exit_code: i32,
    /// Wall time of the app process, seconds.
    pub wall_secs: f64,
    /// HTTP requests the TC simulator answered.
    pub tc_requests: u64,
    /// HTTP requests the Tanium simulator answered.
    pub tanium_requests: u64,
    /// Of those, document creates, replaces and deletes.
    pub tanium_writes: u64,
    /// Of those, intel listing pages.
    pub tanium_listing: u64,
    /// Observation writes the TC simulator answered (the detections phase).
    #[serde(default)]
    pub tc_writes: u64,
    /// Observations TC counted in the phase.
    #[serde(default)]
    pub observations: u64,
    #[serde(default)]
    pub labels: BenchLabels,
    /// Of the writes, labels put on or taken off documents.
    #[serde(default)]
    pub tanium_label_writes: u64,
    /// Request bytes both simulators received (what the app sent).
    pub bytes_sent: u64,
    /// The app's peak RSS in KiB.
    pub peak_rss_kb: Option<u64>,
    /// CPU seconds the app used (the rest of the machine's time went to the simulators and
    /// to other load).
    #[serde(default)]
    pub app_cpu_secs: Option<f64>,
    /// Documents in the app's source afterwards.
    pub docs_after: usize,
    /// `indicators_per_document` the job ran with.
    #[serde(default = "one")]
    pub per_document: u32,
    #[serde(default)]
    pub tc_rails: BenchTcRails,
    /// Of the TC requests, those of the exclusion lists and the expiry check.
    #[serde(default)]
    pub tc_rails_requests: u64,
    /// message.tc.
    pub message: String,
}

fn one() -> u32 {
    1
}

impl PhaseResult {
    /// Indicators in the dataset per second of wall time.
    pub fn rate(&self) -> f64 {
        self.size as f64 / self.wall_secs.max(1e-3)
    }

    /// What latency alone costs, in seconds: TC reads one after another, Tanium requests and
    /// TC observation writes spread over the write pool (requests x latency / parallelism).
    pub fn limit_secs(&self) -> f64 {
        let workers = if self.workers == 0 {
            crate::config::DEFAULT_WORKERS as f64
        } else {
            self.workers as f64
        };
        let latency = self.latency_ms as f64 / 1000.0;
        let tc_reads = self.tc_requests.saturating_sub(self.tc_writes) as f64;
        tc_reads * latency + (self.tanium_requests + self.tc_writes) as f64 * latency / workers
    }

    /// Wall time over [`PhaseResult::limit_secs`] (None without latency).
    pub fn limit_ratio(&self) -> Option<f64> {
        let limit = self.limit_secs();
        (limit > 0.0).then(|| self.wall_secs / limit)
    }
}

/// Parses `10k`, `100k`, `1m` or a plain number.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = s.strip_suffix('k') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 1_000_000)
    } else {
        (s.as_str(), 1)
    };
    num.parse::<usize>()
        .ok()
        .map(|n| n * mult)
        .filter(|n| *n > 0)
}

/// `10k`, `1M`: a size as the table shows it.
pub fn format_size(n: usize) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// Writes to documents and labels; the run lease's source create and delete are not counted.
fn writes(lab: &Lab) -> u64 {
    let base = ApiGeneration::V4.base_path();
    let s = lab.tanium.server();
    s.hits(&format!("POST {base}/sources/")) + s.hits("PUT ") + s.hits("DELETE ")
        - s.hits(&format!("DELETE {base}/sources/"))
}

fn label_writes(lab: &Lab) -> u64 {
    lab.tanium.server().hits_where(|k| {
        (k.starts_with("PUT ") || k.starts_with("DELETE ")) && k.contains("/labels")
    })
}

/// Runs the phases against a fresh pair of simulators loaded with `size` generated indicators;
/// `progress` sees each phase's result as soon as it is known.
pub fn run_size(
    opts: &BenchOptions,
    size: usize,
    progress: &mut dyn FnMut(&PhaseResult),
) -> std::io::Result<Vec<PhaseResult>> {
    let dir = opts.dir.join(format!(
        "size-{}-labels-{}-per-{}-tc-rails-{}",
        format_size(size),
        opts.labels.label(),
        opts.per_document,
        opts.tc_rails.label()
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let mut lab = Lab::start(&dir, &opts.binary, ApiGeneration::V4)?;
    lab.measure_rss = true;
    // Grouped documents are read back to be changed; they are few, so their bodies are kept.
    lab.tanium.set_keep_bodies(opts.per_document > 1);
    let loaded = Instant::now();
    let year = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    let lists = opts.tc_rails == BenchTcRails::Lists;
    lab.tc
        .load(dataset::generate(size, opts.seed).map(|mut ind| {
            if lists && ind.id % 50 == 0 {
                ind.external_date_expires = Some(crate::tc::tql::format_time(year));
            }
            ind
        }));
    match opts.tc_rails {
        BenchTcRails::Off => {
            lab.set("honor_exclusion_lists", json!(false));
            lab.set("honor_expiry", json!(false));
        }
        BenchTcRails::Default => {}
        BenchTcRails::Lists => {
            for l in crate::sim::tc_exclusions::tc_like_defaults(dataset::OWNERS[0]) {
                lab.tc.add_exclusion_list(l);
            }
        }
    }
    log::info!(
        "loaded {size} indicators into the TC simulator in {:.1} s",
        loaded.elapsed().as_secs_f64()
    );
    if let Some(w) = opts.workers {
        lab.set("tanium_workers", json!(w.to_string()));
    }
    lab.set("tc_log_level", json!(opts.app_log_level));
    lab.set(
        "indicators_per_document",
        json!(opts.per_document.to_string()),
    );
    for (k, v) in opts.labels.params() {
        lab.set(k, v);
    }
    if opts.phases.contains(&Phase::Detections) {
        lab.set("report_detections", json!(true));
    }
    for s in [lab.tc.server(), lab.tanium.server()] {
        s.set_latency(opts.latency);
    }
    let mut out = Vec::new();
    for (i, phase) in opts.phases.iter().copied().enumerate() {
        let mut extra = Map::new();
        match phase {
            Phase::FirstSync => {}
            Phase::NoChange => {}
            Phase::Changed1Pct => {
                for id in (1..=size as i64).step_by(100) {
                    lab.tc.update(id, |ind| {
                        ind.confidence = Some((ind.confidence.unwrap_or(0) + 1) % 101);
                    });
                }
            }
            Phase::FullReconcile => {
                extra.insert("reconcile_interval_hours".into(), json!("0"));
            }
            Phase::Detections => raise_alerts(&lab),
        }
        if i == 0 && phase != Phase::FirstSync {
            return Err(std::io::Error::other(
                "the first phase must be the first sync",
            ));
        }
        for s in [lab.tc.server(), lab.tanium.server()] {
            s.reset_counters();
        }
        let expiry_before = lab.tc.expiry_queries();
        let observed_before: i64 = lab.tc.observed().values().sum();
        let r = lab.run(&extra, &[])?;
        let (tc, tn) = (lab.tc.server(), lab.tanium.server());
        let observed: i64 = lab.tc.observed().values().sum();
        let result = PhaseResult {
            size,
            phase,
            workers: opts.workers.unwrap_or(0),
            latency_ms: opts.latency.as_millis() as u64,
            exit_code: r.code,
            wall_secs: r.elapsed.as_secs_f64(),
            tc_requests: tc.total_requests(),
            tanium_requests: tn.total_requests(),
            tanium_writes: writes(&lab),
            tanium_listing: tn.hits(&format!("GET {}/intels", ApiGeneration::V4.base_path())),
            tc_writes: tc.hits("PUT /api/v3/indicators/"),
            observations: u64::try_from(observed - observed_before).unwrap_or(0),
            labels: opts.labels,
            tanium_label_writes: label_writes(&lab),
            bytes_sent: tc.bytes_received() + tn.bytes_received(),
            peak_rss_kb: r.peak_rss_kb,
            app_cpu_secs: r.cpu_secs,
            docs_after: lab.tanium.doc_count(),
            per_document: opts.per_document,
            tc_rails: opts.tc_rails,
            tc_rails_requests: tc.hits("GET /api/v3/security/exclusionLists")
                + (lab.tc.expiry_queries() - expiry_before),
            message: r.message.clone(),
        };
        if r.code != 0 {
            log::warn!(
                "{} {}: exit {}: {}\n{}",
                format_size(size),
                phase.label(),
                r.code,
                r.message,
                r.stderr
            );
        }
        progress(&result);
        out.push(result);
    }
    Ok(out)
}

/// Raises [`DETECTION_ALERTS`] alerts, spread evenly over a tenth of the indicators the source
/// holds (at least one), as endpoints matching them would: on a grouped document, an alert
/// names its member's value.
fn raise_alerts(lab: &Lab) {
    let source = lab.tanium.source_id("ThreatConnect").unwrap_or_default();
    let mut targets: Vec<(i64, Option<String>)> = Vec::new();
    for d in lab.tanium.docs_in(source) {
        match crate::intel::group::read(&d.body) {
            Ok(g) if !g.members.is_empty() => targets.extend(
                g.members
                    .iter()
                    .map(|m| (d.id, m.match_values().into_iter().next())),
            ),
            _ => targets.push((d.id, None)),
        }
    }
    targets.sort();
    let alerted = (targets.len() / 10).max(1).min(targets.len());
    let raised = Instant::now();
    for k in 0..DETECTION_ALERTS {
        if let Some((doc, value)) = targets.get((k % alerted) * 10) {
            let properties = value.as_ref().map_or(json!({}), |v| json!({ "value": v }));
            lab.tanium
                .raise_alert(crate::sim::alerts::AlertSpec::on(*doc, properties));
        }
    }
    log::info!(
        "raised {DETECTION_ALERTS} alerts on {alerted} indicators in {:.1} s",
        raised.elapsed().as_secs_f64()
    );
}

/// The results as a Markdown table.
pub fn table(results: &[PhaseResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| size | per doc | phase | labels | TC rails | workers | latency | exit | wall (s) | limit (s) | wall / limit | app CPU (s) | indicators/s | TC req (of them rails) | Tanium req (listing / writes, of them labels) | bytes sent | app peak RSS | documents |"
    );
    let _ = writeln!(
        s,
        "|-----:|--------:|-------|--------|----------|--------:|--------:|-----:|---------:|----------:|-------------:|------------:|-------------:|-----------------------:|----------------------------------------------:|-----------:|-------------:|----------:|"
    );
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} ms | {} | {:.2} | {:.2} | {} | {} | {:.0} | {} ({}){} | {} ({} / {}, {}) | {} | {} | {} |",
            format_size(r.size),
            r.per_document,
            r.phase.label(),
            r.labels.label(),
            r.tc_rails.label(),
            if r.workers == 0 {
                "default".to_string()
            } else {
                r.workers.to_string()
            },
            r.latency_ms,
            r.exit_code,
            r.wall_secs,
            r.limit_secs(),
            r.limit_ratio()
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "n/a".into()),
            r.app_cpu_secs
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "n/a".into()),
            r.rate(),
            r.tc_requests,
            r.tc_rails_requests,
            if r.tc_writes > 0 {
                format!(" ({} writes, {} observations)", r.tc_writes, r.observations)
            } else {
                String::new()
            },
            r.tanium_requests,
            r.tanium_listing,
            r.tanium_writes,
            r.tanium_label_writes,
            format_bytes(r.bytes_sent),
            r.peak_rss_kb
                .map(|k| format!("{:.1} MB", k as f64 / 1024.0))
                .unwrap_or_else(|| "n/a".into()),
            r.docs_after,
        );
    }
    s
}

fn format_bytes(b: u64) -> String {
    if b >= 10 * 1024 * 1024 {
        format!("{:.0} MB", b as f64 / (1024.0 * 1024.0))
    } else if b >= 10 * 1024 {
        format!("{:.0} kB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

/// Recorded figures of the smoke run a regression check compares against.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    /// Where and how the figures were taken.
    pub note: String,
    /// One entry per phase.
    pub phases: Vec<PhaseResult>,
}

/// How far a figure may move from the recorded one before [`regressions`] reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// Deterministic for a given dataset and phase: any difference is a change of behaviour.
    Exact,
    /// May be up to this many times the recorded figure.
    AtMost(f64),
}

/// TC requests, Tanium writes (documents and labels) and the documents held do not depend on
/// timing: a doubled write shows as one more. The Tanium request total may vary a little: an
/// update reads its stored document only until a parallel write's answer proves Tanium's md5
/// (27 to 33 listing and read requests in the 1% changed phase, out of about 135), and bytes
/// follow the requests. Peak RSS varies with the machine and its load.
pub const REQUESTS_AND_BYTES: Tolerance = Tolerance::AtMost(1.1);
pub const RSS: Tolerance = Tolerance::AtMost(2.0);

/// Compares `now` with the baseline: TC requests, Tanium writes, label writes and the
/// documents held exactly; Tanium requests and bytes sent [`REQUESTS_AND_BYTES`]; peak RSS
/// [`RSS`] (wall time is never compared). Returns the violations.
pub fn regressions(baseline: &Baseline, now: &[PhaseResult]) -> Vec<String> {
    let mut bad = Vec::new();
    for b in &baseline.phases {
        let Some(n) = now.iter().find(|n| n.phase == b.phase && n.size == b.size) else {
            bad.push(format!("{}: phase not run", b.phase.label()));
            continue;
        };
        if n.exit_code != 0 {
            bad.push(format!(
                "{}: exit code {} ({})",
                b.phase.label(),
                n.exit_code,
                n.message
            ));
        }
        let mut check = |what: &str, recorded: u64, measured: u64, tolerance: Tolerance| {
            let off = match tolerance {
                Tolerance::Exact => (measured != recorded)
                    .then(|| format!("{what} {measured}, recorded {recorded} (must be equal)")),
                Tolerance::AtMost(factor) => {
                    (measured as f64 > recorded as f64 * factor).then(|| {
                        format!("{what} {measured} is over {factor}x the recorded {recorded}")
                    })
                }
            };
            if let Some(off) = off {
                bad.push(format!("{}: {off}", b.phase.label()));
            }
        };
        check(
            "TC requests",
            b.tc_requests,
            n.tc_requests,
            Tolerance::Exact,
        );
        check(
            "Tanium requests",
            b.tanium_requests,
            n.tanium_requests,
            REQUESTS_AND_BYTES,
        );
        check(
            "Tanium writes",
            b.tanium_writes,
            n.tanium_writes,
            Tolerance::Exact,
        );
        check(
            "TC observation writes",
            b.tc_writes,
            n.tc_writes,
            Tolerance::Exact,
        );
        check(
            "Tanium label writes",
            b.tanium_label_writes,
            n.tanium_label_writes,
            Tolerance::Exact,
        );
        check("bytes sent", b.bytes_sent, n.bytes_sent, REQUESTS_AND_BYTES);
        if let (Some(rb), Some(rn)) = (b.peak_rss_kb, n.peak_rss_kb) {
            check("peak RSS (KiB)", rb, rn, RSS);
        }
        check(
            "documents held",
            b.docs_after as u64,
            n.docs_after as u64,
            Tolerance::Exact,
        );
    }
    bad
}

/// The results as JSON (for `--json`, and to record a new baseline).
pub fn to_json(note: &str, results: &[PhaseResult]) -> Value {
    serde_json::to_value(Baseline {
        note: note.to_string(),
        phases: results.to_vec(),
    })
    .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("10k"), Some(10_000));
        assert_eq!(parse_size("1M"), Some(1_000_000));
        assert_eq!(parse_size("2500"), Some(2500));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("x"), None);
        assert_eq!(format_size(100_000), "100k");
        assert_eq!(format_size(1_000_000), "1M");
        assert_eq!(format_size(1234), "1234");
    }

    fn result(phase: Phase, tc: u64, writes: u64, rss: u64) -> PhaseResult {
        PhaseResult {
            size: 10,
            phase,
            workers: 0,
            latency_ms: 0,
            exit_code: 0,
            wall_secs: 1.0,
            tc_requests: tc,
            tanium_requests: 10 + writes,
            tanium_writes: writes,
            tanium_listing: 1,
            tc_writes: 0,
            observations: 0,
            labels: BenchLabels::Default,
            tanium_label_writes: 0,
            bytes_sent: 1000,
            peak_rss_kb: Some(rss),
            app_cpu_secs: None,
            docs_after: 5,
            per_document: 1,
            tc_rails: BenchTcRails::Default,
            tc_rails_requests: 0,
            message: String::new(),
        }
    }

    #[test]
    fn regressions_flag_any_change_of_a_deterministic_count_and_drift_past_the_tolerances() {
        let base = Baseline {
            note: String::new(),
            phases: vec![
                result(Phase::FirstSync, 3, 5, 10_000),
                result(Phase::NoChange, 3, 0, 10_000),
            ],
        };
        let same = vec![
            result(Phase::FirstSync, 3, 5, 19_000),
            result(Phase::NoChange, 3, 0, 10_000),
        ];
        assert!(regressions(&base, &same).is_empty());
        // A tenth more Tanium requests and bytes passes; a write more never does.
        let mut drift = same.clone();
        drift[0].tanium_requests = 16;
        drift[0].bytes_sent = 1100;
        assert!(regressions(&base, &drift).is_empty(), "{drift:?}");
        drift[0].tanium_requests = 17;
        drift[0].bytes_sent = 1101;
        assert_eq!(regressions(&base, &drift).len(), 2);
        let worse = vec![
            result(Phase::FirstSync, 4, 6, 21_000),
            result(Phase::NoChange, 2, 1, 10_000),
        ];
        let bad = regressions(&base, &worse);
        // TC requests (both ways), the writes of both phases, RSS past 2x.
        assert_eq!(bad.len(), 5, "{bad:?}");
        assert!(bad
            .iter()
            .any(|b| b == "no-change rerun: Tanium writes 1, recorded 0 (must be equal)"));
        assert!(bad
            .iter()
            .any(|b| b == "first sync: TC requests 4, recorded 3 (must be equal)"));
        assert!(bad
            .iter()
            .any(|b| b.starts_with("first sync: peak RSS (KiB) 21000 is over 2x")));
        let mut fewer_docs = same.clone();
        fewer_docs[1].docs_after = 4;
        assert_eq!(
            regressions(&base, &fewer_docs),
            ["no-change rerun: documents held 4, recorded 5 (must be equal)"]
        );
        assert_eq!(regressions(&base, &same[..1]).len(), 1);
    }
}
