//! Property tests ("fuzzing" that CI can run on stable): param decoding, Last Modified parsing,
//! the TQL builder against the simulator's own TQL evaluator, and intel rendering.
//!
//! Cases per property: `FUZZ_CASES` (default 256). A long local run:
//!   FUZZ_CASES=20000 cargo test --test integration fuzz::
//! A failure prints the minimal input proptest found (nothing is written to disk: add it as a
//! unit test next to the fix, as src/config/timestamp.rs does for the Last Modified panic found
//! here).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use serde_json::{json, Value};
use tanium_tr_indicators::cli;
use tanium_tr_indicators::config::timestamp::parse_last_modified;
use tanium_tr_indicators::config::JobConfig;
use tanium_tr_indicators::intel::{self, identity_from_doc, rev_from_doc};
use tanium_tr_indicators::params::{
    decrypt_param_file, encrypt_param_file, parse_legacy_args, parse_params_json, RawParams,
};
use tanium_tr_indicators::secret::Secret;
use tanium_tr_indicators::sim::tql_eval::{self, Field, Record};
use tanium_tr_indicators::tc::model::{Indicator, IndicatorType};
use tanium_tr_indicators::tc::tql::{build, check_shape, format_time, Window};
use tanium_tr_indicators::tc::Filters;
use time::OffsetDateTime;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text that breaks naive quoting, encoding or XML: quotes, escapes, TQL keywords, controls,
/// non-BMP and right-to-left characters, delimiters the params use.
fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("'".to_string()),
        Just("`".to_string()),
        Just(") OR (1=1".to_string()),
        Just(" AND ".to_string()),
        Just("|".to_string()),
        Just(",".to_string()),
        Just("<&>]]>".to_string()),
        Just("\u{1}\u{1b}\u{7f}\u{FFFE}".to_string()),
        Just("\r\n\t".to_string()),
        Just("Ünïcödé 日本 🦀 \u{202e}".to_string()),
        "[a-zA-Z0-9 ]{1,6}",
        "\\PC{1,4}",
    ];
    prop::collection::vec(piece, 1..5).prop_map(|v| v.concat())
}

// ---------------------------------------------------------------------------------------------
// Param decoding
// ---------------------------------------------------------------------------------------------

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{16}".boxed(),
        "[ -~]{24}".boxed(),
        "[ -~]{32}".boxed()
    ]
}

fn params_strategy() -> impl Strategy<Value = BTreeMap<String, Value>> {
    let value = prop_oneof![
        hostile_text().prop_map(Value::String),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop::collection::vec(hostile_text(), 0..4).prop_map(|v| json!(v)),
        Just(Value::Null),
    ];
    prop::collection::btree_map("[a-z_]{1,20}|\\PC{1,8}", value, 0..12)
}

