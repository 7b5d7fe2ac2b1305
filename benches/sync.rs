//! `cargo bench --bench sync -- [options]`: runs the real (release) binary against both
//! simulators through first sync, no-change rerun, 1% changed and full reconcile, and prints a
//! table of wall time, indicators/s, requests, bytes sent and the app's peak RSS. Options:
//! [`USAGE`], or `cargo bench --bench sync -- --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tanium_tr_indicators::sim::bench::{
    self, Baseline, BenchLabels, BenchOptions, BenchTcRails, Phase, PhaseResult,
};

const USAGE: &str = "cargo bench --bench sync -- [options]

Options (sizes also from the `BENCH_SIZES` environment variable):
  --sizes 10k,100k[,1m]   dataset sizes (default 10k,100k)
  --latency-ms N          latency both simulators add to every answer (default 0)
  --workers N[,M...]      tanium_workers; several values run each and report the speed-up
  --labels L[,M...]       off, default (every document labelled ThreatConnect, the app's
                          default) or rich (also tags APT*, Malware and ThreatAssess bands);
                          several run each and report the label requests' cost
  --per-document N[,M...] indicators_per_document (default 1); several run each
  --tc-rails R[,S...]     off (Honor Exclusion Lists and Honor Expiry off), default (on,
                          no exclusion list in TC) or lists (on, TC holding lists shaped
                          like its defaults, every 50th indicator with an expiry); several
                          run each and report what the rails cost in TC requests
  --phases LIST           first,nochange,changed,full,detections (default the first four;
                          detections raises 10k alerts on a tenth of the documents and
                          reports them, with Report Tanium Detections on in every phase)
  --json FILE             also write the results as JSON
  --check FILE            compare with a recorded baseline; exit 1 over 2x (not wall time)
  --dir DIR               working folder (default target/bench)
  --seed N                dataset seed (default 7)
  --app-log LEVEL         the app's tc_log_level (default warning; app.log under --dir)
  --binary PATH           run this instead of the release build (e.g. a heaptrack wrapper)
";

