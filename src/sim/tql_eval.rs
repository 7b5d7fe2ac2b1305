//! The simulator's own TQL parser and evaluator, so tests check what a query really selects.
//!
//! Grammar (keywords and operators case-insensitive):
//! ```text
//! expr    := and (OR and)*
//! and     := primary (AND primary)*
//! primary := '(' expr ')' | hasTag '(' expr ')' | field op value
//! op      := = == EQ EQUALS | != <> NE | > GT | >= GEQ | < LT | <= LEQ
//!          | [NOT] IN '(' value, ... ')' | [NOT] LIKE|CONTAINS|STARTSWITH|ENDSWITH value
//!          | IS [NOT] NULL
//! value   := "string" | 'string' (backslash escapes) | number | true | false
//! ```
//! Indicator fields: typeName, ownerName, owner, summary, tag, description, threatAssessScore,
//! confidence, rating, falsePositiveCount, lastModified, dateAdded, indicatorActive, id.
//! Inside `hasTag(...)`: name (case-sensitive) and summary (case-insensitive). typeName also
//! compares case-insensitively. Dates accept ISO-8601, `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DD`,
//! `NOW() - n UNIT` and `TODAY()`. An unset numeric value fails every comparison (SQL-like),
//! except threatAssessScore and falsePositiveCount, which count as 0.

use std::borrow::Cow;

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// A TQL syntax or semantic error, worded for the 0x2001 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TqlError(pub String);

impl std::fmt::Display for TqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A queryable field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `typeName` (case-insensitive).
    TypeName,
    /// `ownerName`.
    OwnerName,
    /// `owner` (owner id).
    Owner,
    /// `summary`.
    Summary,
    /// `tag` (any of the indicator's tags).
    Tag,
    /// `description`.
    Description,
    /// `threatAssessScore`.
    ThreatAssessScore,
    /// `confidence`.
    Confidence,
    /// `rating`.
    Rating,
    /// `falsePositiveCount`.
    FalsePositiveCount,
    /// `lastModified`.
    LastModified,
    /// `dateAdded`.
    DateAdded,
    /// `externalDateExpires`.
    ExternalDateExpires,
    /// `indicatorActive`.
    IndicatorActive,
    /// `id`.
    Id,
    /// `name` inside hasTag (case-sensitive).
    TagName,
    /// `summary` inside hasTag (case-insensitive).
    TagSummary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str { fold: bool },
    Num,
    Date,
    Bool,
}

impl Field {
    fn kind(self) -> Kind {
        match self {
            Field::TypeName | Field::TagSummary => Kind::Str { fold: true },
            Field::OwnerName
            | Field::Summary
            | Field::Tag
            | Field::Description
            | Field::TagName => Kind::Str { fold: false },
            Field::Owner
            | Field::ThreatAssessScore
            | Field::Confidence
            | Field::Rating
            | Field::FalsePositiveCount
            | Field::Id => Kind::Num,
            Field::LastModified | Field::DateAdded | Field::ExternalDateExpires => Kind::Date,
            Field::IndicatorActive => Kind::Bool,
        }
    }

    fn lookup(name: &str, in_tag: bool) -> Option<Field> {
        let n = name.to_ascii_lowercase();
        if in_tag {
            return match n.as_str() {
                "name" => Some(Field::TagName),
                "summary" => Some(Field::TagSummary),
                _ => None,
            };
        }
        Some(match n.as_str() {
            "typename" => Field::TypeName,
            "ownername" => Field::OwnerName,
            "owner" => Field::Owner,
            "summary" => Field::Summary,
            "tag" => Field::Tag,
            "description" => Field::Description,
            "threatassessscore" => Field::ThreatAssessScore,
            "confidence" => Field::Confidence,
            "rating" => Field::Rating,
            "falsepositivecount" => Field::FalsePositiveCount,
            "lastmodified" => Field::LastModified,
            "dateadded" => Field::DateAdded,
            "externaldateexpires" => Field::ExternalDateExpires,
            "indicatoractive" => Field::IndicatorActive,
            "id" => Field::Id,
            _ => return None,
        })
    }
}

