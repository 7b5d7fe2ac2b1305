//! A ThreatConnect v3 API simulator: HMAC and token auth, real TQL evaluation, paging with
//! absolute `next` links, deleted indicators, owners, runtime variables, Indicator Exclusion
//! Lists (`tc_exclusions`) and `externalDateExpires`; fault injection,
//! absolute `next` links, deleted indicators, owners, runtime variables, observations reported
//! with `PUT /v3/indicators/{id}` (see `observe`); fault injection,
//! hit counts and latency come from [`Server`]. Answers carry every field of the documented
//! examples in tests/fixtures/recorded.
//!
//! Memory stays modest at a million indicators: rows are stored compactly (interned owners,
//! types and tags; numbers with sentinels; the summary derived from the value fields unless it
//! differs), and each (tql, sorting, owner) result is cached as a list of row positions until
//! the dataset changes, so paging never re-evaluates the whole set.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde::Serialize;
use time::OffsetDateTime;

use crate::secret::Secret;
use crate::sim::server::{Handler, Server, SimRequest, SimResponse};
use crate::sim::tql_eval::{self, parse_date, Field, Record};
use crate::tc::auth::hmac_authorization;
use crate::tc::model::{DeletedIndicator, Indicator};
use crate::tc::tql::format_time;

/// Largest `resultLimit` TC accepts.
pub const MAX_RESULT_LIMIT: usize = 10_000;

/// Credentials and token behaviour of a simulated TC instance.
#[derive(Debug, Clone)]
pub struct TcSimOptions {
    /// HMAC access id.
    pub access_id: String,
    /// HMAC secret key.
    pub secret_key: String,
    /// The first API token handed out (`tc_token`).
    pub token: String,
    /// Lifetime of every token, first and renewed, in seconds.
    pub token_ttl_secs: i64,
    /// Server clock minus real clock, in seconds (to provoke timestamp errors).
    pub clock_skew_secs: i64,
    /// The API user's Organization: the only owner `/v3/indicators/deleted` covers without
    /// `owner=`, and the one owner typed `Organization` (others are Communities or Sources).
    pub organization: String,
}

impl Default for TcSimOptions {
    fn default() -> Self {
        TcSimOptions {
            access_id: "12345678901234567890".into(),
            secret_key: "sim-secret-key".into(),
            token: "APIV2:1:sim:0:initial-token".into(),
            token_ttl_secs: 4 * 3600,
            clock_skew_secs: 0,
            organization: crate::sim::dataset::OWNERS[0].to_string(),
        }
    }
}

const NONE_I64: i64 = i64::MIN;
const NONE_I32: i32 = i32::MIN;

#[derive(Debug, Default)]
struct Extra {
    summary: Option<Box<str>>,
    description: Option<Box<str>>,
    web_link: Option<Box<str>>,
    /// `externalDateExpires`, epoch seconds.
    expires: Option<i64>,
}

#[derive(Debug)]
struct Row {
    id: i64,
    last_modified: i64,
    date_added: i64,
    owner_id: i64,
    rating_centi: i32,
    confidence: i32,
    threat_assess: i32,
    false_positives: i32,
    owner: u32,
    ty: u32,
    active: bool,
    ip: Option<Box<str>>,
    host: Option<Box<str>>,
    md5: Option<Box<str>>,
    sha1: Option<Box<str>>,
    sha256: Option<Box<str>>,
    tags: Box<[u32]>,
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Default)]
struct Interner {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Interner {
    fn get(&mut self, s: &str) -> u32 {
        if let Some(i) = self.ids.get(s) {
            return *i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.to_string());
        self.ids.insert(s.to_string(), i);
        i
    }

    fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, Default)]
struct Store {
    rows: Vec<Option<Row>>,
    by_id: HashMap<i64, u32>,
    owners: Interner,
    owner_ids: HashMap<u32, i64>,
    types: Interner,
    tags: Interner,
    /// Deletion records with the deletion time, which TC keeps but does not send.
    deleted: Vec<(DeletedIndicator, i64)>,
    /// Observations reported per indicator id: (count, when last reported, epoch seconds).
    observed: HashMap<i64, (i64, i64)>,
}

fn opt_box(s: &Option<String>) -> Option<Box<str>> {
    s.as_deref().map(Box::from)
}

fn to_i32(v: Option<i64>) -> i32 {
    v.map(|x| x.clamp(i32::MIN as i64 + 1, i32::MAX as i64) as i32)
        .unwrap_or(NONE_I32)
}

fn from_i32(v: i32) -> Option<i64> {
    (v != NONE_I32).then_some(v as i64)
}

fn epoch(s: &str) -> Option<i64> {
    parse_date(s, 0)
}

fn now_epoch() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn time_str(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .map(format_time)
        .unwrap_or_default()
}

impl Row {
    fn derived_summary(&self, ty: &str) -> Option<String> {
        match ty {
            "Address" => self.ip.as_deref().map(str::to_string),
            "Host" => self.host.as_deref().map(str::to_string),
            "File" => {
                let parts: Vec<&str> = [&self.md5, &self.sha1, &self.sha256]
                    .into_iter()
                    .filter_map(|h| h.as_deref())
                    .collect();
                (!parts.is_empty()).then(|| parts.join(" : "))
            }
            _ => None,
        }
    }

    fn summary<'a>(&'a self, store: &Store) -> Cow<'a, str> {
        if let Some(s) = self.extra.as_ref().and_then(|e| e.summary.as_deref()) {
            return Cow::Borrowed(s);
        }
        let ty = store.types.name(self.ty);
        match ty {
            "Address" => Cow::Borrowed(self.ip.as_deref().unwrap_or("")),
            "Host" => Cow::Borrowed(self.host.as_deref().unwrap_or("")),
            _ => Cow::Owned(self.derived_summary(ty).unwrap_or_default()),
        }
    }

    fn rating(&self) -> Option<f64> {
        (self.rating_centi != NONE_I32).then(|| self.rating_centi as f64 / 100.0)
    }

    fn expires(&self) -> Option<i64> {
        self.extra.as_ref().and_then(|e| e.expires)
    }
}

impl Store {
    fn row_from(&mut self, ind: &Indicator) -> Row {
        let owner = self.owners.get(&ind.owner_name);
        if let Some(oid) = ind.owner_id {
            self.owner_ids.entry(owner).or_insert(oid);
        }
        let ty = self.types.get(&ind.type_name);
        let tags: Vec<u32> = ind.tags.iter().map(|t| self.tags.get(t)).collect();
        let mut row = Row {
            id: ind.id,
            last_modified: epoch(&ind.last_modified).unwrap_or_else(now_epoch),
            date_added: ind
                .date_added
                .as_deref()
                .and_then(epoch)
                .unwrap_or(NONE_I64),
            owner_id: ind.owner_id.unwrap_or(NONE_I64),
            rating_centi: ind
                .rating
                .map(|r| (r * 100.0).round() as i32)
                .unwrap_or(NONE_I32),
            confidence: to_i32(ind.confidence),
            threat_assess: to_i32(ind.threat_assess_score),
            false_positives: to_i32(ind.false_positives),
            owner,
            ty,
            active: ind.active,
            ip: opt_box(&ind.ip),
            host: opt_box(&ind.host_name),
            md5: opt_box(&ind.md5),
            sha1: opt_box(&ind.sha1),
            sha256: opt_box(&ind.sha256),
            tags: tags.into_boxed_slice(),
            extra: None,
        };
        let mut extra = Extra::default();
        if row.derived_summary(&ind.type_name).as_deref() != Some(ind.summary.as_str()) {
            extra.summary = Some(ind.summary.as_str().into());
        }
        extra.description = opt_box(&ind.description);
        extra.web_link = opt_box(&ind.web_link);
        extra.expires = ind.external_date_expires.as_deref().and_then(epoch);
        if extra.summary.is_some()
            || extra.description.is_some()
            || extra.web_link.is_some()
            || extra.expires.is_some()
        {
            row.extra = Some(Box::new(extra));
        }
        row
    }

