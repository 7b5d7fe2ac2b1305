//! The `check` mode: what the next run would meet, tried without writing anything. Both
//! connections, the owners the job names, ThreatConnect's exclusion lists (read as a run reads
//! them), the matching query (TQL included) exactly as the next run sends it, the intel source,
//! the labels, and each Tanium permission the job needs: proven by reading, or listed as not
//! checked where only a write could prove it. Nothing is left
//! behind: no document, label or source. One line per check.

use std::collections::BTreeSet;
use std::fmt;

use time::OffsetDateTime;

use crate::clients::Clients;
use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::job::Outcome;
use crate::label_rules::{LabelRules, TagRule};
use crate::param_names as pn;
use crate::platform::ExitStatus;
use crate::safety::Rails;
use crate::sync::{self, Checkpoint};
use crate::tanium::label_api::find;
use crate::tanium::{ApiGeneration, Permission, TaniumClient};
use crate::tc::client::TcClient;
use crate::tc::tql;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Passed,
    Failed,
    NotChecked(Permission),
    /// A ThreatConnect setting only a write could prove.
    NotCheckedTc(&'static str),
}

struct Line {
    verdict: Verdict,
    text: String,
}

impl Line {
    fn ok(text: impl Into<String>) -> Line {
        Line {
            verdict: Verdict::Passed,
            text: text.into(),
        }
    }

    fn fail(text: impl Into<String>) -> Line {
        Line {
            verdict: Verdict::Failed,
            text: text.into(),
        }
    }

    /// A failed check's line; the side is named once, whether or not the error's text leads
    /// with it.
    fn failed(side: &str, e: &Error) -> Line {
        let text = e.to_string();
        if text.starts_with(side) {
            Line::fail(text)
        } else {
            Line::fail(format!("{side}: {text}"))
        }
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.verdict {
            Verdict::Passed => "ok  ",
            Verdict::Failed => "FAIL",
            Verdict::NotChecked(_) | Verdict::NotCheckedTc(_) => "--  ",
        };
        write!(f, "{mark} {}", self.text)
    }
}

/// What the Tanium checks found of the app's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceState {
    Missing,
    /// There, holding this many documents (None: they could not be listed).
    Exists(Option<u64>),
    Unknown,
}

/// Runs every check, prints one line each and says how `check` ends: exit 1 when one failed,
/// else 0, with what was not checked named in message.tc.
pub fn run(config: &JobConfig, checkpoint: &Checkpoint, clients: &Clients) -> Result<Outcome> {
    let now = OffsetDateTime::now_utc();
    crate::job::log_limits(config, clients.policy());
    let mut tc_lines = Vec::new();
    let tc = match clients
        .tc(&config.tc)
        .and_then(|c| c.check().map(|s| (c, s)))
    {
        Ok((c, summary)) => {
            tc_lines.push(Line::ok(format!("ThreatConnect: {summary}")));
            Some(c)
        }
        Err(e) => {
            tc_lines.push(Line::failed("ThreatConnect", &e));
            None
        }
    };
    let filters = &config.filters;
    // User TQL replaces the owners param; owners it names are only seen in what it counts.
    let owners_apply = tql::user_tql(filters).is_none() && !filters.owners.is_empty();
    if let (Some(tc), true) = (tc, owners_apply) {
        tc_lines.push(owners(tc, &filters.owners));
    }
    if let (Some(tc), true) = (tc, config.report_detections) {
        tc_lines.extend(observations(tc));
    }
    let mut tanium_lines = Vec::new();
    let source = match clients.tanium(&config.tanium) {
        Ok(t) => tanium(&t, config, &mut tanium_lines),
        Err(e) => {
            tanium_lines.push(Line::failed("Tanium", &e));
            SourceState::Unknown
        }
    };
    // Last, though shown with ThreatConnect: whether the next run reconciles fully (and so
    // which window its query has) depends on what the source holds.
    if let Some(tc) = tc {
        tc_lines.push(matching_query(tc, config, checkpoint, source, now));
        if config.rails.honor_exclusion_lists {
            tc_lines.push(exclusion_lists(tc, config));
        }
    }
    let rails = Line::ok(format!("Safety rails: {}", rails_summary(&config.rails)));
    let lines: Vec<Line> = tc_lines
        .into_iter()
        .chain([rails])
        .chain(tanium_lines)
        .collect();
    for l in &lines {
        println!("{l}");
        log::info!("check: {l}");
    }
    Ok(outcome(&lines))
}