/// What the evaluator needs from a stored indicator.
pub trait Record {
    /// A string field (TypeName, OwnerName, Summary, Description).
    fn text(&self, f: Field) -> Option<Cow<'_, str>>;
    /// A numeric field; dates as epoch seconds.
    fn number(&self, f: Field) -> Option<f64>;
    /// `indicatorActive`.
    fn active(&self) -> bool;
    /// Whether any tag satisfies `pred`.
    fn any_tag(&self, pred: &mut dyn FnMut(&str) -> bool) -> bool;
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    Like,
    Contains,
    Starts,
    Ends,
    IsNull,
}

/// A compiled TQL expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// Both sides.
    And(Box<Expr>, Box<Expr>),
    /// Either side.
    Or(Box<Expr>, Box<Expr>),
    /// A tag sub-query: some tag satisfies the inner expression.
    HasTag(Box<Expr>),
    /// A comparison.
    Cmp(Cmp),
}

/// One `field op value(s)` comparison, values already converted to the field's kind.
#[derive(Debug, Clone)]
pub struct Cmp {
    field: Field,
    op: Op,
    negate: bool,
    values: Vec<Val>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Sym(&'static str),
    LParen,
    RParen,
    Comma,
}

fn lex(src: &str) -> Result<Vec<Tok>, TqlError> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '"' | '\'' => {
                let q = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(TqlError(format!("unterminated string starting with {q}")))
                        }
                        Some('\\') => {
                            let Some(n) = chars.get(i + 1) else {
                                return Err(TqlError("dangling escape at end of query".into()));
                            };
                            s.push(*n);
                            i += 2;
                        }
                        Some(ch) if *ch == q => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            '=' | '!' | '<' | '>' => {
                let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
                let sym = match two.as_str() {
                    "==" => "==",
                    "!=" => "!=",
                    "<>" => "<>",
                    ">=" => ">=",
                    "<=" => "<=",
                    _ => match c {
                        '=' => "=",
                        '<' => "<",
                        '>' => ">",
                        _ => return Err(TqlError(format!("unexpected character '{c}'"))),
                    },
                };
                i += sym.len();
                out.push(Tok::Sym(sym));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                let n = s
                    .parse::<f64>()
                    .map_err(|_| TqlError(format!("bad number '{s}'")))?;
                out.push(Tok::Num(n));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(TqlError(format!("unexpected character '{other}'"))),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    mentions_active: bool,
    now: i64,
}

fn is_kw(t: Option<&Tok>, kw: &str) -> bool {
    matches!(t, Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, t: Tok, what: &str) -> Result<(), TqlError> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            Some(x) => Err(TqlError(format!("expected {what}, found {x:?}"))),
            None => Err(TqlError(format!("expected {what} at end of query"))),
        }
    }

    fn expr(&mut self, in_tag: bool) -> Result<Expr, TqlError> {
        let mut left = self.and(in_tag)?;
        while is_kw(self.peek(), "or") {
            self.pos += 1;
            let right = self.and(in_tag)?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, in_tag: bool) -> Result<Expr, TqlError> {
        let mut left = self.primary(in_tag)?;
        while is_kw(self.peek(), "and") {
            self.pos += 1;
            let right = self.primary(in_tag)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn primary(&mut self, in_tag: bool) -> Result<Expr, TqlError> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.expr(in_tag)?;
                self.expect(Tok::RParen, "')'")?;
                Ok(e)
            }
            Some(Tok::Ident(name)) if !in_tag && name.eq_ignore_ascii_case("hastag") => {
                self.expect(Tok::LParen, "'(' after hasTag")?;
                let e = self.expr(true)?;
                self.expect(Tok::RParen, "')' closing hasTag")?;
                Ok(Expr::HasTag(Box::new(e)))
            }
            Some(Tok::Ident(name)) => {
                let field = Field::lookup(&name, in_tag)
                    .ok_or_else(|| TqlError(format!("unknown keyword '{name}'")))?;
                if field == Field::IndicatorActive {
                    self.mentions_active = true;
                }
                self.comparison(field)
            }
            Some(t) => Err(TqlError(format!("expected a keyword, found {t:?}"))),
            None => Err(TqlError("query ends where a keyword was expected".into())),
        }
    }

    fn comparison(&mut self, field: Field) -> Result<Expr, TqlError> {
        let (op, negate) = match self.next() {
            Some(Tok::Sym(s)) => match s {
                "=" | "==" => (Op::Eq, false),
                "!=" | "<>" => (Op::Ne, false),
                ">" => (Op::Gt, false),
                ">=" => (Op::Ge, false),
                "<" => (Op::Lt, false),
                "<=" => (Op::Le, false),
                _ => return Err(TqlError(format!("unknown operator '{s}'"))),
            },
            Some(Tok::Ident(w)) => {
                let w = w.to_ascii_uppercase();
                let negate = w == "NOT";
                let word = if negate {
                    match self.next() {
                        Some(Tok::Ident(x)) => x.to_ascii_uppercase(),
                        _ => return Err(TqlError("NOT must be followed by an operator".into())),
                    }
                } else {
                    w
                };
                let op = match word.as_str() {
                    "EQ" | "EQUALS" if !negate => Op::Eq,
                    "NE" if !negate => Op::Ne,
                    "GT" if !negate => Op::Gt,
                    "GEQ" if !negate => Op::Ge,
                    "LT" if !negate => Op::Lt,
                    "LEQ" if !negate => Op::Le,
                    "IS" if !negate => {
                        let neg = is_kw(self.peek(), "not");
                        if neg {
                            self.pos += 1;
                        }
                        if !is_kw(self.next().as_ref(), "null") {
                            return Err(TqlError("IS must be followed by [NOT] NULL".into()));
                        }
                        return Ok(Expr::Cmp(Cmp {
                            field,
                            op: Op::IsNull,
                            negate: neg,
                            values: Vec::new(),
                        }));
                    }
                    "IN" => Op::In,
                    "LIKE" => Op::Like,
                    "CONTAINS" => Op::Contains,
                    "STARTSWITH" => Op::Starts,
                    "ENDSWITH" => Op::Ends,
                    other => return Err(TqlError(format!("unknown operator '{other}'"))),
                };
                (op, negate)
            }
            Some(t) => return Err(TqlError(format!("expected an operator, found {t:?}"))),
            None => return Err(TqlError("query ends where an operator was expected".into())),
        };
        let raw = if op == Op::In {
            self.expect(Tok::LParen, "'(' after IN")?;
            let mut vals = vec![self.literal()?];
            loop {
                match self.next() {
                    Some(Tok::Comma) => vals.push(self.literal()?),
                    Some(Tok::RParen) => break,
                    _ => return Err(TqlError("expected ',' or ')' in IN list".into())),
                }
            }
            vals
        } else {
            vec![self.literal()?]
        };
        if matches!(op, Op::Like | Op::Contains | Op::Starts | Op::Ends)
            && !matches!(field.kind(), Kind::Str { .. })
        {
            return Err(TqlError(format!("operator not valid for {field:?}")));
        }
        let values = raw
            .into_iter()
            .map(|v| self.convert(field, v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Expr::Cmp(Cmp {
            field,
            op,
            negate,
            values,
        }))
    }

    fn literal(&mut self) -> Result<Val, TqlError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Val::Str(s)),
            Some(Tok::Num(n)) => Ok(Val::Num(n)),
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("true") => Ok(Val::Bool(true)),
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("false") => Ok(Val::Bool(false)),
            Some(t) => Err(TqlError(format!("expected a value, found {t:?}"))),
            None => Err(TqlError("query ends where a value was expected".into())),
        }
    }

    fn convert(&self, field: Field, v: Val) -> Result<Val, TqlError> {
        let bad = |v: &Val| TqlError(format!("value {v:?} does not fit {field:?}"));
        Ok(match (field.kind(), v) {
            (Kind::Str { fold }, Val::Str(s)) => Val::Str(if fold { s.to_lowercase() } else { s }),
            (Kind::Str { .. }, Val::Num(n)) => Val::Str(n.to_string()),
            (Kind::Num, Val::Num(n)) => Val::Num(n),
            (Kind::Num, Val::Str(s)) => match s.trim().parse::<f64>() {
                Ok(n) => Val::Num(n),
                Err(_) => return Err(bad(&Val::Str(s))),
            },
            (Kind::Date, Val::Str(s)) => match parse_date(&s, self.now) {
                Some(t) => Val::Num(t as f64),
                None => return Err(TqlError(format!("cannot read date \"{s}\""))),
            },
            (Kind::Bool, Val::Bool(b)) => Val::Bool(b),
            (Kind::Bool, Val::Str(s)) if s.eq_ignore_ascii_case("true") => Val::Bool(true),
            (Kind::Bool, Val::Str(s)) if s.eq_ignore_ascii_case("false") => Val::Bool(false),
            (_, v) => return Err(bad(&v)),
        })
    }
}