    fn insert(&mut self, ind: &Indicator) {
        let row = self.row_from(ind);
        match self.by_id.get(&ind.id) {
            Some(&pos) => self.rows[pos as usize] = Some(row),
            None => {
                self.by_id.insert(ind.id, self.rows.len() as u32);
                self.rows.push(Some(row));
            }
        }
    }

    /// An owner's id: the one its indicators carry, else its place in the list (from 1).
    fn owner_id(&self, name: &str) -> i64 {
        match self.owners.ids.get(name) {
            Some(i) => self.owner_ids.get(i).copied().unwrap_or(*i as i64 + 1),
            None => 0,
        }
    }

    fn get(&self, id: i64) -> Option<&Row> {
        self.by_id
            .get(&id)
            .and_then(|p| self.rows[*p as usize].as_ref())
    }

    fn indicator(&self, row: &Row) -> Indicator {
        let extra = row.extra.as_deref();
        Indicator {
            id: row.id,
            owner_id: (row.owner_id != NONE_I64).then_some(row.owner_id),
            owner_name: self.owners.name(row.owner).to_string(),
            type_name: self.types.name(row.ty).to_string(),
            summary: row.summary(self).into_owned(),
            ip: row.ip.as_deref().map(str::to_string),
            host_name: row.host.as_deref().map(str::to_string),
            md5: row.md5.as_deref().map(str::to_string),
            sha1: row.sha1.as_deref().map(str::to_string),
            sha256: row.sha256.as_deref().map(str::to_string),
            rating: row.rating(),
            confidence: from_i32(row.confidence),
            threat_assess_score: from_i32(row.threat_assess),
            false_positives: from_i32(row.false_positives),
            tags: row
                .tags
                .iter()
                .map(|t| self.tags.name(*t).to_string())
                .collect(),
            description: extra
                .and_then(|e| e.description.as_deref())
                .map(str::to_string),
            web_link: extra
                .and_then(|e| e.web_link.as_deref())
                .map(str::to_string),
            date_added: (row.date_added != NONE_I64).then(|| time_str(row.date_added)),
            last_modified: time_str(row.last_modified),
            active: row.active,
            external_date_expires: row.expires().map(time_str),
            leave_out_observed: false,
        }
    }
}

struct RowRef<'a> {
    row: &'a Row,
    store: &'a Store,
}

impl Record for RowRef<'_> {
    fn text(&self, f: Field) -> Option<Cow<'_, str>> {
        match f {
            Field::TypeName => Some(Cow::Borrowed(self.store.types.name(self.row.ty))),
            Field::OwnerName => Some(Cow::Borrowed(self.store.owners.name(self.row.owner))),
            Field::Summary => Some(self.row.summary(self.store)),
            Field::Description => self
                .row
                .extra
                .as_ref()
                .and_then(|e| e.description.as_deref())
                .map(Cow::Borrowed),
            _ => None,
        }
    }

    fn number(&self, f: Field) -> Option<f64> {
        let r = self.row;
        match f {
            Field::Id => Some(r.id as f64),
            Field::Owner => self.store.owner_ids.get(&r.owner).map(|v| *v as f64),
            Field::ThreatAssessScore => Some(from_i32(r.threat_assess).unwrap_or(0) as f64),
            Field::FalsePositiveCount => Some(from_i32(r.false_positives).unwrap_or(0) as f64),
            Field::Confidence => from_i32(r.confidence).map(|v| v as f64),
            Field::Rating => r.rating(),
            Field::LastModified => Some(r.last_modified as f64),
            Field::DateAdded => (r.date_added != NONE_I64).then_some(r.date_added as f64),
            Field::ExternalDateExpires => r.expires().map(|t| t as f64),
            _ => None,
        }
    }

    fn active(&self) -> bool {
        self.row.active
    }

    fn any_tag(&self, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.row.tags.iter().any(|t| pred(self.store.tags.name(*t)))
    }
}

#[derive(Debug)]
struct Tokens {
    current: String,
    expires: i64,
    issued: Vec<String>,
}

type CacheKey = (String, String, String);

pub(super) struct State {
    access_id: String,
    secret_key: Secret,
    ttl: i64,
    skew: AtomicI64,
    store: RwLock<Store>,
    cache: Mutex<HashMap<CacheKey, Arc<Vec<u32>>>>,
    evaluations: AtomicU64,
    tokens: Mutex<Tokens>,
    renewals: AtomicU64,
    variables: Mutex<HashMap<(String, String), String>>,
    base: OnceLock<String>,
    next_base: Mutex<Option<String>>,
    overlap: AtomicUsize,
    organization: String,
    heavy_pages: Mutex<Option<HeavyPages>>,
    success_as_string: std::sync::atomic::AtomicBool,
    record_patch: Mutex<Option<(i64, serde_json::Value)>>,
    ids_as_strings: std::sync::atomic::AtomicBool,
    pub(super) exclusions: Mutex<super::tc_exclusions::Book>,
    expiry_queries: AtomicU64,
    observation_moves_last_modified: std::sync::atomic::AtomicBool,
    observation_raises_score: std::sync::atomic::AtomicBool,
    observations_refused: std::sync::atomic::AtomicBool,
    observation_answer_read_only: std::sync::atomic::AtomicBool,
}

impl State {
    /// An owner's id as `/v3/security/owners` lists it.
    pub(super) fn owner_id(&self, name: &str) -> i64 {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        store.owner_id(name)
    }

    /// Whether the Api User can see an owner of this name.
    pub(super) fn owner_known(&self, name: &str) -> bool {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        store.owners.ids.contains_key(name)
    }
}

/// How TC answers an indicator page larger than it can serve in time (TQL timeouts on large
/// queries are documented; what the client sees is not, so both shapes are offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeavyPages {
    /// Pages over this `resultLimit` get a 5xx status (e.g. 504 or 500) after no delay.
    Status(usize, u16),
    /// Pages over this `resultLimit` stall this long before answering (the client times out).
    Stall(usize, std::time::Duration),
}

/// A running ThreatConnect simulator on 127.0.0.1 (stops when dropped).
pub struct TcSim {
    server: Server,
    state: Arc<State>,
}