fn outcome(lines: &[Line]) -> Outcome {
    let failed = lines.iter().find(|l| l.verdict == Verdict::Failed);
    let not_checked: Vec<String> = lines
        .iter()
        .filter_map(|l| match l.verdict {
            Verdict::NotChecked(p) => Some(format!("'{}'", p.name())),
            Verdict::NotCheckedTc(option) => Some(format!("'{option}'")),
            _ => None,
        })
        .collect();
    let (status, message) = match failed {
        Some(f) => (ExitStatus::Failure, format!("Check failed: {}", f.text)),
        None if not_checked.is_empty() => (
            ExitStatus::Success,
            "All checks passed: ThreatConnect, the matching query, Tanium and the intel source"
                .to_string(),
        ),
        None => (
            ExitStatus::Success,
            format!(
                "Checks passed; not checked: {} (the first run shows them)",
                not_checked.join(", ")
            ),
        ),
    };
    Outcome {
        status,
        message,
        results: Vec::new(),
    }
}

/// The rails in the words of the job's params.
fn rails_summary(r: &Rails) -> String {
    let on = |b: bool| if b { "on" } else { "off" };
    let never = r.guard.never_send.canonical().len();
    format!(
        "Block Unsafe Indicators {}; Never Send {never} entr{}; Maximum Removal Percent {}; Maximum Indicators {}; Maximum Indicator Age {}; Honor Exclusion Lists {}; Honor Expiry {}; Deploy Intel {}",
        on(r.guard.safeguards),
        if never == 1 { "y" } else { "ies" },
        r.max_removal_percent,
        r.max_indicators.map_or("none".to_string(), |n| n.to_string()),
        r.max_indicator_age_days
            .map_or("none".to_string(), |d| format!("{d} days")),
        on(r.honor_exclusion_lists),
        on(r.honor_expiry),
        on(r.deploy_intel)
    )
}

/// ThreatConnect's exclusion lists, read as a run reads them (reads only): a refusal names the
/// role the Api User needs.
fn exclusion_lists(tc: &TcClient, config: &JobConfig) -> Line {
    let label = pn::HONOR_EXCLUSION_LISTS.label;
    match sync::Lists::read(config, tc) {
        sync::Lists::Read(e) => Line::ok(format!(
            "ThreatConnect exclusion lists ({label}): readable; {} appl{} to the job",
            crate::words::counted(e.len() as u64, "list"),
            if e.len() == 1 { "ies" } else { "y" }
        )),
        sync::Lists::Unread(u) => match &u {
            sync::Unread::Denied(answers) => Line::fail(format!("{u} ({answers})")),
            sync::Unread::Failed(_) => Line::fail(u.to_string()),
        },
        sync::Lists::Off => Line::ok(format!("{label}: off")),
    }
}

