//! Pure TQL building: the job's filters become one ThreatConnect query with every value quoted.
//!
//! Exclude tags are deliberately NOT pushed into TQL: TQL has no documented "has none of these
//! tags" form (`tag NOT IN (...)` on a multi-valued field is ambiguous), and an indicator that
//! gains an excluded tag must still come back so the sync can remove it. The sync applies
//! [`Filters::matches`] to every indicator it receives instead.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::tc::model::IndicatorType;
use crate::tc::Filters;

/// Quotes a TQL string value: double quotes, with `\`, `"`, `'` and backtick escaped by `\`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '\'' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Formats an instant the way TQL date comparisons and `deletedSince` expect: `YYYY-MM-DDTHH:MM:SSZ` in UTC.
pub fn format_time(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.to_offset(UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// Whether user TQL replaces the job's filters (blank TQL counts as none).
pub fn user_tql(filters: &Filters) -> Option<&str> {
    filters
        .tql
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Why user TQL cannot be put inside the job's bounds. The query is
/// `(<user TQL>) AND typeName IN (...) AND lastModified ...`: a `)` the TQL does not open itself
/// would close that group early and leave Last Modified, the horizon and the type restriction
/// to one side of the user's `OR`. Positions count characters from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A `)` with no `(` of the TQL's own before it.
    Unopened { at: usize },
    /// A `(` that is never closed.
    Unclosed { at: usize },
    /// A quoted string that is never closed (it would swallow the job's own clauses).
    Unterminated { at: usize, quote: char },
    /// A backslash or backtick outside quotes: TQL gives them no meaning there, and a server
    /// that read one as an escape or a quote would see other strings than these rules do.
    Stray { at: usize, c: char },
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const WHY: &str = "parentheses outside quoted strings must balance, or the TQL would \
                           escape Last Modified and the type restriction the job adds";
        match self {
            Shape::Unopened { at } => {
                write!(f, "has a ')' at position {at} with no '(' before it: {WHY}")
            }
            Shape::Unclosed { at } => {
                write!(f, "has a '(' at position {at} that is never closed: {WHY}")
            }
            Shape::Unterminated { at, quote } => write!(
                f,
                "has a quote ({quote}) at position {at} that is never closed: a quoted string \
                 ends with the same quote (escape one inside it as \\{quote})"
            ),
            Shape::Stray { at, c } => write!(
                f,
                "has a {} at position {at} outside quotes: it escapes characters inside a \
                 quoted string only",
                if *c == '`' { "backtick" } else { "backslash" }
            ),
        }
    }
}

/// Whether user TQL can be wrapped in the job's bounds (see [`Shape`]). Strings are read as
/// [`quote`] writes them and TC documents them: in `"` or `'`, with `\` escaping the next
/// character.
pub fn check_shape(tql: &str) -> Result<(), Shape> {
    let mut open: Vec<usize> = Vec::new();
    let mut chars = tql.chars().enumerate().map(|(i, c)| (i + 1, c));
    while let Some((at, c)) = chars.next() {
        match c {
            '(' => open.push(at),
            ')' => {
                open.pop().ok_or(Shape::Unopened { at })?;
            }
            '\\' | '`' => return Err(Shape::Stray { at, c }),
            '"' | '\'' => loop {
                match chars.next() {
                    None => return Err(Shape::Unterminated { at, quote: c }),
                    Some((_, '\\')) => {
                        if chars.next().is_none() {
                            return Err(Shape::Unterminated { at, quote: c });
                        }
                    }
                    Some((_, q)) if q == c => break,
                    Some(_) => {}
                }
            },
            _ => {}
        }
    }
    match open.first() {
        Some(&at) => Err(Shape::Unclosed { at }),
        None => Ok(()),
    }
}

/// The types to query: the job's types in canonical order, all three when none are set. With
/// user TQL all three: the guide says TQL replaces every other filter, Indicator Types included,
/// and only these three types can become intel.
pub fn effective_types(filters: &Filters) -> Vec<IndicatorType> {
    let chosen = |t: &IndicatorType| user_tql(filters).is_some() || filters.types.contains(t);
    let types: Vec<IndicatorType> = IndicatorType::ALL.into_iter().filter(chosen).collect();
    if types.is_empty() {
        IndicatorType::ALL.to_vec()
    } else {
        types
    }
}

fn quoted_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items.into_iter().map(quote).collect::<Vec<_>>().join(", ")
}