pub(super) fn error(status: u16, code: &str, message: &str) -> SimResponse {
    SimResponse::json(
        status,
        &serde_json::json!({"status": "Error", "errCode": code, "message": message}),
    )
}

impl TcSim {
    /// Starts an empty simulator on a free loopback port.
    pub fn start(opts: TcSimOptions) -> std::io::Result<TcSim> {
        let mut store = Store::default();
        // The API user's Organization is always listed, with or without indicators.
        store.owners.get(&opts.organization);
        let state = Arc::new(State {
            access_id: opts.access_id.clone(),
            secret_key: Secret::new(opts.secret_key.clone()),
            ttl: opts.token_ttl_secs,
            skew: AtomicI64::new(opts.clock_skew_secs),
            store: RwLock::new(store),
            cache: Mutex::new(HashMap::new()),
            evaluations: AtomicU64::new(0),
            tokens: Mutex::new(Tokens {
                current: opts.token.clone(),
                expires: now_epoch() + opts.token_ttl_secs,
                issued: vec![opts.token.clone()],
            }),
            renewals: AtomicU64::new(0),
            variables: Mutex::new(HashMap::new()),
            base: OnceLock::new(),
            next_base: Mutex::new(None),
            overlap: AtomicUsize::new(0),
            organization: opts.organization.clone(),
            heavy_pages: Mutex::new(None),
            success_as_string: std::sync::atomic::AtomicBool::new(false),
            record_patch: Mutex::new(None),
            ids_as_strings: std::sync::atomic::AtomicBool::new(false),
            exclusions: Mutex::new(Default::default()),
            expiry_queries: AtomicU64::new(0),
            observation_moves_last_modified: std::sync::atomic::AtomicBool::new(false),
            observation_raises_score: std::sync::atomic::AtomicBool::new(false),
            observations_refused: std::sync::atomic::AtomicBool::new(false),
            observation_answer_read_only: std::sync::atomic::AtomicBool::new(false),
        });
        let s2 = state.clone();
        let handler: Handler = Arc::new(move |req: &SimRequest| handle(&s2, req));
        let server = Server::start(0, handler)?;
        let _ = state.base.set(server.url());
        Ok(TcSim { server, state })
    }

    /// `http://127.0.0.1:PORT/api`, the `tc_api_path` to give the client.
    pub fn api_path(&self) -> String {
        format!("{}/api", self.server.url())
    }

    /// The HTTP server, for fault injection, hit counts and latency.
    pub fn server(&self) -> &Server {
        &self.server
    }

    fn mutate<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.state.store.write().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut store);
        self.state
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        r
    }

    /// Adds (or replaces, by id) one indicator as given.
    pub fn insert(&self, ind: Indicator) {
        self.mutate(|s| s.insert(&ind));
    }

    /// Adds many indicators (e.g. from [`crate::sim::dataset::generate`]).
    pub fn load(&self, items: impl IntoIterator<Item = Indicator>) {
        self.mutate(|s| {
            for ind in items {
                s.insert(&ind);
            }
        });
    }

    /// Changes an indicator and bumps its `lastModified` to now; false when the id is unknown.
    pub fn update(&self, id: i64, f: impl FnOnce(&mut Indicator)) -> bool {
        self.mutate(|s| {
            let Some(row) = s.get(id) else { return false };
            let mut ind = s.indicator(row);
            f(&mut ind);
            ind.id = id;
            ind.last_modified = time_str(now_epoch());
            s.insert(&ind);
            true
        })
    }

    /// Activates or deactivates an indicator (bumps `lastModified`).
    pub fn set_active(&self, id: i64, active: bool) -> bool {
        self.update(id, |i| i.active = active)
    }

    /// Drops every deleted-indicator record, as TC does once they outlive the retention its
    /// system administrator configured.
    pub fn forget_deletions(&self) {
        self.mutate(|s| s.deleted.clear());
    }

    /// Deletes an indicator and records it for `/v3/indicators/deleted`.
    pub fn delete(&self, id: i64) -> bool {
        self.mutate(|s| {
            let Some(pos) = s.by_id.remove(&id) else {
                return false;
            };
            let Some(row) = s.rows[pos as usize].take() else {
                return false;
            };
            let ind = s.indicator(&row);
            s.observed.remove(&id);
            let now = now_epoch();
            s.deleted.push((
                DeletedIndicator {
                    owner_name: ind.owner_name,
                    type_name: ind.type_name,
                    summary: ind.summary,
                    date_added: ind.date_added,
                },
                now,
            ));
            true
        })
    }

    /// One indicator as stored.
    pub fn get(&self, id: i64) -> Option<Indicator> {
        let s = self.state.store.read().unwrap_or_else(|e| e.into_inner());
        s.get(id).map(|r| s.indicator(r))
    }

    /// Every stored indicator (active or not), by id, for tests that compute expectations.
    pub fn snapshot(&self) -> Vec<Indicator> {
        let s = self.state.store.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Indicator> = s.rows.iter().flatten().map(|r| s.indicator(r)).collect();
        out.sort_by_key(|i| i.id);
        out
    }

    /// Number of stored indicators.
    pub fn len(&self) -> usize {
        self.state
            .store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .len()
    }

    /// Whether no indicator is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets a runtime variable served at `/api/internal/variable/runtime/{provider}/{key}`.
    pub fn set_variable(&self, provider: &str, key: &str, value: &str) {
        self.state
            .variables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((provider.into(), key.into()), value.into());
    }

    /// The token currently accepted.
    pub fn token(&self) -> String {
        self.state
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current
            .clone()
    }

    /// When the current token expires, epoch seconds.
    pub fn token_expires(&self) -> i64 {
        self.state
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expires
    }

    /// Makes the current token expired now (the next call with it gets 401).
    pub fn expire_token(&self) {
        self.state
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expires = now_epoch() - 1;
    }

    /// How many `/appAuth` renewals succeeded.
    pub fn renewals(&self) -> u64 {
        self.state.renewals.load(Ordering::SeqCst)
    }

    /// Makes the server clock run `secs` ahead of the real one.
    pub fn set_clock_skew(&self, secs: i64) {
        self.state.skew.store(secs, Ordering::SeqCst);
    }

    /// Replaces scheme://host:port of `next` links (None = this server), to test origin checks.
    pub fn set_next_base(&self, base: Option<&str>) {
        *self
            .state
            .next_base
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = base.map(str::to_string);
    }

    /// Makes every page after the first start `n` items early, so items repeat across pages.
    pub fn set_page_overlap(&self, n: usize) {
        self.state.overlap.store(n, Ordering::SeqCst);
    }

    /// Makes indicator pages above a size fail or stall (None: every size is served).
    pub fn set_heavy_pages(&self, h: Option<HeavyPages>) {
        *self
            .state
            .heavy_pages
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = h;
    }

    /// Sends `/appAuth`'s `success` as the string `"true"` instead of a boolean, as some
    /// servers do (a Java client reads it either way).
    pub fn set_renew_success_as_string(&self, on: bool) {
        self.state.success_as_string.store(on, Ordering::SeqCst);
    }

    /// Serves one indicator with some fields replaced (a `null` removes the field), as schema
    /// drift would: e.g. `{"id": "x-13"}`. None serves every record as stored.
    pub fn set_record_patch(&self, patch: Option<(i64, serde_json::Value)>) {
        *self
            .state
            .record_patch
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = patch;
    }

    /// Serves every indicator's `id` and `ownerId` as numeric strings (schema drift).
    pub fn set_ids_as_strings(&self, on: bool) {
        self.state.ids_as_strings.store(on, Ordering::SeqCst);
    }

    /// Observations reported on an indicator so far (0 for none, or an unknown id).
    pub fn observations(&self, id: i64) -> i64 {
        let s = self.state.store.read().unwrap_or_else(|e| e.into_inner());
        s.observed.get(&id).map_or(0, |o| o.0)
    }

    /// Every indicator with observations, as id -> count.
    pub fn observed(&self) -> std::collections::BTreeMap<i64, i64> {
        let s = self.state.store.read().unwrap_or_else(|e| e.into_inner());
        s.observed.iter().map(|(id, o)| (*id, o.0)).collect()
    }

    /// Whether reporting an observation moves the indicator's `lastModified` to now (the
    /// documentation does not say; off: only `lastObserved` moves).
    pub fn set_observation_moves_last_modified(&self, on: bool) {
        self.state
            .observation_moves_last_modified
            .store(on, Ordering::SeqCst);
    }

    /// Whether reporting an observation raises the indicator's ThreatAssess score by 10 per
    /// observation (at most 1000), as TC's scoring of observations would, some time later.
    pub fn set_observation_raises_score(&self, on: bool) {
        self.state
            .observation_raises_score
            .store(on, Ordering::SeqCst);
    }

    /// Answers 403 to observation writes, as TC does for an Api User without the option
    /// "Include in Observations and False Positives" (or without a role that may report).
    pub fn set_observations_refused(&self, on: bool) {
        self.state.observations_refused.store(on, Ordering::SeqCst);
    }

    /// Answers an observation write with the documented read-only shape (no id, no
    /// lastModified; the `v3ApiReadOnlyReports` system setting) instead of the indicator.
    pub fn set_observation_answer_read_only(&self, on: bool) {
        self.state
            .observation_answer_read_only
            .store(on, Ordering::SeqCst);
    }

    /// How many full TQL evaluations ran (cache misses).
    pub fn evaluations(&self) -> u64 {
        self.state.evaluations.load(Ordering::SeqCst)
    }

    /// Indicator pages asked for whose TQL compares `externalDateExpires` (the benchmark's
    /// count of what Honor Expiry costs).
    pub fn expiry_queries(&self) -> u64 {
        self.state.expiry_queries.load(Ordering::SeqCst)
    }

    pub(super) fn state(&self) -> &State {
        &self.state
    }
}