proptest! {
    #![proptest_config(config())]

    /// The platform's param file: whatever the params and key, encrypt -> decrypt -> parse
    /// gives the same params back.
    #[test]
    fn param_file_round_trips(key in key_strategy(), params in params_strategy()) {
        let plain = serde_json::to_vec(&params).unwrap();
        let cipher = encrypt_param_file(&key, &plain).unwrap();
        let back = decrypt_param_file(&Secret::new(key), &cipher).unwrap();
        prop_assert_eq!(&back, &plain);
        let raw = parse_params_json(&back, "the decrypted param file").unwrap();
        let want: RawParams = params.into_iter().collect();
        prop_assert_eq!(raw, want);
    }

    /// Damaged files, wrong keys, random bytes: an error, never a panic; the error never
    /// carries the key.
    #[test]
    fn param_file_garbage_never_panics(
        key in prop_oneof!["[ -~]{0,40}".boxed(), key_strategy().boxed()],
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        match decrypt_param_file(&Secret::new(key.clone()), &bytes) {
            Ok(plain) => {
                if let Err(e) = parse_params_json(&plain, "the decrypted param file") {
                    prop_assert!(key.len() < 3 || !e.to_string().contains(&key));
                }
            }
            Err(e) => prop_assert!(key.len() < 3 || !e.to_string().contains(&key)),
        }
    }

    /// Any bytes as a JSON params file: a map or an error naming the file, never a panic.
    #[test]
    fn params_json_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), text in "\\PC{0,80}") {
        let _ = parse_params_json(&bytes, "f.json");
        match parse_params_json(text.as_bytes(), "f.json") {
            Ok(_) => {
                let object = text.trim_start().starts_with('{');
                prop_assert!(object, "only an object is params: {:?}", text);
            }
            Err(e) => prop_assert!(e.to_string().contains("f.json"), "{}", e),
        }
    }

    /// Legacy argv: `--name value` pairs come back as given, a repeated name as a list in
    /// order; random argv never panics.
    #[test]
    fn legacy_argv_round_trips(
        pairs in prop::collection::vec(("[a-z][a-z_]{0,12}", hostile_text()), 0..8),
        junk in prop::collection::vec("\\PC{0,12}", 0..8),
    ) {
        let _ = parse_legacy_args(&junk);
        let _ = cli::parse(&junk);
        let mut argv = Vec::new();
        let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in &pairs {
            if value.starts_with("--") {
                continue;
            }
            argv.push(format!("--{name}"));
            argv.push(value.clone());
            want.entry(name.clone()).or_default().push(value.clone());
        }
        let got = parse_legacy_args(&argv).unwrap();
        prop_assert_eq!(got.len(), want.len());
        for (name, values) in want {
            let v = &got[&name];
            if values.len() == 1 {
                prop_assert_eq!(v, &json!(values[0]));
            } else {
                prop_assert_eq!(v, &json!(values));
            }
        }
    }

    /// The whole validation on random raw params (every known name, hostile values of every
    /// JSON type): a config or an error, never a panic, and errors never echo a secret.
    #[test]
    fn validation_never_panics(values in prop::collection::vec(
        prop_oneof![
            hostile_text().prop_map(Value::String),
            "[0-9]{1,6}|-[0-9]{1,3}|[0-9]{25}".prop_map(Value::String),
            any::<i64>().prop_map(|n| json!(n)),
            any::<bool>().prop_map(Value::Bool),
            prop::collection::vec(hostile_text(), 0..3).prop_map(|v| json!(v)),
            Just(json!({"a": 1})),
            Just(Value::Null),
        ],
        tanium_tr_indicators::param_names::JOB_PARAMS.len(),
    )) {
        let mut raw: RawParams = json!({
            "tc_api_path": "https://tc.example/api",
            "tc_api_access_id": "id",
            "tc_api_secret_key": "SECRET-tc-key",
            "tanium_address": "t.example",
            "tanium_username": "u",
            "tanium_password": "SECRET-tanium-pw",
        })
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .collect();
        for (spec, v) in tanium_tr_indicators::param_names::JOB_PARAMS.iter().zip(values) {
            if spec.name != "tanium_password" {
                raw.insert(spec.name.to_string(), v);
            }
        }
        if let Err(e) = JobConfig::from_params(&raw) {
            let e = e.to_string();
            prop_assert!(!e.contains("SECRET-"), "{}", e);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Last Modified
// ---------------------------------------------------------------------------------------------

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

proptest! {
    #![proptest_config(config())]

    /// Anything a user may type: a time or an error, never a panic.
    #[test]
    fn last_modified_never_panics(s in "\\PC{0,40}", t in "[0-9]{4}-[0-9]{2}-[0-9]{2}[ tT]?\\PC{0,12}") {
        let _ = parse_last_modified(&s, now());
        let _ = parse_last_modified(&t, now());
    }

    /// What the app prints (TQL format, the RFC 3339 it writes to results.tc, epoch seconds)
    /// parses back to the same second.
    #[test]
    fn last_modified_round_trips(secs in 0i64..=4_102_444_800, offset_min in -18i32 * 60..=18 * 60) {
        let n = now();
        let t = OffsetDateTime::from_unix_timestamp(secs.min(n.unix_timestamp())).unwrap();
        prop_assert_eq!(parse_last_modified(&format_time(t), n), Ok(t));
        let rfc = t.format(&time::format_description::well_known::Rfc3339).unwrap();
        prop_assert_eq!(parse_last_modified(&rfc, n), Ok(t));
        let off = time::UtcOffset::from_whole_seconds(offset_min * 60).unwrap();
        let shifted = t.to_offset(off).format(&time::format_description::well_known::Rfc3339).unwrap();
        prop_assert_eq!(parse_last_modified(&shifted, n), Ok(t));
        if t.unix_timestamp() > 0 {
            prop_assert_eq!(parse_last_modified(&t.unix_timestamp().to_string(), n), Ok(t));
        }
    }

    /// `N units ago` is exactly that long before now.
    #[test]
    fn relative_times(n in 0i64..=100_000, unit in 0usize..5) {
        let (word, secs) = [("minutes", 60), ("hours", 3600), ("days", 86_400), ("weeks", 604_800), ("seconds", 1)][unit];
        let now = now();
        let got = parse_last_modified(&format!("{n} {word} ago"), now).unwrap();
        prop_assert_eq!(got, now - time::Duration::seconds(n * secs));
    }
}

// ---------------------------------------------------------------------------------------------
// TQL: every query the builder makes parses in the simulator and selects what the filters mean
// ---------------------------------------------------------------------------------------------

struct Rec<'a>(&'a Indicator);

fn epoch(s: &str) -> Option<f64> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp() as f64)
}

