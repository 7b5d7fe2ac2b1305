//! The retry rule and the backoff, shared by both clients.
//!
//! Transport errors, 408, 429 (honouring `Retry-After`) and 5xx except 501 are retried; every
//! other status is final. An attempt that timed out is repeated once only by default (a
//! server that takes the request and never answers must not hold a run for `max_attempts`
//! timeouts). The wait before attempt n+1 is drawn at random from
//! `[0, min(base * 2^(n-1), max)]` ("full jitter"): the parallel Tanium writers that meet the
//! same 429 or outage together must not all come back at the same instant and meet it again.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why an attempt is worth repeating; the verdict carries it so the retry is logged with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The server answered a status that means "not now" (408, 429, 5xx except 501).
    Status(u16),
    /// The connection was refused, reset or dropped before a whole answer arrived.
    Transport,
    /// The server did not answer within the timeout.
    Timeout,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Status(s) => write!(f, "answered {s}"),
            Reason::Transport => f.write_str("connection failed"),
            Reason::Timeout => f.write_str("timed out"),
        }
    }
}

/// What to do with an attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: hand it to the caller.
    Ok,
    /// Transient: try again after a delay.
    Retry(Reason),
    /// Final error: hand it to the caller, never retry.
    DontRetry,
}

/// The retry rule for an answer, by its status alone.
pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Ok,
        408 | 429 => Verdict::Retry(Reason::Status(status)),
        501 => Verdict::DontRetry,
        500..=599 => Verdict::Retry(Reason::Status(status)),
        _ => Verdict::DontRetry,
    }
}

/// Lets tests and the benchmark replace real sleeping, so backoff costs no wall time there.
pub trait Sleep: Send + Sync {
    /// Waits for `d` (or pretends to).
    fn sleep(&self, d: Duration);
}

/// Sleeps for real.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSleep;

impl Sleep for RealSleep {
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// Records the delays it is asked for instead of waiting, so tests see the backoff for free.
#[cfg(any(test, feature = "sim"))]
#[derive(Debug, Default)]
pub struct RecordedSleep(std::sync::Mutex<Vec<Duration>>);

#[cfg(any(test, feature = "sim"))]
impl RecordedSleep {
    /// The delays asked for so far, in order.
    pub fn delays(&self) -> Vec<Duration> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

#[cfg(any(test, feature = "sim"))]
impl Sleep for RecordedSleep {
    fn sleep(&self, d: Duration) {
        if let Ok(mut v) = self.0.lock() {
            v.push(d);
        }
    }
}

/// Where the backoff takes its randomness from, so tests can fix what production draws.
pub trait Jitter: Send + Sync {
    /// A delay from zero up to `cap`, both included.
    fn draw(&self, cap: Duration) -> Duration;
}

/// Uniform in `[0, cap]`: what runs in production.
#[derive(Debug, Default, Clone, Copy)]
pub struct FullJitter;

impl Jitter for FullJitter {
    fn draw(&self, cap: Duration) -> Duration {
        let cap = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=cap))
    }
}

/// Always the cap: the plain capped exponential, so tests can name every delay.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoJitter;

impl Jitter for NoJitter {
    fn draw(&self, cap: Duration) -> Duration {
        cap
    }
}

/// How many times and how long to wait between attempts.
#[derive(Clone)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retry).
    pub max_attempts: u32,
    /// Attempts that may time out before the call gives up, at most `max_attempts`.
    pub max_timeouts: u32,
    /// Cap of the delay before the second attempt; doubles after that.
    pub base_delay: Duration,
    /// Largest delay between attempts, also the cap on `Retry-After`.
    pub max_delay: Duration,
    /// How waiting is done.
    pub sleeper: Arc<dyn Sleep>,
    /// Where each delay is drawn from, below its cap.
    pub jitter: Arc<dyn Jitter>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("max_timeouts", &self.max_timeouts)
            .field("base_delay", &self.base_delay)
            .field("max_delay", &self.max_delay)
            .finish()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_timeouts: 2,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            sleeper: Arc::new(RealSleep),
            jitter: Arc::new(FullJitter),
        }
    }
}