fn handle(st: &State, req: &SimRequest) -> SimResponse {
    let path = req.decoded_path();
    let path = path.trim_end_matches('/');
    let observation = req.method == "PUT"
        && path
            .strip_prefix("/api/v3/indicators/")
            .is_some_and(|id| !id.contains('/'));
    if req.method != "GET" && !observation {
        return error(405, "0x1005", "Method not allowed in the simulator");
    }
    if path == "/api/appAuth" {
        return renew(st, req);
    }
    if let Err(resp) = authenticate(st, req) {
        return resp;
    }
    if let Some(resp) = super::tc_exclusions::handle(st, req, path) {
        return resp;
    }
    if observation {
        return observe(st, req, path.trim_start_matches("/api/v3/indicators/"));
    }
    match path {
        "/api/v3/indicators" => list(st, req),
        "/api/v3/indicators/deleted" => deleted(st, req),
        "/api/v3/security/owners" => owners(st, req),
        p => {
            if let Some(rest) = p.strip_prefix("/api/internal/variable/runtime/") {
                if let Some((prov, key)) = rest.split_once('/') {
                    let vars = st.variables.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(v) = vars.get(&(prov.to_string(), key.to_string())) {
                        return SimResponse::json(200, &serde_json::json!({"data": v}));
                    }
                }
            }
            error(404, "0x1004", "The requested resource was not found")
        }
    }
}

fn renew(st: &State, req: &SimRequest) -> SimResponse {
    let Some(old) = req.param("expiredToken") else {
        return SimResponse::json(
            400,
            &serde_json::json!({"success": false, "message": "expiredToken is required"}),
        );
    };
    let mut t = st.tokens.lock().unwrap_or_else(|e| e.into_inner());
    if !t.issued.iter().any(|x| x == old) {
        return SimResponse::json(
            401,
            &serde_json::json!({"success": false, "message": "Token not found or not renewable"}),
        );
    }
    let n = st.renewals.fetch_add(1, Ordering::SeqCst) + 1;
    let new = format!("APIV2:1:sim:{n}:renewed-token-{n}");
    t.current = new.clone();
    t.expires = now_epoch() + st.ttl;
    t.issued.push(new.clone());
    SimResponse::json(
        200,
        &serde_json::json!({
            "success": if st.success_as_string.load(Ordering::SeqCst) {
                serde_json::json!("true")
            } else {
                serde_json::json!(true)
            },
            "apiToken": new,
            "apiTokenExpires": t.expires.to_string(),
        }),
    )
}

fn authenticate(st: &State, req: &SimRequest) -> Result<(), SimResponse> {
    let unauthorized = |m: &str| error(401, "0x1002", m);
    let Some(auth) = req.header("authorization") else {
        return Err(unauthorized("No Authorization header was sent"));
    };
    if let Some(tok) = auth.strip_prefix("TC-Token ") {
        let t = st.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tok != t.current {
            return Err(unauthorized("Unauthorized: the API token is not valid"));
        }
        if now_epoch() >= t.expires {
            return Err(unauthorized("Unauthorized: the API token has expired"));
        }
        return Ok(());
    }
    let Some(cred) = auth.strip_prefix("TC ") else {
        return Err(unauthorized("Unsupported Authorization scheme"));
    };
    let Some(ts) = req
        .header("timestamp")
        .and_then(|v| v.trim().parse::<i64>().ok())
    else {
        return Err(unauthorized("Timestamp header is missing or invalid"));
    };
    let now = now_epoch() + st.skew.load(Ordering::SeqCst);
    if (now - ts).abs() > 300 {
        return Err(unauthorized("Timestamp Out of Acceptable Time Range"));
    }
    let id = cred.split(':').next().unwrap_or("");
    let expected = hmac_authorization(&st.access_id, &st.secret_key, &req.target, &req.method, ts);
    if id != st.access_id || auth != expected {
        return Err(unauthorized(
            "Access Denied: Signature data did not match expected result",
        ));
    }
    Ok(())
}

/// `resultStart` / `resultLimit`, or the 400 TC answers.
pub(super) fn paging(req: &SimRequest) -> Result<(usize, usize), SimResponse> {
    let start = match req.param("resultStart") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| error(400, "0x1001", "resultStart must be a non-negative integer"))?,
    };
    let limit = match req.param("resultLimit") {
        None => 100,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_RESULT_LIMIT).contains(&n) => n,
            _ => {
                return Err(error(
                    400,
                    "0x1001",
                    "resultLimit must be between 1 and 10000",
                ))
            }
        },
    };
    Ok((start, limit))
}