impl Record for Rec<'_> {
    fn text(&self, f: Field) -> Option<Cow<'_, str>> {
        let i = self.0;
        match f {
            Field::TypeName => Some(Cow::Borrowed(&i.type_name)),
            Field::OwnerName => Some(Cow::Borrowed(&i.owner_name)),
            Field::Summary => Some(Cow::Borrowed(&i.summary)),
            Field::Description => i.description.as_deref().map(Cow::Borrowed),
            _ => None,
        }
    }

    fn number(&self, f: Field) -> Option<f64> {
        let i = self.0;
        match f {
            Field::Id => Some(i.id as f64),
            Field::Owner => i.owner_id.map(|v| v as f64),
            Field::ThreatAssessScore => Some(i.threat_assess_score.unwrap_or(0) as f64),
            Field::FalsePositiveCount => Some(i.false_positives.unwrap_or(0) as f64),
            Field::Confidence => i.confidence.map(|v| v as f64),
            Field::Rating => i.rating,
            Field::LastModified => epoch(&i.last_modified),
            Field::DateAdded => i.date_added.as_deref().and_then(epoch),
            _ => None,
        }
    }

    fn active(&self) -> bool {
        self.0.active
    }

    fn any_tag(&self, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.0.tags.iter().any(|t| pred(t))
    }
}

/// A small pool of hostile names, so generated indicators actually hit the filters.
fn pool() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(hostile_text(), 3..6)
}

fn case_variant(s: &str, upper: bool) -> String {
    if upper {
        s.to_uppercase()
    } else {
        s.to_string()
    }
}