/// Reads a TQL date: ISO-8601 / RFC 3339, `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DD`, `NOW() - n UNIT`, `TODAY()`.
pub fn parse_date(s: &str, now: i64) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    let no_z = s.trim_end_matches('Z');
    let fmts = [
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    ];
    for f in fmts {
        if let Ok(t) = PrimitiveDateTime::parse(no_z, &f) {
            return Some(t.assume_utc().unix_timestamp());
        }
    }
    if let Ok(d) = time::Date::parse(s, format_description!("[year]-[month]-[day]")) {
        return Some(d.midnight().assume_utc().unix_timestamp());
    }
    let upper = s.to_ascii_uppercase();
    let (base, rest) = if let Some(r) = upper.strip_prefix("NOW()") {
        (now, r)
    } else if let Some(r) = upper.strip_prefix("TODAY()") {
        (now - now.rem_euclid(86_400), r)
    } else {
        return None;
    };
    let rest = rest.trim();
    if rest.is_empty() {
        return Some(base);
    }
    let (sign, rest) = match rest.split_at(1) {
        ("-", r) => (-1, r),
        ("+", r) => (1, r),
        _ => return None,
    };
    let mut parts = rest.split_whitespace();
    let n: i64 = parts.next()?.parse().ok()?;
    let unit = match parts.next()?.trim_end_matches('S') {
        "SECOND" => 1,
        "MINUTE" => 60,
        "HOUR" => 3600,
        "DAY" => 86_400,
        "WEEK" => 7 * 86_400,
        _ => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(base + sign * n * unit)
}