pub(super) fn next_link(st: &State, req: &SimRequest, next_start: usize) -> String {
    let base = st
        .next_base
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .or_else(|| st.base.get().cloned())
        .unwrap_or_default();
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some("resultStart"))
        .map(str::to_string)
        .collect();
    parts.push(format!("resultStart={next_start}"));
    format!("{base}{path}?{}", parts.join("&"))
}

#[derive(Clone, Copy)]
enum SortKey {
    LastModified,
    DateAdded,
    Id,
    Summary,
    OwnerName,
    Rating,
    Confidence,
    ThreatAssessScore,
    TypeName,
}

fn parse_sorting(s: &str) -> Result<Vec<(SortKey, bool)>, SimResponse> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let key = match words[i].to_ascii_lowercase().as_str() {
            "lastmodified" => SortKey::LastModified,
            "dateadded" => SortKey::DateAdded,
            "id" => SortKey::Id,
            "summary" => SortKey::Summary,
            "ownername" => SortKey::OwnerName,
            "rating" => SortKey::Rating,
            "confidence" => SortKey::Confidence,
            "threatassessscore" => SortKey::ThreatAssessScore,
            "typename" => SortKey::TypeName,
            other => {
                return Err(error(
                    400,
                    "0x1001",
                    &format!("Invalid sorting field: {other}"),
                ))
            }
        };
        i += 1;
        let mut desc = false;
        if let Some(w) = words.get(i) {
            match w.to_ascii_lowercase().as_str() {
                "asc" | "nullsfirst" | "nullslast" => i += 1,
                "desc" => {
                    desc = true;
                    i += 1
                }
                _ => {}
            }
        }
        out.push((key, desc));
    }
    Ok(out)
}

fn compare(store: &Store, a: &Row, b: &Row, keys: &[(SortKey, bool)]) -> std::cmp::Ordering {
    for (k, desc) in keys {
        let o = match k {
            SortKey::LastModified => a.last_modified.cmp(&b.last_modified),
            SortKey::DateAdded => a.date_added.cmp(&b.date_added),
            SortKey::Id => a.id.cmp(&b.id),
            SortKey::Summary => a.summary(store).cmp(&b.summary(store)),
            SortKey::OwnerName => store.owners.name(a.owner).cmp(store.owners.name(b.owner)),
            SortKey::Rating => a.rating_centi.cmp(&b.rating_centi),
            SortKey::Confidence => a.confidence.cmp(&b.confidence),
            SortKey::ThreatAssessScore => a.threat_assess.cmp(&b.threat_assess),
            SortKey::TypeName => store.types.name(a.ty).cmp(store.types.name(b.ty)),
        };
        let o = if *desc { o.reverse() } else { o };
        if o.is_ne() {
            return o;
        }
    }
    a.id.cmp(&b.id)
}

/// Splits a keyset page query `(<inner>) AND id > N` into its inner query and N, when the
/// parentheses around `inner` are one group (quoted strings may hold parentheses).
fn keyset_parts(tql: &str) -> Option<(&str, i64)> {
    let (head, n) = tql.rsplit_once(") AND id > ")?;
    let n: i64 = n.trim().parse().ok()?;
    let inner = head.strip_prefix('(')?;
    let (mut depth, mut quoted, mut escaped) = (0i32, false, false);
    for c in inner.chars() {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => quoted = !quoted,
            (false, _, '(') => depth += 1,
            (false, _, ')') => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            _ => {}
        }
    }
    (depth == 0 && !quoted).then_some((inner, n))
}

fn selection(st: &State, store: &Store, req: &SimRequest) -> Result<Arc<Vec<u32>>, SimResponse> {
    let tql = req.param("tql").unwrap_or("");
    let sorting = req.param("sorting").unwrap_or("");
    let owner = req.param("owner").unwrap_or("");
    // Keyset pages re-evaluate nothing: the inner query's result is cached and cut at the key,
    // which means the same as evaluating `(<inner>) AND id > N` (the parser agrees, see tests).
    if let Some((inner, after)) = keyset_parts(tql) {
        if tql_eval::parse(inner, now_epoch()).is_ok() {
            let all = select(st, store, inner, sorting, owner)?;
            let id_of = |p: &u32| store.rows[*p as usize].as_ref().map_or(i64::MIN, |r| r.id);
            let by_id = matches!(parse_sorting(sorting)?.as_slice(), [(SortKey::Id, false)]);
            let kept: Vec<u32> = if by_id {
                all[all.partition_point(|p| id_of(p) <= after)..].to_vec()
            } else {
                all.iter().copied().filter(|p| id_of(p) > after).collect()
            };
            return Ok(Arc::new(kept));
        }
    }
    select(st, store, tql, sorting, owner)
}

fn select(
    st: &State,
    store: &Store,
    tql: &str,
    sorting: &str,
    owner: &str,
) -> Result<Arc<Vec<u32>>, SimResponse> {
    let key = (tql.to_string(), sorting.to_string(), owner.to_string());
    if let Some(hit) = st.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(hit.clone());
    }
    let query = tql_eval::parse(&key.0, now_epoch()).map_err(|e| {
        error(
            400,
            "0x2001",
            &format!("Syntax error(s) found with your TQL query. {e}"),
        )
    })?;
    let keys = parse_sorting(&key.1)?;
    st.evaluations.fetch_add(1, Ordering::SeqCst);
    let mut positions: Vec<u32> = store
        .rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
        .filter(|(_, row)| key.2.is_empty() || store.owners.name(row.owner) == key.2)
        .filter(|(_, row)| query.matches(&RowRef { row, store }))
        .map(|(i, _)| i as u32)
        .collect();
    positions.sort_by(
        |a, b| match (&store.rows[*a as usize], &store.rows[*b as usize]) {
            (Some(x), Some(y)) => compare(store, x, y, &keys),
            _ => std::cmp::Ordering::Equal,
        },
    );
    let positions = Arc::new(positions);
    let mut cache = st.cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= 16 {
        cache.clear();
    }
    cache.insert(key, positions.clone());
    Ok(positions)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TagOut<'a> {
    id: u32,
    name: &'a str,
    last_used: String,
}

#[derive(Serialize)]
struct TagsOut<'a> {
    data: Vec<TagOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndicatorOut<'a> {
    id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_id: Option<i64>,
    owner_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    date_added: Option<String>,
    web_link: Cow<'a, str>,
    legacy_link: String,
    #[serde(rename = "type")]
    type_name: &'a str,
    last_modified: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rating: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    summary: Cow<'a, str>,
    private_flag: bool,
    active: bool,
    active_locked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    whois_active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    md5: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha1: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<TagsOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threat_assess_score: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threat_assess_rating: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threat_assess_confidence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threat_assess_score_observed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threat_assess_score_false_positive: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cal_score: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    false_positives: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_false_positive: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    false_positive_reported_by_user: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_date_expires: Option<String>,
    observations: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_observed: Option<String>,
}