fn filters_and_indicators() -> impl Strategy<Value = (Filters, Vec<Indicator>, Option<i64>)> {
    (pool(), pool()).prop_flat_map(|(owners, tags)| {
        let pick_owners = prop::sample::subsequence(owners.clone(), 0..=owners.len());
        let pick_inc = prop::sample::subsequence(tags.clone(), 0..=2);
        let pick_exc = prop::sample::subsequence(tags.clone(), 0..=2);
        let types = prop::sample::subsequence(IndicatorType::ALL.to_vec(), 0..=3);
        let mins = (
            prop::option::of(0u32..=1000),
            prop::option::of(0u32..=100),
            prop::option::of(0u32..=5),
            prop::option::of(prop_oneof![0u32..4, Just(u32::MAX)]),
        );
        let filters = (pick_owners, pick_inc, pick_exc, types, mins).prop_map(
            |(owners, include_tags, exclude_tags, types, (s, c, r, fp))| Filters {
                owners,
                types,
                include_tags,
                exclude_tags,
                min_threatassess_score: s,
                min_confidence: c,
                min_rating: r,
                max_false_positives: fp,
                tql: None,
            },
        );
        let ind = (
            prop::sample::select(owners),
            prop::collection::vec((prop::sample::select(tags), any::<bool>()), 0..3),
            prop::sample::select(vec!["Address", "File", "Host", "URL", "host"]),
            (
                prop::option::of(prop_oneof![Just(0.0), Just(2.5), 0.0f64..=5.0]),
                prop::option::of(-5i64..=110),
                prop::option::of(-10i64..=1100),
                prop::option::of(-3i64..=10),
            ),
            any::<bool>(),
            0i64..2_000_000_000,
        )
            .prop_map(|(owner, tags, ty, (rating, conf, score, fp), active, lm)| {
                Indicator {
                    id: lm,
                    owner_name: owner,
                    type_name: ty.to_string(),
                    summary: "x".into(),
                    tags: tags.iter().map(|(t, up)| case_variant(t, *up)).collect(),
                    rating,
                    confidence: conf,
                    threat_assess_score: score,
                    false_positives: fp,
                    active,
                    last_modified: format_time(OffsetDateTime::from_unix_timestamp(lm).unwrap()),
                    ..Indicator::default()
                }
            });
        (
            filters,
            prop::collection::vec(ind, 1..30),
            prop::option::of(0i64..2_000_000_000),
        )
    })
}

fn excluded(f: &Filters, i: &Indicator) -> bool {
    i.tags.iter().any(|t| {
        f.exclude_tags
            .iter()
            .any(|x| x.to_lowercase() == t.to_lowercase())
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tql_parses_and_selects_what_the_filters_mean((f, inds, since) in filters_and_indicators()) {
        let since_t = since.map(|s| OffsetDateTime::from_unix_timestamp(s).unwrap());
        let tql = build(&f, &Window { after: since_t, ..Window::default() });
        let q = tql_eval::parse(&tql, 0)
            .map_err(|e| TestCaseError::fail(format!("{tql}: {e}")))?;
        for i in &inds {
            let by_tc = q.matches(&Rec(i)) && !excluded(&f, i);
            let newer = since.is_none_or(|s| i.id > s);
            prop_assert_eq!(
                by_tc,
                f.matches(i) && newer,
                "TQL {} vs Filters::matches on {:?}", tql, i
            );
        }
    }

    /// User TQL is wrapped, so `a OR b` cannot widen the restriction to the three types that can
    /// become intel (and it replaces Indicator Types).
    #[test]
    fn user_tql_cannot_escape_the_type_restriction(owner in hostile_text(), ty in prop::sample::select(vec!["URL", "EmailAddress", "CIDR"])) {
        let f = Filters {
            types: vec![IndicatorType::Host],
            tql: Some(format!("ownerName = {} OR typeName = \"URL\"", tanium_tr_indicators::tc::tql::quote(&owner))),
            ..Filters::default()
        };
        let q = tql_eval::parse(&build(&f, &Window::default()), 0).unwrap();
        let i = Indicator { owner_name: owner, type_name: ty.into(), ..Indicator::default() };
        prop_assert!(!q.matches(&Rec(&i)));
    }
}

/// A comparison user TQL might hold, several of them trying to reach past the job's bounds:
/// other types, old or future dates, inactive indicators, parentheses inside strings.
fn tql_leaf() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "rating >= 5",
        "rating >= 99",
        "confidence < 50",
        "typeName = \"URL\"",
        "typeName IN (\"URL\", \"CIDR\", \"Host\")",
        "lastModified < \"1990-01-01T00:00:00Z\"",
        "lastModified > \"1970-01-01T00:00:00Z\"",
        "lastModified >= \"2040-01-01T00:00:00Z\"",
        "indicatorActive = false",
        "indicatorActive = true",
        "id > 0",
        "summary = \"a) OR (b\"",
        "summary = 'x\\') OR (lastModified > \"1970-01-01\"'",
        "summary CONTAINS \"(\"",
        "hasTag(summary IN (\"x\", 'y'))",
    ])
    .prop_map(str::to_string)
}