struct Args {
    sizes: Vec<usize>,
    latency_ms: u64,
    workers: Vec<Option<usize>>,
    labels: Vec<BenchLabels>,
    per_document: Vec<u32>,
    tc_rails: Vec<BenchTcRails>,
    phases: Vec<Phase>,
    json: Option<PathBuf>,
    check: Option<PathBuf>,
    dir: PathBuf,
    seed: u64,
    binary: Option<PathBuf>,
    app_log: String,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut a = Args {
        sizes: Vec::new(),
        latency_ms: 0,
        workers: vec![None],
        labels: vec![BenchLabels::Default],
        per_document: vec![1],
        tc_rails: vec![BenchTcRails::Default],
        phases: Phase::ALL.to_vec(),
        json: None,
        check: None,
        dir: PathBuf::from("target/bench"),
        seed: 7,
        binary: None,
        app_log: "warning".into(),
    };
    let mut sizes = std::env::var("BENCH_SIZES").unwrap_or_else(|_| "10k,100k".into());
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {} // cargo bench passes it to harness = false targets
            "--help" | "-h" => return Ok(None),
            "--sizes" => sizes = value("--sizes")?,
            "--latency-ms" => {
                a.latency_ms = value("--latency-ms")?
                    .parse()
                    .map_err(|_| "--latency-ms needs a whole number")?
            }
            "--workers" => {
                a.workers = value("--workers")?
                    .split(',')
                    .map(|w| match w.trim().parse::<usize>() {
                        Ok(n) if (1..=32).contains(&n) => Ok(Some(n)),
                        _ => Err(format!("--workers: '{w}' is not a number from 1 to 32")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--labels" => {
                a.labels = value("--labels")?
                    .split(',')
                    .map(|l| {
                        BenchLabels::parse(l)
                            .ok_or(format!("--labels: '{l}' is not off, default or rich"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--per-document" => {
                a.per_document = value("--per-document")?
                    .split(',')
                    .map(|n| match n.trim().parse::<u32>() {
                        Ok(n)
                            if (1..=tanium_tr_indicators::config::MAX_PER_DOCUMENT)
                                .contains(&n) =>
                        {
                            Ok(n)
                        }
                        _ => Err(format!(
                            "--per-document: '{n}' is not a number from 1 to 1000"
                        )),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--tc-rails" => {
                a.tc_rails = value("--tc-rails")?
                    .split(',')
                    .map(|r| {
                        BenchTcRails::parse(r)
                            .ok_or(format!("--tc-rails: '{r}' is not off, default or lists"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--phases" => {
                let mut p = vec![Phase::FirstSync];
                for name in value("--phases")?.split(',') {
                    let phase = match name.trim() {
                        "first" => Phase::FirstSync,
                        "nochange" => Phase::NoChange,
                        "changed" => Phase::Changed1Pct,
                        "full" => Phase::FullReconcile,
                        "detections" => Phase::Detections,
                        other => return Err(format!("--phases: unknown phase '{other}'")),
                    };
                    if !p.contains(&phase) {
                        p.push(phase);
                    }
                }
                a.phases = p;
            }
            "--json" => a.json = Some(value("--json")?.into()),
            "--check" => a.check = Some(value("--check")?.into()),
            "--dir" => a.dir = value("--dir")?.into(),
            "--app-log" => a.app_log = value("--app-log")?,
            "--binary" => {
                // Runs happen in their own folders: a relative path would not resolve there.
                let p = PathBuf::from(value("--binary")?);
                a.binary = Some(p.canonicalize().map_err(|e| format!("--binary: {e}"))?);
            }
            "--seed" => {
                a.seed = value("--seed")?
                    .parse()
                    .map_err(|_| "--seed needs a whole number")?
            }
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    a.sizes = sizes
        .split(',')
        .map(|s| bench::parse_size(s).ok_or(format!("bad size '{s}' (use 10k, 100k, 1m)")))
        .collect::<Result<_, _>>()?;
    Ok(Some(a))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let binary = args
        .binary
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tanium-tr-indicators")));
    eprintln!(
        "bench: binary {}, {} cores, sizes {:?}, latency {} ms",
        binary.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.sizes,
        args.latency_ms
    );
    let mut all: Vec<PhaseResult> = Vec::new();
    for &size in &args.sizes {
        let mut combos = Vec::new();
        for &w in &args.workers {
            for &l in &args.labels {
                for &p in &args.per_document {
                    for &t in &args.tc_rails {
                        combos.push((w, l, p, t));
                    }
                }
            }
        }
        for (workers, labels, per_document, tc_rails) in combos {
            let opts = BenchOptions {
                binary: binary.clone(),
                dir: args.dir.clone(),
                latency: Duration::from_millis(args.latency_ms),
                workers,
                seed: args.seed,
                phases: args.phases.clone(),
                app_log_level: args.app_log.clone(),
                labels,
                per_document,
                tc_rails,
            };
            let run = bench::run_size(&opts, size, &mut |r| {
                eprintln!(
                    "bench: {} {} (per document {}, workers {}, labels {}, TC rails {}): {:.2} s, exit {}, TC {} req ({} of the rails), Tanium {} req ({} writes, {} of labels), peak RSS {} KiB",
                    bench::format_size(r.size),
                    r.phase.label(),
                    r.per_document,
                    workers.map_or("default".into(), |w| w.to_string()),
                    labels.label(),
                    tc_rails.label(),
                    r.wall_secs,
                    r.exit_code,
                    r.tc_requests,
                    r.tc_rails_requests,
                    r.tanium_requests,
                    r.tanium_writes,
                    r.tanium_label_writes,
                    r.peak_rss_kb.unwrap_or(0)
                )
            });
            match run {
                Ok(r) => all.extend(r),
                Err(e) => {
                    eprintln!("bench: {} failed: {e}", bench::format_size(size));
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    println!("\n{}", bench::table(&all));
    if args.labels.len() > 1 {
        for &size in &args.sizes {
            for phase in [Phase::FirstSync, Phase::NoChange] {
                let of = |l: BenchLabels| {
                    all.iter()
                        .find(|r| r.size == size && r.phase == phase && r.labels == l)
                };
                let Some(off) = of(BenchLabels::Off) else {
                    continue;
                };
                for r in all
                    .iter()
                    .filter(|r| r.size == size && r.phase == phase && r.labels != BenchLabels::Off)
                {
                    println!(
                        "{} of {}: labels {} cost {} more Tanium requests ({} vs {}), {:+.2} s",
                        phase.label(),
                        bench::format_size(size),
                        r.labels.label(),
                        r.tanium_requests as i64 - off.tanium_requests as i64,
                        r.tanium_requests,
                        off.tanium_requests,
                        r.wall_secs - off.wall_secs
                    );
                }
            }
        }
    }
    if args.tc_rails.len() > 1 {
        for r in all.iter().filter(|r| r.tc_rails != BenchTcRails::Off) {
            let off = all.iter().find(|o| {
                o.size == r.size
                    && o.phase == r.phase
                    && o.per_document == r.per_document
                    && o.labels == r.labels
                    && o.tc_rails == BenchTcRails::Off
            });
            if let Some(off) = off {
                println!(
                    "{} of {}: TC rails {} cost {} more TC requests ({} vs {}; {} of the lists and the expiry check), {:+.2} s",
                    r.phase.label(),
                    bench::format_size(r.size),
                    r.tc_rails.label(),
                    r.tc_requests as i64 - off.tc_requests as i64,
                    r.tc_requests,
                    off.tc_requests,
                    r.tc_rails_requests,
                    r.wall_secs - off.wall_secs
                );
            }
        }
    }
    if args.per_document.len() > 1 {
        for r in all.iter().filter(|r| r.per_document > 1) {
            let single = all.iter().find(|s| {
                s.size == r.size
                    && s.phase == r.phase
                    && s.per_document == 1
                    && s.labels == r.labels
            });
            if let Some(s) = single {
                println!(
                    "{} of {}: {} per document {:.2} s, {} Tanium requests, {} documents; one per indicator {:.2} s, {} requests, {} documents ({:.1}x faster)",
                    r.phase.label(),
                    bench::format_size(r.size),
                    r.per_document,
                    r.wall_secs,
                    r.tanium_requests,
                    r.docs_after,
                    s.wall_secs,
                    s.tanium_requests,
                    s.docs_after,
                    s.wall_secs / r.wall_secs.max(1e-3)
                );
            }
        }
    }
    if args.workers.len() > 1 {
        for &size in &args.sizes {
            let first: Vec<&PhaseResult> = all
                .iter()
                .filter(|r| r.size == size && r.phase == Phase::FirstSync)
                .collect();
            if let Some(base) = first.first() {
                for r in &first[1..] {
                    println!(
                        "first sync of {} at {} ms latency: {} workers {:.2} s vs {} {:.2} s: {:.1}x faster",
                        bench::format_size(size),
                        args.latency_ms,
                        r.workers,
                        r.wall_secs,
                        base.workers,
                        base.wall_secs,
                        base.wall_secs / r.wall_secs.max(1e-3)
                    );
                }
            }
        }
    }
    if let Some(path) = &args.json {
        let note = format!(
            "{} cores, latency {} ms",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            args.latency_ms
        );
        let text = serde_json::to_string_pretty(&bench::to_json(&note, &all)).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = &args.check {
        let baseline: Baseline = match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(b) => b,
            Err(e) => {
                eprintln!("bench: cannot read baseline {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        };
        let bad = bench::regressions(&baseline, &all);
        if !bad.is_empty() {
            for b in &bad {
                eprintln!("bench: REGRESSION {b}");
            }
            return ExitCode::FAILURE;
        }
        println!("no regression against {}", path.display());
    }
    ExitCode::SUCCESS
}