/// Each owner the job names, by name, against those the Api User can see: the job's query and
/// its own filter compare owner names exactly, so an owner it cannot see selects nothing.
fn owners(tc: &TcClient, wanted: &[String]) -> Line {
    let label = pn::OWNERS.label;
    let visible = match tc.owners() {
        Ok(v) => v,
        Err(e) => {
            return Line::fail(format!(
                "{label}: the owners the Api User can see cannot be listed: {e}"
            ))
        }
    };
    let names: Vec<&str> = visible.iter().map(|o| o.name.as_str()).collect();
    let unknown: Vec<String> = wanted
        .iter()
        .filter(|w| !names.contains(&w.as_str()))
        .map(
            |w| match names.iter().find(|n| n.to_lowercase() == w.to_lowercase()) {
                Some(n) => format!("'{w}' (did you mean '{n}'? names must match exactly)"),
                None => format!("'{w}'"),
            },
        )
        .collect();
    if unknown.is_empty() {
        return Line::ok(format!(
            "{label}: the Api User sees {} ({})",
            if wanted.len() == 1 { "it" } else { "each" },
            wanted.join(", ")
        ));
    }
    const SHOWN: usize = 8;
    let mut seen = names
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        seen.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    if names.is_empty() {
        seen = "none".into();
    }
    Line::fail(format!(
        "{label}: {} {} not an owner the Api User can see (it sees {seen})",
        unknown.join(", "),
        if unknown.len() == 1 { "is" } else { "are" }
    ))
}

/// Report Tanium Detections on the ThreatConnect side: the counts are readable; the Api User
/// option that lets it report them only a write would prove.
fn observations(tc: &TcClient) -> Vec<Line> {
    let read = match tc.check_observations() {
        Ok(()) => Line::ok(
            "ThreatConnect observations (Report Tanium Detections): indicators read with their observation counts",
        ),
        Err(e) => Line::fail(format!(
            "ThreatConnect observations (Report Tanium Detections): {e}"
        )),
    };
    let option = Line {
        verdict: Verdict::NotCheckedTc(OBSERVATION_OPTION),
        text: format!(
            "ThreatConnect Api User option '{OBSERVATION_OPTION}': not checked: reporting an observation cannot be tried without counting it; the first run with detections says whether ThreatConnect refuses it"
        ),
    };
    vec![read, option]
}

/// The Api User option Report Tanium Detections needs.
const OBSERVATION_OPTION: &str = "Include in Observations and False Positives";

/// The next run's matching query, sent with a one-record page: TC's answer is the check.
fn matching_query(
    tc: &TcClient,
    config: &JobConfig,
    checkpoint: &Checkpoint,
    source: SourceState,
    now: OffsetDateTime,
) -> Line {
    let empty = matches!(source, SourceState::Missing | SourceState::Exists(Some(0)));
    let next = sync::next_pull(config, checkpoint, empty, now);
    log::info!("check: the next run's matching query: {}", next.tql);
    let w = next.window;
    let since = match (w.after, w.horizon) {
        (Some(a), h) if h.is_none_or(|h| a >= h) => {
            format!("indicators modified after {}", tql::format_time(a))
        }
        (_, Some(h)) => format!("indicators modified since {}", tql::format_time(h)),
        _ => "indicators of any age (the job keeps no horizon)".to_string(),
    };
    let scope = match next.full {
        Some(why) => format!("full reconcile, {why}: {since}"),
        None => since,
    };
    match tc.try_query(&next.tql) {
        Ok(Some(n)) => Line::ok(format!(
            "ThreatConnect matching query, as the next run sends it ({scope}): accepted, TC counts {n} indicator{}",
            if n == 1 { "" } else { "s" }
        )),
        Ok(None) => Line::ok(format!(
            "ThreatConnect matching query, as the next run sends it ({scope}): accepted"
        )),
        Err(e) => Line::fail(format!("ThreatConnect matching query: {e}")),
    }
}