/// User TQL: expressions of [`tql_leaf`]s, some closing a parenthesis they never opened (the
/// issue's `rating >= 5) OR (rating >= 99`) or opening one they never close, some then broken
/// by one fragment (a parenthesis, a quote, an escape, an OR) inserted anywhere.
fn user_tql_strategy() -> impl Strategy<Value = String> {
    let expr = tql_leaf().prop_recursive(4, 16, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| format!("({e})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} OR {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} AND {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}) OR ({b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}) AND ({b}")),
            inner
                .clone()
                .prop_map(|e| format!("{e}) OR typeName = \"URL\" OR (id > 0")),
            inner.clone().prop_map(|e| format!("{e} OR ({e}")),
            inner.prop_map(|e| format!("{e}) OR ((id > 0)")),
        ]
    });
    let fragment = prop::sample::select(vec![
        "(",
        ")",
        "\"",
        "'",
        "\\",
        "`",
        ") OR (",
        " OR ",
        ") OR lastModified > \"1970-01-01\" OR (",
    ]);
    (
        expr,
        prop::option::of((fragment, any::<prop::sample::Index>())),
    )
        .prop_map(|(e, cut)| {
            let Some((frag, at)) = cut else { return e };
            let chars: Vec<char> = e.chars().collect();
            let at = at.index(chars.len() + 1);
            let mut out: String = chars[..at].iter().collect();
            out.push_str(frag);
            out.extend(&chars[at..]);
            out
        })
}

fn window_strategy() -> impl Strategy<Value = (Option<i64>, Option<i64>, Option<i64>)> {
    let t = || prop::option::of(100_000_000i64..1_900_000_000);
    (t(), t(), t()).prop_filter("a bound", |(a, h, u)| {
        a.is_some() || h.is_some() || u.is_some()
    })
}

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap()
}

proptest! {
    #![proptest_config(config())]

    /// Issue 20: `rating >= 5) OR (rating >= 99` closed the job's parenthesis early and sent
    /// indicators of every age. Whatever user TQL passes validation, the query the job builds
    /// selects nothing outside Last Modified, the horizon, the run's start and the three types.
    #[test]
    fn no_user_tql_widens_the_time_bound_or_the_types(
        user in user_tql_strategy(),
        (after, horizon, until) in window_strategy(),
        inds in prop::collection::vec(
            (
                prop::sample::select(vec!["Address", "File", "Host", "URL", "CIDR"]),
                0i64..2_000_000_000,
                any::<bool>(),
                prop::option::of(0.0f64..=5.0),
            ),
            1..40,
        ),
    ) {
        if check_shape(&user).is_err() {
            return Ok(());
        }
        let f = Filters { tql: Some(user.clone()), ..Filters::default() };
        let window = Window { after: after.map(at), horizon: horizon.map(at), until: until.map(at) };
        let tql = build(&f, &window);
        let q = match tql_eval::parse(&tql, 0) {
            Ok(q) => q,
            // TC refuses it with 0x2001: nothing is selected at all.
            Err(_) => return Ok(()),
        };
        for (n, (ty, lm, active, rating)) in inds.into_iter().enumerate() {
            let i = Indicator {
                id: n as i64 + 1,
                type_name: ty.into(),
                summary: "a) OR (b".into(),
                last_modified: format_time(at(lm)),
                active,
                rating,
                ..Indicator::default()
            };
            if !q.matches(&Rec(&i)) {
                continue;
            }
            let inside = after.is_none_or(|a| lm > a)
                && horizon.is_none_or(|h| lm >= h)
                && until.is_none_or(|u| lm <= u);
            prop_assert!(inside, "{} selected {:?} outside the window", tql, i);
            prop_assert!(IndicatorType::parse(ty).is_some(), "{} selected a {}", tql, ty);
        }
    }
}

