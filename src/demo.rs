//! `demo`: the built-in default. Starts both simulators on loopback with a sample dataset, runs
//! the real binary twice exactly as the TC platform would (a first full sync, then an incremental
//! sync after changing some indicators) and shows what happened and where to look.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map};

use crate::cli::Options;
use crate::error::{Error, Result};
use crate::platform::ExitStatus;
use crate::sim::dataset;
use crate::sim::lab::{Lab, RunResult};
use crate::tanium::model::ApiGeneration;
use crate::tc::model::{Indicator, IndicatorType};

/// Indicators in the demo dataset.
const DEMO_SIZE: usize = 1500;
/// Tags the demo job excludes.
const EXCLUDED: [&str; 2] = ["Benign", "Test"];

fn qualifies(i: &Indicator) -> bool {
    i.active
        && IndicatorType::parse(&i.type_name).is_some()
        && !i
            .tags
            .iter()
            .any(|t| EXCLUDED.iter().any(|x| x.eq_ignore_ascii_case(t)))
}

fn show(title: &str, r: &RunResult, lab: &Lab) {
    println!("\n== {title}");
    println!("   exit code   {}", r.code);
    println!("   message.tc  {}", r.message);
    if let Some(lm) = r.results.get("last_modified") {
        println!("   results.tc  last_modified = {lm}");
    }
    println!(
        "   took        {:.2} s; Tanium source now holds {} documents; intel deployed {} time(s) so far",
        r.elapsed.as_secs_f64(),
        lab.source_docs().len(),
        lab.tanium.deploy_count()
    );
}

/// The file that marks a folder as the demo's own, so a rerun may empty it.
pub const MARKER: &str = ".tanium-tr-indicators-demo";

/// Makes `dir` an empty demo folder. A folder that holds anything but an earlier demo's output
/// (no marker) is refused, never emptied: `--out` may point anywhere.
fn prepare(dir: &Path) -> Result<()> {
    let io = |e| Error::io(dir, e);
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map_err(io)?.next().is_none();
        if !empty {
            if !dir.join(MARKER).is_file() {
                return Err(Error::Other(format!(
                    "demo: {} is not empty and was not made by the demo; choose another --out or empty it yourself",
                    dir.display()
                )));
            }
            std::fs::remove_dir_all(dir).map_err(io)?;
        }
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(
        dir.join(MARKER),
        "Made by `tanium-tr-indicators demo`, which empties this folder when it runs again.\n",
    )
    .map_err(io)
}

/// Changes ThreatConnect the way analysts do between two job runs; what changed, in words.
fn change_tc(lab: &Lab) -> Vec<String> {
    let live: Vec<Indicator> = lab.tc.snapshot().into_iter().filter(qualifies).collect();
    let mut changes: BTreeMap<&str, usize> = BTreeMap::new();
    for ind in live.iter().take(15) {
        lab.tc.update(ind.id, |i| {
            i.confidence = Some((i.confidence.unwrap_or(0) + 7) % 100);
        });
        *changes.entry("re-scored").or_default() += 1;
    }
    for ind in live.iter().skip(15).take(5) {
        lab.tc.delete(ind.id);
        *changes.entry("deleted").or_default() += 1;
    }
    for ind in live.iter().skip(20).take(5) {
        lab.tc.set_active(ind.id, false);
        *changes.entry("deactivated").or_default() += 1;
    }
    for ind in live.iter().skip(25).take(5) {
        lab.tc.update(ind.id, |i| i.tags.push("Benign".into()));
        *changes.entry("tagged Benign (excluded)").or_default() += 1;
    }
    for (n, mut ind) in dataset::generate(10, 99).enumerate() {
        ind.id = 1_000_000 + n as i64;
        ind.summary = format!("198.51.100.{}", n + 1);
        ind.type_name = "Address".into();
        ind.ip = Some(ind.summary.clone());
        ind.host_name = None;
        ind.md5 = None;
        ind.sha1 = None;
        ind.sha256 = None;
        ind.active = true;
        ind.tags.clear();
        ind.last_modified = crate::tc::tql::format_time(time::OffsetDateTime::now_utc());
        lab.tc.insert(ind);
        *changes.entry("added").or_default() += 1;
    }
    changes.iter().map(|(k, v)| format!("{v} {k}")).collect()
}

/// Runs the demo; returns Success when the Tanium source ends up holding exactly the expected set.
pub fn run(opts: &Options) -> Result<ExitStatus> {
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("demo-out"));
    prepare(&dir)?;
    let exe =
        std::env::current_exe().map_err(|e| Error::Other(format!("cannot find myself: {e}")))?;
    let io = |e: std::io::Error| Error::Other(format!("demo: {e}"));
    let mut lab = Lab::start(&dir, &exe, ApiGeneration::V4).map_err(io)?;
    lab.tc.load(dataset::generate(DEMO_SIZE, 7));
    lab.set("exclude_tags", json!(EXCLUDED.join(",")));

    println!("tanium-tr-indicators demo");
    println!(
        "ThreatConnect simulator: {}  ({} indicators, 4 owners, Address/File/Host plus some URL)",
        lab.tc.api_path(),
        lab.tc.len()
    );
    println!("Tanium TR 4.x simulator: {}", lab.tanium.url());
    println!(
        "Job: all owners, all three types, excluding tags {}; params delivered as an encrypted param file",
        EXCLUDED.join(", ")
    );

    let first = lab.run(&Map::new(), &[]).map_err(io)?;
    show("run 1: first sync (full)", &first, &lab);

    let summary = change_tc(&lab);
    println!("\nChanged ThreatConnect: {}", summary.join(", "));

    let second = lab.run(&Map::new(), &[]).map_err(io)?;
    show("run 2: incremental sync", &second, &lab);

    let expected = lab.tc.snapshot().iter().filter(|i| qualifies(i)).count();
    let held = lab.source_docs().len();
    let ok = first.code == 0 && second.code == 0 && expected == held;
    println!(
        "\n{} Tanium source holds {held} documents; ThreatConnect has {expected} qualifying indicators",
        if ok { "OK:" } else { "MISMATCH:" }
    );
    println!("\nWhere to look:");
    for r in [&first, &second] {
        println!(
            "   {}/  log/app.log, out/message.tc, out/results.tc",
            r.dir.display()
        );
    }
    println!("Try a dry run of your own job: tanium-tr-indicators --params my-job.json --dry-run --out plan/");
    Ok(if ok {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}