/// The attempts one logical call made so far. A call made in parts under different limits (a
/// first look with one or two attempts, then the rest) keeps one count, so its log lines read
/// `attempt n/N` with one N and the timeout limit holds for the whole call.
#[derive(Debug, Default, Clone)]
pub struct Tries {
    pub(super) made: u32,
    pub(super) timed_out: u32,
    pub(super) pause_after: Option<u32>,
    /// The wait before the next attempt and the line that announces it, when the call
    /// paused between two attempts (or is about to make the next).
    pub(super) next: Option<(Duration, String)>,
}

impl Tries {
    /// Hands the call back once `n` attempts in all were made (the policy's `max_attempts` is
    /// still the N its log lines count to).
    pub fn pausing_after(mut self, n: u32) -> Tries {
        self.pause_after = Some(n);
        self
    }

    /// Lets the call go on to the policy's limits.
    pub fn resume(&mut self) {
        self.pause_after = None;
    }

    /// Lets the call make one more attempt, then hand back again.
    pub fn allow_one_more(&mut self) {
        self.pause_after = Some(self.made + 1);
    }

    /// The call handed back with an attempt still to make (it paused; it did not give up).
    pub fn pending(&self) -> bool {
        self.next.is_some()
    }

    /// Attempts that timed out so far.
    pub fn timed_out(&self) -> u32 {
        self.timed_out
    }
}

impl RetryPolicy {
    /// Four attempts (two of them timed out at most), 100 ms doubling, no jitter, with
    /// `sleeper` doing (or recording) the waits:
    /// what the client tests use to check the backoff without spending it.
    #[cfg(any(test, feature = "sim"))]
    pub fn quick(sleeper: Arc<dyn Sleep>) -> Self {
        RetryPolicy {
            max_attempts: 4,
            max_timeouts: 2,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(60),
            sleeper,
            jitter: Arc::new(NoJitter),
        }
    }

    /// The most the backoff waits before attempt `attempt + 1` (`attempt`, 1-based, just failed).
    pub fn cap(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Delay before attempt `attempt + 1`: the server's `Retry-After` when it sent one (it
    /// knows when it will have room; capped at `max_delay`), else a draw below [`Self::cap`].
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(ra) => ra.min(self.max_delay),
            None => self.jitter.draw(self.cap(attempt)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_follows_the_retry_rule() {
        for s in [200, 201, 204] {
            assert_eq!(classify(s), Verdict::Ok);
        }
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify(s), Verdict::Retry(Reason::Status(s)), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422, 501] {
            assert_eq!(classify(s), Verdict::DontRetry, "{s}");
        }
        assert_eq!(Reason::Status(503).to_string(), "answered 503");
    }

    fn policy(jitter: Arc<dyn Jitter>) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            max_timeouts: 2,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            sleeper: Arc::new(RealSleep),
            jitter,
        }
    }

    #[test]
    fn backoff_doubles_and_caps_and_honours_retry_after() {
        let p = policy(Arc::new(NoJitter));
        assert_eq!(p.delay(1, None), Duration::from_millis(100));
        assert_eq!(p.delay(2, None), Duration::from_millis(200));
        assert_eq!(p.delay(3, None), Duration::from_millis(400));
        assert_eq!(p.delay(9, None), Duration::from_secs(1));
        assert_eq!(
            p.delay(1, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(120))),
            Duration::from_secs(1)
        );
    }

    struct Half;

    impl Jitter for Half {
        fn draw(&self, cap: Duration) -> Duration {
            cap / 2
        }
    }

    #[test]
    fn jitter_draws_below_the_cap_and_never_touches_retry_after() {
        let fixed = policy(Arc::new(Half));
        assert_eq!(fixed.delay(3, None), Duration::from_millis(200));
        assert_eq!(
            fixed.delay(3, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        let full = policy(Arc::new(FullJitter));
        let draws: Vec<Duration> = (0..200).map(|_| full.delay(4, None)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(800)));
        // Workers that failed together spread out instead of retrying in lockstep.
        let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
        assert!(distinct.len() > 150, "{}", distinct.len());
        assert_eq!(FullJitter.draw(Duration::ZERO), Duration::ZERO);
    }
}