#[test]
fn the_issues_tql_is_refused_and_its_balanced_form_stays_inside_the_bounds() {
    assert!(check_shape("rating >= 5) OR (rating >= 99").is_err());
    let f = Filters {
        tql: Some("(rating >= 5) OR (rating >= 99)".into()),
        ..Filters::default()
    };
    let window = Window {
        after: Some(at(1_700_000_000)),
        ..Window::default()
    };
    let q = tql_eval::parse(&build(&f, &window), 0).unwrap();
    let old = Indicator {
        type_name: "Host".into(),
        rating: Some(5.0),
        active: true,
        last_modified: format_time(at(1_600_000_000)),
        ..Indicator::default()
    };
    let new = Indicator {
        last_modified: format_time(at(1_800_000_000)),
        ..old.clone()
    };
    assert!(!q.matches(&Rec(&old)));
    assert!(q.matches(&Rec(&new)));
}

// ---------------------------------------------------------------------------------------------
// Intel rendering
// ---------------------------------------------------------------------------------------------

fn value_strategy() -> impl Strategy<Value = (String, Indicator)> {
    prop_oneof![
        any::<u32>().prop_map(|n| {
            let ip = Ipv4Addr::from(n).to_string();
            (
                "Address".to_string(),
                Indicator {
                    ip: Some(ip.clone()),
                    summary: ip,
                    ..Indicator::default()
                },
            )
        }),
        any::<u128>().prop_map(|n| {
            let canonical = Ipv6Addr::from(n).to_string();
            // TC may send upper case or bracketed forms; identity must not care.
            let sent = format!("[{}]", canonical.to_uppercase());
            (
                "Address".to_string(),
                Indicator {
                    ip: Some(sent.clone()),
                    summary: sent,
                    ..Indicator::default()
                },
            )
        }),
        (
            "[a-z0-9]{1,20}(\\.[a-z0-9-]{1,10}){0,3}\\.(com|example|jp)",
            any::<bool>()
        )
            .prop_map(|(h, upper)| {
                let sent = if upper { h.to_uppercase() + "." } else { h };
                (
                    "Host".to_string(),
                    Indicator {
                        host_name: Some(sent.clone()),
                        summary: sent,
                        ..Indicator::default()
                    },
                )
            }),
        (
            "[0-9a-fA-F]{32}",
            prop::option::of("[0-9a-f]{40}"),
            prop::option::of("[0-9A-F]{64}")
        )
            .prop_map(|(m, s1, s2)| {
                let summary = [Some(m.clone()), s1.clone(), s2.clone()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" : ");
                (
                    "File".to_string(),
                    Indicator {
                        md5: Some(m),
                        sha1: s1,
                        sha256: s2,
                        summary,
                        ..Indicator::default()
                    },
                )
            }),
    ]
}

fn indicator_strategy() -> impl Strategy<Value = Indicator> {
    (
        value_strategy(),
        hostile_text(),
        prop::collection::vec(hostile_text(), 0..70),
        prop::option::of(prop_oneof![hostile_text(), "\\PC{0,3000}"]),
        prop::option::of(hostile_text()),
        (
            prop::option::of(-1.0f64..=9.5),
            prop::option::of(any::<i64>()),
            prop::option::of(any::<i64>()),
        ),
        prop_oneof![
            (0i64..4_102_444_800)
                .prop_map(|s| format_time(OffsetDateTime::from_unix_timestamp(s).unwrap())),
            hostile_text(),
        ],
        any::<i64>(),
    )
        .prop_map(
            |((ty, mut i), owner, tags, description, link, (rating, conf, score), lm, id)| {
                i.type_name = ty;
                i.id = id;
                i.owner_name = owner;
                i.tags = tags;
                i.description = description;
                i.web_link = link;
                i.rating = rating;
                i.confidence = conf;
                i.threat_assess_score = score;
                i.last_modified = lm;
                i
            },
        )
}