/// A parsed query plus what the server needs to know about it.
#[derive(Debug, Clone)]
pub struct Query {
    /// The expression; `None` for an empty query (everything).
    pub expr: Option<Expr>,
    /// Whether the query names `indicatorActive` (else only active indicators are served).
    pub mentions_active: bool,
}

impl Query {
    /// Whether a record is selected (including the implicit "active only" rule).
    pub fn matches(&self, r: &dyn Record) -> bool {
        if !self.mentions_active && !r.active() {
            return false;
        }
        self.expr.as_ref().is_none_or(|e| eval(e, r))
    }
}

/// Parses `src`; `now` (epoch seconds) anchors `NOW()` and `TODAY()`.
pub fn parse(src: &str, now: i64) -> Result<Query, TqlError> {
    let toks = lex(src)?;
    if toks.is_empty() {
        return Ok(Query {
            expr: None,
            mentions_active: false,
        });
    }
    let mut p = Parser {
        toks,
        pos: 0,
        mentions_active: false,
        now,
    };
    let e = p.expr(false)?;
    if let Some(t) = p.peek() {
        return Err(TqlError(format!(
            "unexpected {t:?} after a complete expression"
        )));
    }
    Ok(Query {
        expr: Some(e),
        mentions_active: p.mentions_active,
    })
}

fn like(pattern: &[char], s: &[char]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some(('%', rest)) => (0..=s.len()).any(|i| like(rest, &s[i..])),
        Some(('_', rest)) => !s.is_empty() && like(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && like(rest, &s[1..]),
    }
}