#[derive(Serialize)]
struct Envelope<T: Serialize> {
    data: T,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

pub(super) fn envelope<T: Serialize>(
    data: T,
    count: Option<usize>,
    next: Option<String>,
) -> SimResponse {
    let body = serde_json::to_vec(&Envelope {
        data,
        status: "Success",
        count,
        next,
    })
    .unwrap_or_default();
    SimResponse {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body,
    }
}

/// Form encoding as TC's `legacyLink` shows it (`badguy%40bad.com`, `Demo+Organization`).
const LEGACY_LINK_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'*');

fn form_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, LEGACY_LINK_SET)
        .to_string()
        .replace("%20", "+")
}

fn render<'a>(store: &'a Store, row: &'a Row, base: &str, fields: &[&str]) -> IndicatorOut<'a> {
    let extra = row.extra.as_deref();
    let want = |f: &str| fields.iter().any(|x| x.eq_ignore_ascii_case(f));
    let web_link = match extra.and_then(|e| e.web_link.as_deref()) {
        Some(w) => Cow::Borrowed(w),
        None => Cow::Owned(format!("{base}/#/details/indicators/{}/overview", row.id)),
    };
    let ta = from_i32(row.threat_assess);
    let fp = from_i32(row.false_positives).unwrap_or(0);
    let type_name = store.types.name(row.ty);
    let owner_name = store.owners.name(row.owner);
    let summary = row.summary(store);
    let kind = type_name.to_ascii_lowercase();
    let legacy_link = format!(
        "{base}/auth/indicators/details/{kind}.xhtml?{kind}={}&owner={}",
        form_encode(&summary),
        form_encode(owner_name)
    );
    let last_modified = time_str(row.last_modified);
    let host = type_name == "Host";
    let observed = store.observed.get(&row.id).copied();
    IndicatorOut {
        id: row.id,
        owner_id: (row.owner_id != NONE_I64).then_some(row.owner_id),
        owner_name,
        date_added: (row.date_added != NONE_I64).then(|| time_str(row.date_added)),
        web_link,
        legacy_link,
        type_name,
        rating: row.rating(),
        confidence: from_i32(row.confidence),
        description: extra.and_then(|e| e.description.as_deref()),
        summary,
        private_flag: false,
        active: row.active,
        active_locked: false,
        ip: row.ip.as_deref(),
        host_name: row.host.as_deref(),
        dns_active: host.then_some(false),
        whois_active: host.then_some(false),
        md5: row.md5.as_deref(),
        sha1: row.sha1.as_deref(),
        sha256: row.sha256.as_deref(),
        tags: want("tags").then(|| TagsOut {
            data: row
                .tags
                .iter()
                .map(|t| TagOut {
                    id: *t + 1,
                    name: store.tags.name(*t),
                    last_used: last_modified.clone(),
                })
                .collect(),
        }),
        threat_assess_score: want("threatAssess").then(|| ta.unwrap_or(0)),
        threat_assess_rating: want("threatAssess").then(|| row.rating().unwrap_or(0.0)),
        threat_assess_confidence: want("threatAssess").then_some(0.0),
        threat_assess_score_observed: want("threatAssess").then_some(0),
        threat_assess_score_false_positive: want("threatAssess").then_some(0),
        cal_score: want("threatAssess").then(|| ta.unwrap_or(0)),
        false_positives: want("falsePositives").then_some(fp),
        last_false_positive: (want("falsePositives") && fp > 0).then(|| last_modified.clone()),
        false_positive_reported_by_user: want("falsePositives").then_some(false),
        // The field group holds externalDateAdded and externalLastModified too; the simulator
        // keeps only the expiry, and TC leaves unset dates out.
        external_date_expires: row
            .expires()
            .filter(|_| want("externalDates"))
            .map(time_str),
        observations: want("observations").then(|| observed.map_or(0, |o| o.0)),
        last_observed: want("observations")
            .then(|| observed.map(|o| time_str(o.1)))
            .flatten(),
        last_modified,
    }
}

