//! A pull of indicators, page by page: keyset paging, repeats dropped, pages shrunk when TC
//! cannot serve them in time, unreadable records ending the pull.

use crate::compact::IdSet;
use crate::error::{Error, Result};
use crate::http::{classify, Response, RetryPolicy, Tries, Verdict};
use crate::tc::answer::{parse_envelope_borrowed, Envelope, SVC};
use crate::tc::client::TcClient;
use crate::tc::model::Indicator;

/// Smallest page a pull shrinks to when TC cannot serve larger ones in time.
pub const MIN_PAGE_SIZE: u32 = 100;

/// Timeouts one page may meet, whatever its sizes, before the pull stops: a TC that stopped
/// answering costs three answer timeouts, not one per size down to [`MIN_PAGE_SIZE`].
pub const PAGE_TIMEOUTS: u32 = 3;

/// Pages of indicators, fetched lazily: at most one page is held, ids seen so far are kept
/// to drop repeats, and indicators of types other than Address / File / Host are dropped.
///
/// A page TC cannot serve in time (a timeout, 408 or 5xx) is asked for again at half the size,
/// down to [`MIN_PAGE_SIZE`], before the shared retry rule gets its full say; a timeout is not
/// asked for again at the same size above it, and [`PAGE_TIMEOUTS`] end the pull. A record that
/// cannot be read ends the pull after the readable records of its page, with an error: the
/// caller must treat the pull as incomplete. After an error the iterator ends.
pub struct Pages<'a> {
    client: &'a TcClient,
    tql: String,
    page_size: u32,
    last_id: Option<i64>,
    more: bool,
    pending: Option<Error>,
    seen: IdSet,
    dropped: u64,
    duplicates: u64,
    pages: u64,
}

/// How a failed page fetch is handled.
enum Failure {
    /// TC could not serve the page in time: a smaller page may work.
    Overload,
    /// Worth more attempts at the same size (429, a refused or dropped connection).
    Transient,
    Final,
}

/// The shared retry rule, with "too slow" (a timeout, 408, 5xx) told apart from "not now".
fn failure(e: &Error) -> Failure {
    match e {
        Error::Transport(e) if e.failure.timed_out() => Failure::Overload,
        Error::Transport(e) if !e.failure.is_final() => Failure::Transient,
        Error::Status { status: 429, .. } => Failure::Transient,
        Error::Status { status, .. } if matches!(classify(*status), Verdict::Retry(_)) => {
            Failure::Overload
        }
        _ => Failure::Final,
    }
}

impl<'a> Pages<'a> {
    pub(super) fn new(client: &'a TcClient, tql: &str) -> Pages<'a> {
        Pages {
            client,
            tql: tql.to_string(),
            page_size: client.page_size(),
            last_id: None,
            more: true,
            pending: None,
            seen: IdSet::new(),
            dropped: 0,
            duplicates: 0,
            pages: 0,
        }
    }

    /// Indicators dropped because their type is not Address, File or Host (user TQL).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Indicators dropped because an earlier page already delivered their id.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Pages fetched so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The page size in use (smaller than configured after TC failed to serve a page).
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    fn get_page(&mut self) -> Result<Response> {
        let tql = match self.last_id {
            None => self.tql.clone(),
            Some(id) => format!("({}) AND id > {id}", self.tql),
        };
        let base = self.client.policy();
        // Timeouts this page met at larger sizes.
        let mut timeouts = 0;
        loop {
            let url = self.client.page_url(&tql, self.page_size);
            let policy = RetryPolicy {
                max_timeouts: base.max_timeouts.min(PAGE_TIMEOUTS - timeouts),
                ..base.clone()
            };
            if self.page_size <= MIN_PAGE_SIZE {
                return self.client.get_with(&url, &policy, &mut Tries::default());
            }
            // A first look of two attempts, one of which may time out: a page TC cannot serve
            // in time is asked for smaller rather than again.
            let look = RetryPolicy {
                max_timeouts: 1,
                ..policy.clone()
            };
            let mut tries = Tries::default().pausing_after(2);
            let err = match self.client.get_with(&url, &look, &mut tries) {
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            match failure(&err) {
                Failure::Overload => {
                    timeouts += tries.timed_out();
                    if timeouts >= PAGE_TIMEOUTS {
                        return Err(err);
                    }
                    let smaller = (self.page_size / 2).max(MIN_PAGE_SIZE);
                    log::warn!(
                        "ThreatConnect could not serve a page of {} indicators ({err}); asking for {smaller} per page from here on",
                        self.page_size
                    );
                    self.page_size = smaller;
                }
                Failure::Transient => {
                    // The same call goes on: its attempts count on from the first look's.
                    tries.resume();
                    return self.client.get_with(&url, &policy, &mut tries);
                }
                Failure::Final => return Err(err),
            }
        }
    }

    fn fetch(&mut self) -> Result<Vec<Indicator>> {
        let resp = self.get_page()?;
        let what = "GET /api/v3/indicators";
        // Records stay raw JSON text borrowed from the body until each is read: a page of
        // 10,000 as `serde_json::Value` trees would cost several times the body's size.
        let env: Envelope<&serde_json::value::RawValue> = parse_envelope_borrowed(&resp, what)?;
        self.pages += 1;
        let received = env.data.len();
        let more = env.next.as_deref().is_some_and(|n| !n.is_empty())
            || received as u64 >= u64::from(self.page_size);
        let mut out = Vec::with_capacity(received);
        let mut max_id: Option<i64> = None;
        let hide = self.client.leaves_out_observed();
        for (n, v) in env.data.into_iter().enumerate() {
            let problem = match serde_json::from_str::<Indicator>(v.get()) {
                Ok(mut ind) => match ind.unreadable() {
                    None => {
                        max_id = Some(max_id.map_or(ind.id, |m| m.max(ind.id)));
                        if ind.kind().is_none() {
                            self.dropped += 1;
                        } else if !self.seen.insert(ind.id) {
                            self.duplicates += 1;
                        } else {
                            ind.leave_out_observed = hide;
                            out.push(ind);
                        }
                        continue;
                    }
                    Some(why) if ind.id > 0 => format!("indicator {}: {why}", ind.id),
                    Some(why) => why.to_string(),
                },
                Err(e) => e.to_string(),
            };
            log::error!(
                "record {} of ThreatConnect page {} cannot be read: {problem}",
                n + 1,
                self.pages
            );
            self.pending.get_or_insert_with(|| Error::Protocol {
                service: SVC,
                request: what.into(),
                detail: format!(
                    "record {} of page {} cannot be read ({problem})",
                    n + 1,
                    self.pages
                ),
            });
        }
        self.more = self.pending.is_none()
            && more
            && max_id.is_some_and(|m| self.last_id.is_none_or(|last| m > last));
        if self.more {
            self.last_id = max_id;
        }
        Ok(out)
    }
}

impl Iterator for Pages<'_> {
    type Item = Result<Vec<Indicator>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            self.more = false;
            return Some(Err(e));
        }
        if !self.more {
            return None;
        }
        let page = self.fetch();
        if page.is_err() {
            self.more = false;
        }
        Some(page)
    }
}