fn test_str(op: Op, value: &str, vals: &[Val]) -> bool {
    let first = match vals.first() {
        Some(Val::Str(s)) => s.as_str(),
        _ => "",
    };
    match op {
        Op::Eq => value == first,
        Op::Ne => value != first,
        Op::Gt => value > first,
        Op::Ge => value >= first,
        Op::Lt => value < first,
        Op::Le => value <= first,
        Op::In => vals.iter().any(|v| matches!(v, Val::Str(s) if s == value)),
        Op::Like => {
            let p: Vec<char> = first.chars().collect();
            let s: Vec<char> = value.chars().collect();
            like(&p, &s)
        }
        Op::Contains => value.contains(first),
        Op::Starts => value.starts_with(first),
        Op::Ends => value.ends_with(first),
        Op::IsNull => false,
    }
}

fn test_num(op: Op, value: f64, vals: &[Val]) -> bool {
    let first = match vals.first() {
        Some(Val::Num(n)) => *n,
        _ => f64::NAN,
    };
    match op {
        Op::Eq => value == first,
        Op::Ne => value != first,
        Op::Gt => value > first,
        Op::Ge => value >= first,
        Op::Lt => value < first,
        Op::Le => value <= first,
        Op::In => vals.iter().any(|v| matches!(v, Val::Num(n) if *n == value)),
        _ => false,
    }
}

fn eval_tag(c: &Cmp, tag: &str) -> bool {
    let v = if c.field == Field::TagSummary {
        tag.to_lowercase()
    } else {
        tag.to_string()
    };
    test_str(c.op, &v, &c.values) != c.negate
}

fn eval_in_tag(e: &Expr, tag: &str) -> bool {
    match e {
        Expr::And(a, b) => eval_in_tag(a, tag) && eval_in_tag(b, tag),
        Expr::Or(a, b) => eval_in_tag(a, tag) || eval_in_tag(b, tag),
        Expr::HasTag(inner) => eval_in_tag(inner, tag),
        Expr::Cmp(c) => eval_tag(c, tag),
    }
}

fn eval(e: &Expr, r: &dyn Record) -> bool {
    match e {
        Expr::And(a, b) => eval(a, r) && eval(b, r),
        Expr::Or(a, b) => eval(a, r) || eval(b, r),
        Expr::HasTag(inner) => r.any_tag(&mut |t| eval_in_tag(inner, t)),
        Expr::Cmp(c) => eval_cmp(c, r),
    }
}