fn types_clause(filters: &Filters) -> String {
    let types = effective_types(filters);
    format!(
        "typeName IN ({})",
        quoted_list(types.iter().map(|t| t.as_str()))
    )
}

/// The `lastModified` bounds of one pull.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Only indicators modified after this (exclusive): an incremental run's checkpoint.
    pub after: Option<OffsetDateTime>,
    /// Never indicators modified before this (inclusive): the job horizon, which bounds full
    /// reconciles too.
    pub horizon: Option<OffsetDateTime>,
    /// Only indicators modified up to this (inclusive): the run's query start, so an indicator
    /// changed while the run works is left to the next run.
    pub until: Option<OffsetDateTime>,
}

impl Window {
    fn clauses(&self) -> Vec<String> {
        let mut out = Vec::new();
        match (self.after, self.horizon) {
            // An incremental checkpoint at or past the horizon already implies it.
            (Some(a), h) if h.is_none_or(|h| a >= h) => {
                out.push(format!("lastModified > {}", quote(&format_time(a))))
            }
            (_, Some(h)) => out.push(format!("lastModified >= {}", quote(&format_time(h)))),
            _ => {}
        }
        if let Some(u) = self.until {
            out.push(format!("lastModified <= {}", quote(&format_time(u))));
        }
        out
    }
}

/// Builds the query for the job's filters within `window`.
///
/// With user TQL set, only the type restriction (all three types) and the window are added to
/// it: `(<user TQL>) AND typeName IN ("Address", "File", "Host") [AND lastModified ...]`. The
/// config refuses user TQL that fails [`check_shape`], so it stays one group the bounds apply to.
pub fn build(filters: &Filters, window: &Window) -> String {
    let mut clauses = Vec::new();
    match user_tql(filters) {
        Some(user) => {
            clauses.push(format!("({user})"));
            clauses.push(types_clause(filters));
        }
        None => {
            clauses.push(types_clause(filters));
            if !filters.owners.is_empty() {
                clauses.push(format!(
                    "ownerName IN ({})",
                    quoted_list(filters.owners.iter().map(String::as_str))
                ));
            }
            if !filters.include_tags.is_empty() {
                clauses.push(format!(
                    "hasTag(summary IN ({}))",
                    quoted_list(filters.include_tags.iter().map(String::as_str))
                ));
            }
            // A minimum of 0 restricts nothing; sending it would drop unrated indicators.
            let mins = [
                ("threatAssessScore", filters.min_threatassess_score),
                ("confidence", filters.min_confidence),
                ("rating", filters.min_rating),
            ];
            for (field, min) in mins {
                if let Some(n) = min.filter(|n| *n > 0) {
                    clauses.push(format!("{field} >= {n}"));
                }
            }
            if let Some(n) = filters.max_false_positives {
                clauses.push(format!("falsePositiveCount <= {n}"));
            }
        }
    }
    clauses.extend(window.clauses());
    clauses.join(" AND ")
}

/// The indicators user TQL selects within `window` that are of no type the job can send, to
/// count them (None without user TQL: then the job's own query never selects other types).
pub fn other_types(filters: &Filters, window: &Window) -> Option<String> {
    let user = user_tql(filters)?;
    let mut clauses = vec![
        format!("({user})"),
        format!(
            "typeName NOT IN ({})",
            quoted_list(IndicatorType::ALL.iter().map(|t| t.as_str()))
        ),
    ];
    clauses.extend(window.clauses());
    Some(clauses.join(" AND "))
}

/// Every indicator of the job's types (and owners, unless user TQL replaces them) modified
/// within `window`, active or not: the sync's evidence of indicators that stopped qualifying.
pub fn removal_check(filters: &Filters, window: &Window) -> String {
    let user = user_tql(filters).is_some();
    let broad = Filters {
        types: effective_types(filters),
        owners: if user {
            Vec::new()
        } else {
            filters.owners.clone()
        },
        ..Filters::default()
    };
    format!(
        "{} AND (indicatorActive = true OR indicatorActive = false)",
        build(&broad, window)
    )
}