/// `s` as the app must show it on one line: forbidden characters dropped, white space folded.
fn one_line(s: &str) -> String {
    intel::xml::clean(s)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn texts(doc: &roxmltree::Document, name: &str) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == name)
        .map(|n| n.text().unwrap_or_default().to_string())
        .collect()
}

proptest! {
    #![proptest_config(config())]

    /// Every document is well-formed XML that carries the identity, the name, the observable
    /// value and the TC context (values round-trip through escaping), and rendering is
    /// byte-stable (same input, same bytes; also after a JSON round trip of the indicator).
    #[test]
    fn rendering_is_well_formed_round_trips_and_is_stable(ind in indicator_strategy(), openioc in any::<bool>()) {
        let format = if openioc { intel::Format::OpenIoc } else { intel::Format::Stix };
        let p = intel::render(&ind, format).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again = intel::render(&ind, format).unwrap();
        prop_assert_eq!(&again, &p);
        let json = serde_json::to_value(json!({
            "id": ind.id, "ownerName": ind.owner_name, "type": ind.type_name,
            "summary": ind.summary, "ip": ind.ip, "hostName": ind.host_name, "md5": ind.md5,
            "sha1": ind.sha1, "sha256": ind.sha256, "rating": ind.rating,
            "confidence": ind.confidence, "threatAssessScore": ind.threat_assess_score,
            "tags": {"data": ind.tags.iter().map(|t| json!({"name": t})).collect::<Vec<_>>()},
            "description": ind.description, "webLink": ind.web_link,
            "lastModified": ind.last_modified,
        })).unwrap();
        let via_json: Indicator = serde_json::from_value(json).unwrap();
        prop_assert_eq!(&intel::render(&via_json, format).unwrap(), &p);

        let doc = roxmltree::Document::parse(&p.body)
            .map_err(|e| TestCaseError::fail(format!("not well-formed: {e}")))?;
        let root = doc.root_element();
        prop_assert_eq!(
            identity_from_doc(root.attribute("id"), "", None),
            Some(p.identity)
        );
        let kind = ind.kind().unwrap();
        prop_assert_eq!(
            Ok(p.identity),
            intel::identity_of(&ind.owner_name, kind, &ind.summary)
        );
        let (title, description) = if openioc {
            (texts(&doc, "short_description"), texts(&doc, "description"))
        } else {
            (texts(&doc, "Title"), texts(&doc, "Description"))
        };
        prop_assert!(title.iter().all(|t| *t == p.name), "{:?} vs {}", title, p.name);
        let d = description.first().cloned().unwrap_or_default();
        prop_assert_eq!(identity_from_doc(None, "", Some(&d)), Some(p.identity));
        prop_assert_eq!(rev_from_doc(Some(&d)), Some(p.rev));
        let owner = one_line(&ind.owner_name);
        prop_assert!(d.contains(&format!("Owner: {owner}")), "owner {:?} not in {:?}", owner, d);
        // The observable value itself, normalised, is in the document.
        let value = match kind {
            IndicatorType::Address => ind.summary.trim_matches(['[', ']']).parse::<IpAddr>().unwrap().to_string(),
            IndicatorType::Host => ind.summary.trim_end_matches('.').to_lowercase(),
            IndicatorType::File => ind.md5.clone().unwrap().to_lowercase(),
        };
        prop_assert!(p.name.ends_with(&value), "{} / {}", p.name, value);
        let all_text: String = doc.descendants().filter_map(|n| n.text()).collect();
        prop_assert!(all_text.contains(&value));
        // Shown tags survive escaping (the first few, sorted, one line each).
        let mut shown: Vec<String> = ind.tags.iter().map(|t| one_line(t)).filter(|t| !t.is_empty() && t.chars().count() < 100).collect();
        shown.sort();
        if let Some(first) = shown.first() {
            if ind.tags.len() <= intel::MAX_TAGS {
                prop_assert!(d.contains(first.as_str()), "tag {:?} not in {:?}", first, d);
            }
        }
    }
}