fn eval_cmp(c: &Cmp, r: &dyn Record) -> bool {
    if c.field == Field::Tag {
        // Multi-valued: a positive operator needs one tag to satisfy it; a negated or `!=`
        // operator needs no tag to satisfy the positive form.
        if c.op == Op::IsNull {
            let has = r.any_tag(&mut |_| true);
            return has == c.negate;
        }
        let (op, neg) = if c.op == Op::Ne {
            (Op::Eq, true)
        } else {
            (c.op, c.negate)
        };
        return r.any_tag(&mut |t| test_str(op, t, &c.values)) != neg;
    }
    let result = match c.field.kind() {
        Kind::Str { fold } => {
            let v = r.text(c.field);
            if c.op == Op::IsNull {
                return v.is_none() != c.negate;
            }
            match v {
                Some(s) if fold => test_str(c.op, &s.to_lowercase(), &c.values),
                Some(s) => test_str(c.op, &s, &c.values),
                None => return false,
            }
        }
        Kind::Num | Kind::Date => {
            let v = r.number(c.field);
            if c.op == Op::IsNull {
                return v.is_none() != c.negate;
            }
            match v {
                Some(n) => test_num(c.op, n, &c.values),
                None => return false,
            }
        }
        Kind::Bool => {
            let v = r.active();
            let b = matches!(c.values.first(), Some(Val::Bool(true)));
            match c.op {
                Op::Eq => v == b,
                Op::Ne => v != b,
                Op::In => c.values.contains(&Val::Bool(v)),
                Op::IsNull => false,
                _ => false,
            }
        }
    };
    result != c.negate
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R {
        ty: &'static str,
        owner: &'static str,
        tags: Vec<&'static str>,
        rating: Option<f64>,
        lm: i64,
        active: bool,
    }

    impl Record for R {
        fn text(&self, f: Field) -> Option<Cow<'_, str>> {
            match f {
                Field::TypeName => Some(self.ty.into()),
                Field::OwnerName => Some(self.owner.into()),
                Field::Summary => Some("bad.example".into()),
                _ => None,
            }
        }
        fn number(&self, f: Field) -> Option<f64> {
            match f {
                Field::Rating => self.rating,
                Field::LastModified => Some(self.lm as f64),
                Field::Id => Some(7.0),
                Field::ThreatAssessScore => Some(500.0),
                _ => None,
            }
        }
        fn active(&self) -> bool {
            self.active
        }
        fn any_tag(&self, pred: &mut dyn FnMut(&str) -> bool) -> bool {
            self.tags.iter().any(|t| pred(t))
        }
    }

    fn r() -> R {
        R {
            ty: "Host",
            owner: "Org \"Q\"",
            tags: vec!["APT", "C2"],
            rating: Some(3.0),
            lm: 1_700_000_000,
            active: true,
        }
    }

    fn sel(q: &str) -> bool {
        parse(q, 1_800_000_000).unwrap().matches(&r())
    }

    #[test]
    fn operators_and_combinators() {
        assert!(sel(r#"typeName IN ("Address", "host")"#));
        assert!(!sel(r#"typeName NOT IN ("Host")"#));
        assert!(sel(r#"ownerName = "Org \"Q\"""#));
        assert!(sel(r#"ownername == 'Org "Q"'"#));
        assert!(!sel(r#"ownerName != "Org \"Q\"""#));
        assert!(sel(
            "rating >= 3 and rating GEQ 3 AND rating LEQ 3 and rating < 4"
        ));
        assert!(!sel("rating > 3 OR rating LT 3"));
        assert!(sel("(rating > 3 OR id = 7) AND threatAssessScore GT 499"));
        assert!(sel(r#"hasTag(summary IN ("apt"))"#));
        assert!(!sel(r#"hasTag(name = "apt")"#));
        assert!(sel(r#"hasTag(name = "APT" OR name = "x")"#));
        assert!(sel(r#"tag = "C2" and tag != "zzz""#));
        assert!(!sel(r#"tag NOT IN ("C2")"#));
        assert!(sel(
            r#"summary LIKE "%.exam_le" and summary CONTAINS "bad""#
        ));
        assert!(sel(
            r#"summary STARTSWITH "bad" AND summary ENDSWITH "ple""#
        ));
        assert!(sel(r#"summary NOT CONTAINS "good""#));
        assert!(sel(
            r#"lastModified > "2023-11-14 00:00:00" AND lastModified < "2023-11-15""#
        ));
        assert!(sel(r#"lastModified > "2023-11-14T22:13:19Z""#));
        assert!(!sel(r#"lastModified > "2023-11-14T22:13:20Z""#));
        assert!(sel(r#"lastModified < "NOW() - 30 DAYS""#));
        assert!(sel("confidence IS NULL and rating is not null"));
    }

    #[test]
    fn active_only_unless_mentioned() {
        let inactive = R {
            active: false,
            ..r()
        };
        let q = parse("rating >= 1", 0).unwrap();
        assert!(!q.matches(&inactive));
        let q = parse("indicatorActive = false", 0).unwrap();
        assert!(q.matches(&inactive));
        assert!(!q.matches(&r()));
        let q = parse("indicatorActive EQ True", 0).unwrap();
        assert!(q.matches(&r()));
        assert!(parse("", 0).unwrap().matches(&r()));
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "typeName IN (\"Host\"",
            "rating >=",
            "active = true",
            "ownerName = \"unterminated",
            "rating >= 3 AND",
            "(rating >= 3",
            "rating >= 3)",
            "rating ~ 3",
            "rating >= \"x\"",
            "lastModified > \"yesterday-ish\"",
            "hasTag(tag = \"x\")",
        ] {
            assert!(parse(bad, 0).is_err(), "{bad}");
        }
    }
}