fn list(st: &State, req: &SimRequest) -> SimResponse {
    if req
        .param("tql")
        .is_some_and(|t| t.to_ascii_lowercase().contains("externaldateexpires"))
    {
        st.expiry_queries.fetch_add(1, Ordering::SeqCst);
    }
    let (start, limit) = match paging(req) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let heavy = *st.heavy_pages.lock().unwrap_or_else(|e| e.into_inner());
    match heavy {
        Some(HeavyPages::Status(max, status)) if limit > max => {
            return error(
                status,
                "0x1001",
                "The query timed out; try a smaller resultLimit or a narrower query",
            )
        }
        Some(HeavyPages::Stall(max, d)) if limit > max => std::thread::sleep(d),
        _ => {}
    }
    let store = st.store.read().unwrap_or_else(|e| e.into_inner());
    let sel = match selection(st, &store, req) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let from = if start > 0 {
        start.saturating_sub(st.overlap.load(Ordering::SeqCst))
    } else {
        0
    };
    let end = start.saturating_add(limit).min(sel.len());
    let fields = req.params("fields");
    let base = st.base.get().cloned().unwrap_or_default();
    let data: Vec<IndicatorOut> = sel
        .get(from.min(end)..end)
        .unwrap_or(&[])
        .iter()
        .filter_map(|p| store.rows[*p as usize].as_ref())
        .map(|row| render(&store, row, &base, &fields))
        .collect();
    let next = (end < sel.len()).then(|| next_link(st, req, end));
    let count = (start == 0 && req.param("count") == Some("true")).then_some(sel.len());
    let patch = st
        .record_patch
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let strings = st.ids_as_strings.load(Ordering::SeqCst);
    if patch.is_none() && !strings {
        return envelope(data, count, next);
    }
    let mut rows = serde_json::to_value(&data).unwrap_or_default();
    for row in rows.as_array_mut().into_iter().flatten() {
        let id = row.get("id").and_then(serde_json::Value::as_i64);
        let Some(o) = row.as_object_mut() else {
            continue;
        };
        if let Some((pid, serde_json::Value::Object(fields))) = &patch {
            if id == Some(*pid) {
                for (k, v) in fields {
                    if v.is_null() {
                        o.remove(k);
                    } else {
                        o.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        if strings {
            for k in ["id", "ownerId"] {
                if let Some(n) = o.get(k).and_then(serde_json::Value::as_i64) {
                    o.insert(k.into(), serde_json::json!(n.to_string()));
                }
            }
        }
    }
    envelope(rows, count, next)
}

/// `PUT /v3/indicators/{id}?fields=observations` with `{"observations": n}` (TC 7.8+): adds n
/// observations and answers the indicator with its counts (or, with
/// [`TcSim::set_observation_answer_read_only`], the documented read-only shape). A body with any
/// other field, or a count that is not a whole number from 1, answers 400; an unknown id 404;
/// [`TcSim::set_observations_refused`] 403.
fn observe(st: &State, req: &SimRequest, id: &str) -> SimResponse {
    if st.observations_refused.load(Ordering::SeqCst) {
        return error(
            403,
            "0x1003",
            "The user is not permitted to report observations and false positives",
        );
    }
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
        return error(400, "0x1001", "The request body is not valid JSON");
    };
    let Some(fields) = body.as_object() else {
        return error(400, "0x1001", "The request body must be an object");
    };
    if let Some(other) = fields.keys().find(|k| *k != "observations") {
        return error(
            400,
            "0x1001",
            &format!("Field {other} is not supported by this simulator's observation route"),
        );
    }
    let Some(n) = fields
        .get("observations")
        .and_then(serde_json::Value::as_i64)
        .filter(|n| *n >= 1)
    else {
        return error(
            400,
            "0x1001",
            "observations must be a whole number of at least 1",
        );
    };
    let Ok(id) = id.parse::<i64>() else {
        return error(404, "0x1004", "The requested resource was not found");
    };
    let moves = st.observation_moves_last_modified.load(Ordering::SeqCst);
    let scores = st.observation_raises_score.load(Ordering::SeqCst);
    let mut store = st.store.write().unwrap_or_else(|e| e.into_inner());
    let Some(pos) = store.by_id.get(&id).copied() else {
        return error(404, "0x1004", "The requested resource was not found");
    };
    let now = now_epoch();
    let entry = store.observed.entry(id).or_insert((0, now));
    entry.0 += n;
    entry.1 = now;
    if moves || scores {
        if let Some(row) = store.rows[pos as usize].as_mut() {
            if moves {
                row.last_modified = now;
            }
            if scores {
                let old = from_i32(row.threat_assess).unwrap_or(0);
                row.threat_assess = (old + 10 * n).min(1000) as i32;
            }
        }
        st.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    let Some(row) = store.get(id) else {
        return error(404, "0x1004", "The requested resource was not found");
    };
    let base = st.base.get().cloned().unwrap_or_default();
    let data = if st.observation_answer_read_only.load(Ordering::SeqCst) {
        let (count, last) = store.observed.get(&id).copied().unwrap_or((0, now));
        serde_json::json!({
            "type": store.types.name(row.ty),
            "threatAssessRating": row.rating().unwrap_or(0.0),
            "threatAssessConfidence": 0.0,
            "threatAssessScore": from_i32(row.threat_assess).unwrap_or(0),
            "threatAssessScoreObserved": 0,
            "threatAssessScoreFalsePositive": 0,
            "summary": row.summary(&store),
            "observations": count,
            "lastObserved": time_str(last),
            "falsePositives": from_i32(row.false_positives).unwrap_or(0),
            "falsePositiveReportedByUser": false,
            "trackedUsers": {"lab-api-user": {"observations": count, "lastObserved": time_str(last), "falsePositives": 0}},
        })
    } else {
        serde_json::to_value(render(&store, row, &base, &["observations"])).unwrap_or_default()
    };
    SimResponse::json(
        200,
        &serde_json::json!({"data": data, "message": "Updated", "status": "Success"}),
    )
}

/// `/v3/indicators/deleted`: only the API user's Organization unless `owner=` names another
/// owner, and records in the documented shape (no id, no deletion date) with a `count`.
fn deleted(st: &State, req: &SimRequest) -> SimResponse {
    let Some(since) = req
        .param("deletedSince")
        .and_then(|s| parse_date(s, now_epoch()))
    else {
        return error(400, "0x1001", "deletedSince is required and must be a date");
    };
    let (start, limit) = match paging(req) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let ty = req.param("type");
    let owner = req.param("owner").unwrap_or(st.organization.as_str());
    let store = st.store.read().unwrap_or_else(|e| e.into_inner());
    let all: Vec<&DeletedIndicator> = store
        .deleted
        .iter()
        .filter(|(d, t)| {
            *t >= since
                && ty.is_none_or(|x| x.eq_ignore_ascii_case(&d.type_name))
                && owner == d.owner_name
        })
        .map(|(d, _)| d)
        .collect();
    let end = start.saturating_add(limit).min(all.len());
    let data: Vec<serde_json::Value> = all
        .get(start.min(end)..end)
        .unwrap_or(&[])
        .iter()
        .map(|d| {
            serde_json::json!({"ownerName": d.owner_name, "dateAdded": d.date_added,
                "type": d.type_name, "summary": d.summary})
        })
        .collect();
    let next = (end < all.len()).then(|| next_link(st, req, end));
    // The documented answer carries `count` though nobody asked for it.
    envelope(data, Some(all.len()), next)
}

/// The permission fields of a documented owner record (all `FULL` here).
const OWNER_PERMISSIONS: [&str; 23] = [
    "permIndicator",
    "permGroup",
    "permPost",
    "permVictim",
    "permAttribute",
    "permApps",
    "permUsers",
    "permSecurityLabel",
    "permTag",
    "permAttributeType",
    "permSettings",
    "permMembers",
    "permCopyData",
    "permInvite",
    "permTask",
    "permCaseTag",
    "permArtifact",
    "permComment",
    "permTimeline",
    "permWorkflowTemplate",
    "permPublish",
    "permPlaybooksExecute",
    "permPlaybooks",
];

fn owners(st: &State, req: &SimRequest) -> SimResponse {
    let (start, limit) = match paging(req) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let store = st.store.read().unwrap_or_else(|e| e.into_inner());
    let all: Vec<serde_json::Value> = store
        .owners
        .names
        .iter()
        .map(|n| {
            let id = store.owner_id(n);
            let kind = if *n == st.organization {
                "Organization"
            } else if n.contains("Community") {
                "Community"
            } else {
                "Source"
            };
            let mut o = serde_json::json!({"id": id, "name": n, "type": kind,
                "ownerRole": if kind == "Organization" { "Organization Administrator" } else { "Director" }});
            for p in OWNER_PERMISSIONS {
                o[p] = serde_json::json!("FULL");
            }
            o
        })
        .collect();
    let end = start.saturating_add(limit).min(all.len());
    let next = (end < all.len()).then(|| next_link(st, req, end));
    envelope(&all[start.min(end)..end], None, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One HMAC-signed request to the simulator: (status, JSON body).
    fn signed(sim: &TcSim, method: &str, target: &str, body: &str) -> (u16, serde_json::Value) {
        let opts = TcSimOptions::default();
        let ts = now_epoch();
        let auth = hmac_authorization(
            &opts.access_id,
            &Secret::new(opts.secret_key.clone()),
            target,
            method,
            ts,
        );
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{target}", sim.server.url());
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(url)
            .header("Authorization", auth)
            .header("Timestamp", ts.to_string())
            .header("Content-Type", "application/json")
            .body(body.as_bytes().to_vec())
            .unwrap();
        let mut resp = agent.run(req).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or_default())
    }

    #[test]
    fn observations_are_counted_checked_and_optionally_move_last_modified() {
        let sim = TcSim::start(TcSimOptions::default()).unwrap();
        sim.load(crate::sim::dataset::generate(3, 5));
        let id = sim.snapshot()[0].id;
        let before = sim.get(id).unwrap().last_modified;
        let path = format!("/api/v3/indicators/{id}?fields=observations");
        let (status, v) = signed(&sim, "PUT", &path, r#"{"observations": 2}"#);
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            (v["status"].clone(), v["data"]["observations"].clone()),
            ("Success".into(), 2.into())
        );
        assert!(v["data"]["lastObserved"].is_string() && v["data"]["id"] == id);
        assert_eq!(
            sim.get(id).unwrap().last_modified,
            before,
            "lastModified stays by default"
        );
        signed(&sim, "PUT", &path, r#"{"observations": 1}"#);
        assert_eq!(sim.observations(id), 3);
        // Read back with the indicator, and by TQL.
        let list = format!("/api/v3/indicators?tql=id%20IN%20({id})&fields=observations");
        let (status, v) = signed(&sim, "GET", &list, "");
        assert_eq!(
            (status, v["data"][0]["observations"].clone()),
            (200, 3.into())
        );
        // Anything but a positive count of observations is refused; unknown ids are 404.
        for bad in [
            r#"{"observations": 1, "rating": 5}"#,
            r#"{"observations": 0}"#,
            "[]",
            "x",
        ] {
            assert_eq!(signed(&sim, "PUT", &path, bad).0, 400, "{bad}");
        }
        let unknown = "/api/v3/indicators/999999?fields=observations";
        assert_eq!(
            signed(&sim, "PUT", unknown, r#"{"observations": 1}"#).0,
            404
        );
        // Signed for another method, or not at all: 401, as a read would be.
        let (status, _) = signed(&sim, "GET", &path, r#"{"observations": 1}"#);
        assert_eq!(
            status, 404,
            "GET of one indicator is not a route of the simulator"
        );
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let bare = ureq::http::Request::builder()
            .method("PUT")
            .uri(format!("{}{path}", sim.server.url()))
            .body(br#"{"observations": 1}"#.to_vec())
            .unwrap();
        assert_eq!(agent.run(bare).unwrap().status().as_u16(), 401);
        assert_eq!(sim.observations(id), 3);
        sim.set_observations_refused(true);
        assert_eq!(signed(&sim, "PUT", &path, r#"{"observations": 1}"#).0, 403);
        sim.set_observations_refused(false);
        sim.set_observation_moves_last_modified(true);
        sim.set_observation_answer_read_only(true);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (_, v) = signed(&sim, "PUT", &path, r#"{"observations": 1}"#);
        assert!(
            v["data"].get("id").is_none() && v["data"]["observations"] == 4,
            "{v}"
        );
        assert_ne!(
            sim.get(id).unwrap().last_modified,
            before,
            "the switch moves it"
        );
        let score = sim.get(id).unwrap().threat_assess_score.unwrap_or(0);
        sim.set_observation_raises_score(true);
        signed(&sim, "PUT", &path, r#"{"observations": 2}"#);
        assert_eq!(
            sim.get(id).unwrap().threat_assess_score,
            Some((score + 20).min(1000))
        );
        assert!(sim.delete(id));
        assert_eq!(sim.observations(id), 0);
    }

    #[test]
    fn expiry_is_served_with_external_dates_and_selected_by_tql() {
        let sim = TcSim::start(TcSimOptions::default()).unwrap();
        let host = |id: i64, expires: Option<&str>| Indicator {
            id,
            owner_name: "Demo Organization".into(),
            type_name: "Host".into(),
            summary: format!("h{id}.example"),
            host_name: Some(format!("h{id}.example")),
            last_modified: "2026-01-01T00:00:00Z".into(),
            external_date_expires: expires.map(str::to_string),
            ..Indicator::default()
        };
        sim.insert(host(1, Some("2026-02-01T00:00:00Z")));
        sim.insert(host(2, None));
        sim.insert(host(3, Some("2026-03-01T00:00:00Z")));
        assert_eq!(
            sim.get(1).unwrap().external_date_expires.as_deref(),
            Some("2026-02-01T00:00:00Z")
        );
        let store = sim.state.store.read().unwrap();
        let req = |tql: &str, fields: &[&str]| {
            let mut query = vec![("tql".to_string(), tql.to_string())];
            query.extend(fields.iter().map(|f| ("fields".to_string(), f.to_string())));
            SimRequest {
                method: "GET".into(),
                target: String::new(),
                path: "/api/v3/indicators".into(),
                query,
                headers: Vec::new(),
                body: Vec::new(),
            }
        };
        let ids = |tql: &str| -> Vec<i64> {
            selection(&sim.state, &store, &req(tql, &[]))
                .unwrap()
                .iter()
                .map(|p| store.rows[*p as usize].as_ref().unwrap().id)
                .collect()
        };
        assert_eq!(
            ids(
                r#"externalDateExpires > "2026-01-15T00:00:00Z" AND externalDateExpires <= "2026-02-01T00:00:00Z""#
            ),
            vec![1]
        );
        assert_eq!(ids("externalDateExpires IS NULL"), vec![2]);
        let row = store.get(1).unwrap();
        let with = serde_json::to_value(render(&store, row, "", &["externalDates"])).unwrap();
        assert_eq!(with["externalDateExpires"], "2026-02-01T00:00:00Z");
        let without = serde_json::to_value(render(&store, row, "", &["tags"])).unwrap();
        assert!(without.get("externalDateExpires").is_none());
    }

    #[test]
    fn keyset_queries_split_only_around_one_outer_group() {
        assert_eq!(
            keyset_parts(r#"(typeName IN ("Host")) AND id > 42"#),
            Some((r#"typeName IN ("Host")"#, 42))
        );
        assert_eq!(
            keyset_parts(r#"(summary = "a) AND (b" OR rating > 1) AND id > 7"#),
            Some((r#"summary = "a) AND (b" OR rating > 1"#, 7))
        );
        assert_eq!(keyset_parts(r#"(a = 1) AND (b = 2) AND id > 7"#), None);
        assert_eq!(keyset_parts("rating > 1 AND id > 7"), None);
        assert_eq!(keyset_parts("(rating > 1) AND id > x"), None);
    }

    #[test]
    fn a_keyset_page_selects_what_evaluating_it_whole_selects() {
        let sim = TcSim::start(TcSimOptions::default()).unwrap();
        sim.load(crate::sim::dataset::generate(300, 3));
        let store = sim.state.store.read().unwrap();
        let inner = r#"typeName IN ("Address", "Host") AND confidence >= 20"#;
        for after in [0, 57, 150, 299, 1000] {
            let tql = format!("({inner}) AND id > {after}");
            let req = |tql: &str| SimRequest {
                method: "GET".into(),
                target: String::new(),
                path: "/api/v3/indicators".into(),
                query: vec![
                    ("tql".into(), tql.to_string()),
                    ("sorting".into(), "id asc".into()),
                ],
                headers: Vec::new(),
                body: Vec::new(),
            };
            let cut = selection(&sim.state, &store, &req(&tql)).unwrap();
            // The same query with its outer group broken cannot be split: evaluated whole.
            let whole_tql = format!("{inner} AND id > {after}");
            let whole = selection(&sim.state, &store, &req(&whole_tql)).unwrap();
            assert_eq!(cut, whole, "after {after}");
        }
    }
}