/// The permissions the Tanium checks proved by reading, and those a read failed for (its own
/// line says why).
#[derive(Default)]
struct Account {
    proven: BTreeSet<Permission>,
    refused: BTreeSet<Permission>,
    not_needed: Vec<(Permission, &'static str)>,
    not_checked: Vec<(Permission, String)>,
}

impl Account {
    fn read(&mut self, p: Permission, ok: bool) {
        if ok {
            self.proven.insert(p);
        } else {
            self.refused.insert(p);
        }
    }
}

/// The server, the source, the labels and the permissions; what was found of the source.
fn tanium(t: &TaniumClient, config: &JobConfig, lines: &mut Vec<Line>) -> SourceState {
    let mut account = Account::default();
    let server = t.check();
    account.read(Permission::UseApi, server.is_ok());
    account.read(Permission::SourcesRead, server.is_ok());
    let status = t.check_intel_status();
    match &status {
        Ok(Some(_)) => account.read(Permission::IntelsRead, true),
        Ok(None) => {}
        Err(_) => account.read(Permission::IntelsRead, false),
    }
    match (server, &status) {
        (Ok(s), Ok(Some(status))) => {
            lines.push(Line::ok(format!("Tanium: {s}; intel status {status}")))
        }
        (Ok(s), Ok(None)) => lines.push(Line::ok(format!(
            "Tanium: {s}; intel status not offered (3.x deploys intel on its own)"
        ))),
        (Ok(s), Err(_)) => lines.push(Line::ok(format!("Tanium: {s}"))),
        (Err(e), _) => lines.push(Line::failed("Tanium", &e)),
    }
    if let Err(e) = status {
        lines.push(Line::fail(format!("Tanium intel status: {e}")));
    }
    let source = source(t, &config.tanium.source_name, &mut account, lines);
    labels(t, &config.labels, &mut account, lines);
    if config.report_detections {
        let alerts = t.check_alerts();
        account.read(Permission::AlertsRead, alerts.is_ok());
        match alerts {
            Ok(n) => lines.push(Line::ok(format!(
                "Threat Response alerts (Report Tanium Detections): readable{}",
                n.map(|n| format!(", {n} stored")).unwrap_or_default()
            ))),
            Err(e) => lines.push(Line::fail(format!(
                "Threat Response alerts (Report Tanium Detections): {e}"
            ))),
        }
    }
    writes(t, config, source, &mut account);
    if !account.proven.contains(&Permission::IntelsRead)
        && !account.refused.contains(&Permission::IntelsRead)
    {
        let why = if source == SourceState::Missing {
            "3.x offers no intel status and the source has no documents to list yet"
        } else {
            "neither the intel status nor the source's documents could be read"
        };
        account
            .not_checked
            .push((Permission::IntelsRead, why.into()));
    }
    permissions(&account, lines);
    source
}

/// The app's source: there (and listable) or not yet.
fn source(
    t: &TaniumClient,
    name: &str,
    account: &mut Account,
    lines: &mut Vec<Line>,
) -> SourceState {
    match t.find_source(name) {
        Ok(Some(s)) => {
            let mut n = 0u64;
            let listed = t.list_docs(s.id, &mut |_| n += 1);
            account.read(Permission::IntelsRead, listed.is_ok());
            match listed {
                Ok(_) => {
                    lines.push(Line::ok(format!(
                        "Tanium source \"{}\": id {}, {n} documents",
                        s.name, s.id
                    )));
                    SourceState::Exists(Some(n))
                }
                Err(e) => {
                    lines.push(Line::fail(format!("Tanium source \"{}\": {e}", s.name)));
                    SourceState::Exists(None)
                }
            }
        }
        Ok(None) => {
            lines.push(Line::ok(format!(
                "Tanium source \"{name}\": not there yet; the first run creates it"
            )));
            SourceState::Missing
        }
        Err(e) => {
            account.read(Permission::SourcesRead, false);
            lines.push(Line::fail(format!("Tanium source lookup: {e}")));
            SourceState::Unknown
        }
    }
}

/// The labels the job puts on documents whatever their indicator: which exist already. Making
/// the missing ones is left to the run: no label is made to find out whether one could be.
fn labels(t: &TaniumClient, rules: &LabelRules, account: &mut Account, lines: &mut Vec<Line>) {
    if rules.is_empty() {
        const WHY: &str = "Tanium Labels is empty and the other label params are off";
        account.not_needed.push((Permission::LabelsRead, WHY));
        account.not_needed.push((Permission::LabelsWrite, WHY));
        lines.push(Line::ok("Tanium labels: none (Tanium Labels is empty)"));
        return;
    }
    let listed = t.list_labels();
    account.read(Permission::LabelsRead, listed.is_ok());
    let existing = match listed {
        Ok(l) => l,
        Err(e) => {
            lines.push(Line::fail(format!("Tanium labels: {e}")));
            account.not_checked.push((
                Permission::LabelsWrite,
                "the labels could not be read, so which are missing is unknown".into(),
            ));
            return;
        }
    };
    let mut parts = vec![format!("readable ({} listed)", existing.len())];
    let mut missing = Vec::new();
    for n in rules.known_names() {
        match find(&existing, &n) {
            Some(l) => parts.push(format!("{} exists (id {})", l.name, l.id)),
            None => missing.push(n),
        }
    }
    if !missing.is_empty() {
        parts.push(format!(
            "{} missing, made by the first run that needs {}",
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        ));
    }
    let by_prefix = rules.tags.iter().any(|r| matches!(r, TagRule::Prefix(_)));
    if by_prefix {
        parts.push("labels of tags are made as the tags appear".into());
    }
    lines.push(Line::ok(format!("Tanium labels: {}", parts.join("; "))));
    if missing.is_empty() && !by_prefix {
        account.not_needed.push((
            Permission::LabelsWrite,
            "every label the job puts on exists",
        ));
    } else {
        account.not_checked.push((
            Permission::LabelsWrite,
            "making a label cannot be tried without leaving one behind".into(),
        ));
    }
}

/// The write permissions: none can be tried without leaving something behind.
fn writes(t: &TaniumClient, config: &JobConfig, source: SourceState, account: &mut Account) {
    match source {
        SourceState::Exists(_) => account
            .not_needed
            .push((Permission::SourcesWrite, "the source exists")),
        SourceState::Missing => account.not_checked.push((
            Permission::SourcesWrite,
            "the first run creates the source; making one cannot be tried without leaving it behind"
                .into(),
        )),
        SourceState::Unknown => account.not_checked.push((
            Permission::SourcesWrite,
            "whether the first run must create the source is unknown: it could not be looked up"
                .into(),
        )),
    }
    account.not_checked.push((
        Permission::IntelsWrite,
        "writing an intel document cannot be tried without leaving one behind".into(),
    ));
    if !config.rails.deploy_intel {
        account
            .not_needed
            .push((Permission::IntelDeploy, "Deploy Intel is off"));
    } else if t.generation() == ApiGeneration::V3 {
        account
            .not_needed
            .push((Permission::IntelDeploy, "3.x deploys intel on its own"));
    } else {
        account.not_checked.push((
            Permission::IntelDeploy,
            "a deploy cannot be tried without deploying intel to the endpoints".into(),
        ));
    }
}

/// One line for what was proven and is not needed, one for each permission not checked.
fn permissions(account: &Account, lines: &mut Vec<Line>) {
    let quoted = |p: &Permission| format!("'{}'", p.name());
    let mut parts = Vec::new();
    // Two reads map to one permission name (which call needs which is UNCONFIRMED): one refused
    // means it is not proven.
    let proven: Vec<String> = account
        .proven
        .difference(&account.refused)
        .map(quoted)
        .collect();
    if !proven.is_empty() {
        parts.push(format!("proven by reading: {}", proven.join(", ")));
    }
    if !account.not_needed.is_empty() {
        let mut not_needed = account.not_needed.clone();
        not_needed.sort_by_key(|(p, _)| *p);
        let unneeded: Vec<String> = not_needed
            .iter()
            .map(|(p, why)| format!("{} ({why})", quoted(p)))
            .collect();
        parts.push(format!("not needed: {}", unneeded.join(", ")));
    }
    if !parts.is_empty() {
        lines.push(Line::ok(format!(
            "Tanium permissions: {}",
            parts.join("; ")
        )));
    }
    let mut not_checked = account.not_checked.clone();
    not_checked.sort_by_key(|(p, _)| *p);
    for (p, why) in not_checked {
        lines.push(Line {
            verdict: Verdict::NotChecked(p),
            text: format!("Tanium permission '{}': not checked: {why}", p.name()),
        });
    }
}