/// Every indicator of the job's types (and owners, unless user TQL replaces them) whose
/// `externalDateExpires` fell after `after` and at or before `until`: the sync's evidence of
/// indicators that expired without being modified.
pub fn expired_between(filters: &Filters, after: OffsetDateTime, until: OffsetDateTime) -> String {
    let broad = Filters {
        types: effective_types(filters),
        owners: if user_tql(filters).is_some() {
            Vec::new()
        } else {
            filters.owners.clone()
        },
        ..Filters::default()
    };
    format!(
        "{} AND externalDateExpires > {} AND externalDateExpires <= {}",
        build(&broad, &Window::default()),
        quote(&format_time(after)),
        quote(&format_time(until))
    )
}

/// Everything but RFC 3986 unreserved characters gets percent-encoded (space is `%20`).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a query value so no HTTP layer finds anything left to re-encode.
pub fn encode_query_value(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn after(t: OffsetDateTime) -> Window {
        Window {
            after: Some(t),
            ..Window::default()
        }
    }

    fn f() -> Filters {
        Filters {
            types: IndicatorType::ALL.to_vec(),
            ..Filters::default()
        }
    }

    #[test]
    fn quote_escapes_every_special_character() {
        assert_eq!(quote("plain"), r#""plain""#);
        assert_eq!(quote(r#"a"b"#), r#""a\"b""#);
        assert_eq!(quote(r"a\b"), r#""a\\b""#);
        assert_eq!(quote("it's"), r#""it\'s""#);
        assert_eq!(quote("back`tick"), r#""back\`tick""#);
        assert_eq!(quote(r#"\""#), r#""\\\"""#);
        assert_eq!(quote("Ünïcödé 日本"), "\"Ünïcödé 日本\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn format_time_is_utc_iso() {
        assert_eq!(
            format_time(datetime!(2026-10-29 00:00:00 UTC)),
            "2026-10-29T00:00:00Z"
        );
        assert_eq!(
            format_time(datetime!(2026-10-29 02:30:05 +02:00)),
            "2026-10-29T00:30:05Z"
        );
    }

    #[test]
    fn default_filters_select_the_three_types_only() {
        assert_eq!(
            build(&f(), &Window::default()),
            r#"typeName IN ("Address", "File", "Host")"#
        );
        assert_eq!(
            build(&Filters::default(), &Window::default()),
            r#"typeName IN ("Address", "File", "Host")"#
        );
        assert_eq!(
            build(&f(), &after(datetime!(2026-10-29 00:00:00 UTC))),
            r#"typeName IN ("Address", "File", "Host") AND lastModified > "2026-10-29T00:00:00Z""#
        );
    }

    #[test]
    fn every_filter_in_order() {
        let filters = Filters {
            owners: vec!["Demo Org".into(), "Common Community".into()],
            types: vec![
                IndicatorType::Host,
                IndicatorType::Address,
                IndicatorType::Host,
            ],
            include_tags: vec!["APT".into(), "C2".into()],
            exclude_tags: vec!["Benign".into()],
            min_threatassess_score: Some(500),
            min_confidence: Some(50),
            min_rating: Some(3),
            max_false_positives: Some(0),
            tql: None,
        };
        assert_eq!(
            build(&filters, &after(datetime!(2024-01-02 03:04:05 UTC))),
            concat!(
                r#"typeName IN ("Address", "Host") AND ownerName IN ("Demo Org", "Common Community")"#,
                r#" AND hasTag(summary IN ("APT", "C2")) AND threatAssessScore >= 500"#,
                r#" AND confidence >= 50 AND rating >= 3 AND falsePositiveCount <= 0"#,
                r#" AND lastModified > "2024-01-02T03:04:05Z""#
            )
        );
    }

    #[test]
    fn removal_check_keeps_types_and_owners_only_and_includes_inactive() {
        let filters = Filters {
            owners: vec!["Demo Org".into()],
            types: vec![IndicatorType::Host],
            exclude_tags: vec!["Benign".into()],
            min_confidence: Some(50),
            ..Filters::default()
        };
        let window = Window {
            until: Some(datetime!(2024-01-03 00:00:00 UTC)),
            ..after(datetime!(2024-01-02 03:04:05 UTC))
        };
        assert_eq!(
            removal_check(&filters, &window),
            concat!(
                r#"typeName IN ("Host") AND ownerName IN ("Demo Org") AND lastModified > "2024-01-02T03:04:05Z""#,
                r#" AND lastModified <= "2024-01-03T00:00:00Z" AND (indicatorActive = true OR indicatorActive = false)"#
            )
        );
        let user = Filters {
            tql: Some("rating > 1".into()),
            ..filters
        };
        assert_eq!(
            removal_check(&user, &window),
            concat!(
                r#"typeName IN ("Address", "File", "Host") AND lastModified > "2024-01-02T03:04:05Z""#,
                r#" AND lastModified <= "2024-01-03T00:00:00Z" AND (indicatorActive = true OR indicatorActive = false)"#
            )
        );
    }

    #[test]
    fn the_expiry_check_asks_for_what_expired_since_the_last_run_of_the_jobs_types_and_owners() {
        let filters = Filters {
            owners: vec!["Demo Org".into()],
            types: vec![IndicatorType::Host, IndicatorType::Address],
            include_tags: vec!["APT".into()],
            ..Filters::default()
        };
        let (after, until) = (
            datetime!(2024-01-02 03:04:05 UTC),
            datetime!(2024-01-03 00:00:00 UTC),
        );
        assert_eq!(
            expired_between(&filters, after, until),
            concat!(
                r#"typeName IN ("Address", "Host") AND ownerName IN ("Demo Org")"#,
                r#" AND externalDateExpires > "2024-01-02T03:04:05Z" AND externalDateExpires <= "2024-01-03T00:00:00Z""#
            )
        );
        let user = Filters {
            tql: Some("rating > 1".into()),
            ..filters
        };
        assert!(expired_between(&user, after, until)
            .starts_with(r#"typeName IN ("Address", "File", "Host") AND externalDateExpires > "#));
    }

    #[test]
    fn zero_minimums_are_left_out() {
        let filters = Filters {
            min_threatassess_score: Some(0),
            min_confidence: Some(0),
            min_rating: Some(0),
            ..f()
        };
        assert_eq!(
            build(&filters, &Window::default()),
            r#"typeName IN ("Address", "File", "Host")"#
        );
    }

    #[test]
    fn hostile_owner_and_tag_names_are_escaped() {
        let filters = Filters {
            owners: vec![r#"Evil "Owner" \ Inc"#.into(), "Ünï 'cödé' `x`".into()],
            types: vec![IndicatorType::File],
            include_tags: vec![r#"tag") OR (1=1"#.into()],
            ..Filters::default()
        };
        assert_eq!(
            build(&filters, &Window::default()),
            concat!(
                r#"typeName IN ("File") AND ownerName IN ("Evil \"Owner\" \\ Inc", "Ünï \'cödé\' \`x\`")"#,
                r#" AND hasTag(summary IN ("tag\") OR (1=1"))"#
            )
        );
    }

    #[test]
    fn user_tql_replaces_every_filter_indicator_types_included() {
        let filters = Filters {
            owners: vec!["Ignored".into()],
            types: vec![IndicatorType::Address],
            min_rating: Some(4),
            tql: Some("  rating >= 4 OR tag = \"x\" ".into()),
            ..Filters::default()
        };
        assert_eq!(
            build(&filters, &after(datetime!(2024-01-02 03:04:05 UTC))),
            r#"(rating >= 4 OR tag = "x") AND typeName IN ("Address", "File", "Host") AND lastModified > "2024-01-02T03:04:05Z""#
        );
        assert_eq!(effective_types(&filters), IndicatorType::ALL.to_vec());
        let blank = Filters {
            tql: Some("   ".into()),
            types: vec![IndicatorType::Host],
            ..f()
        };
        assert_eq!(build(&blank, &Window::default()), r#"typeName IN ("Host")"#);
    }

    #[test]
    fn tql_that_would_close_the_jobs_group_is_refused_with_its_position() {
        let shape = |s: &str| check_shape(s);
        assert_eq!(
            shape("rating >= 5) OR (rating >= 99"),
            Err(Shape::Unopened { at: 12 })
        );
        assert_eq!(shape("(rating >= 5"), Err(Shape::Unclosed { at: 1 }));
        assert_eq!(
            shape("a = 1 AND (b IN (1, 2)"),
            Err(Shape::Unclosed { at: 11 })
        );
        assert_eq!(
            shape(r#"summary = "x) AND (y"#),
            Err(Shape::Unterminated { at: 11, quote: '"' })
        );
        assert_eq!(
            shape(r#"summary = 'x\'"#),
            Err(Shape::Unterminated {
                at: 11,
                quote: '\''
            })
        );
        assert_eq!(
            shape(r#"summary = "x\"#),
            Err(Shape::Unterminated { at: 11, quote: '"' })
        );
        assert_eq!(
            shape(r#"summary = \"a" ) OR ( "b\""#),
            Err(Shape::Stray { at: 11, c: '\\' })
        );
        assert_eq!(
            shape("summary = `a) OR (b`"),
            Err(Shape::Stray { at: 11, c: '`' })
        );
        assert_eq!(shape("ünï = 1) OR (x = 2"), Err(Shape::Unopened { at: 8 }));
        for ok in [
            "rating >= 4",
            "(rating >= 5) OR (rating >= 99)",
            r#"summary = "a) OR (b" OR tag = 'c) OR (d'"#,
            r#"summary = "say \"hi\" (\\)" AND hasTag(summary IN ("x", 'it\'s'))"#,
            r#"summary = "it's" OR summary = 'a "(" b'"#,
            "",
        ] {
            assert_eq!(shape(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            Shape::Unopened { at: 12 }.to_string(),
            "has a ')' at position 12 with no '(' before it: parentheses outside quoted strings \
             must balance, or the TQL would escape Last Modified and the type restriction the \
             job adds"
        );
    }

    #[test]
    fn other_types_are_counted_only_under_user_tql() {
        assert_eq!(other_types(&f(), &Window::default()), None);
        let user = Filters {
            tql: Some("rating > 1".into()),
            ..f()
        };
        assert_eq!(
            other_types(&user, &after(datetime!(2024-01-02 03:04:05 UTC))).as_deref(),
            Some(
                r#"(rating > 1) AND typeName NOT IN ("Address", "File", "Host") AND lastModified > "2024-01-02T03:04:05Z""#
            )
        );
    }

    #[test]
    fn the_horizon_bounds_full_pulls_and_is_implied_by_a_later_checkpoint() {
        let horizon = datetime!(2026-10-01 00:00:00 UTC);
        let full = Window {
            horizon: Some(horizon),
            ..Window::default()
        };
        assert_eq!(
            build(&f(), &full),
            r#"typeName IN ("Address", "File", "Host") AND lastModified >= "2026-10-01T00:00:00Z""#
        );
        let incremental = Window {
            after: Some(datetime!(2026-11-01 00:00:00 UTC)),
            ..full
        };
        assert_eq!(
            build(&f(), &incremental),
            r#"typeName IN ("Address", "File", "Host") AND lastModified > "2026-11-01T00:00:00Z""#
        );
        let before_horizon = Window {
            after: Some(datetime!(2026-09-01 00:00:00 UTC)),
            ..full
        };
        assert_eq!(build(&f(), &before_horizon), build(&f(), &full));
    }

    #[test]
    fn query_values_are_fully_encoded() {
        assert_eq!(
            encode_query_value(r#"typeName IN ("A") AND x > '1+2'&y=é"#),
            "typeName%20IN%20%28%22A%22%29%20AND%20x%20%3E%20%271%2B2%27%26y%3D%C3%A9"
        );
        assert_eq!(encode_query_value("a-b.c_d~e"), "a-b.c_d~e");
    }
}
