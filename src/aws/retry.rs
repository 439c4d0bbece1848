//! The one retry layer for EC2 calls (docs/aws.md, "Retries"). The SDK client is built
//! with its own retries off (`sdk::loader`), in production and in tests alike, so every
//! request continuum sends is one attempt of this layer:
//! - `retry`: throttling, 5xx and transport failures, exponential backoff with jitter,
//!   up to `attempts` tries;
//! - `retry_new`: the same, and also `*.NotFound` for up to `consistency` (EC2 is
//!   eventually consistent: an id created moments ago may be unknown to the next call).
//!   Used on calls that name an id continuum created.

use std::future::Future;
use std::time::{Duration, Instant};

use super::Ec2Error;

/// Backoff and limits of the retry layer (tests shorten them; the code is the same).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries of one call against transient errors.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
    /// How long a fresh id may stay unknown to EC2 (NotFound retried that long).
    pub consistency: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            base: Duration::from_millis(200),
            max: Duration::from_secs(20),
            // EC2's guidance: back off from a few seconds up to a few minutes.
            consistency: Duration::from_secs(180),
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry `n` (1-based), with jitter: never zero, never above `max`.
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1)));
        let cap = exp.min(self.max);
        let mut b = [0u8; 2];
        let jitter = if getrandom::fill(&mut b).is_ok() {
            f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
        } else {
            0.5
        };
        cap.mul_f64(0.5 + jitter / 2.0)
    }
}

/// Run `f` under `policy`, retrying transient failures.
pub async fn retry<T, F, Fut>(policy: RetryPolicy, mut f: F) -> Result<T, Ec2Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Ec2Error>>,
{
    let mut n = 0;
    loop {
        match f().await {
            Err(e) if e.is_transient() && n + 1 < policy.attempts => {
                n += 1;
                tracing::debug!(error = %e, attempt = n, "transient EC2 error; retrying");
                tokio::time::sleep(policy.delay(n)).await;
            }
            other => return other,
        }
    }
}

/// `retry`, and `*.NotFound` retried with backoff for up to `policy.consistency`: for
/// calls naming an id created moments ago (by this run or a recent one).
pub async fn retry_new<T, F, Fut>(policy: RetryPolicy, f: F) -> Result<T, Ec2Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Ec2Error>>,
{
    retry_unseen(policy, policy.consistency, f).await
}

/// `retry`, and `*.NotFound` retried for up to `window` (zero: NotFound at once).
pub async fn retry_unseen<T, F, Fut>(
    policy: RetryPolicy,
    window: Duration,
    mut f: F,
) -> Result<T, Ec2Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Ec2Error>>,
{
    let started = Instant::now();
    let mut n = 0;
    loop {
        match retry(policy, &mut f).await {
            Err(e) if e.is_not_found() && started.elapsed() < window => {
                n += 1;
                tracing::debug!(error = %e, attempt = n, "id not visible yet; retrying");
                let left = window.saturating_sub(started.elapsed());
                tokio::time::sleep(policy.delay(n).min(left.max(Duration::from_millis(1)))).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
            consistency: Duration::from_millis(200),
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
            consistency: Duration::from_secs(1),
        };
        for n in 1..10 {
            let d = p.delay(n);
            assert!(d >= Duration::from_millis(50), "{d:?}");
            assert!(d <= Duration::from_millis(500), "{d:?}");
        }
        assert!(p.delay(1) <= Duration::from_millis(100));
    }

    #[test]
    fn production_waits_for_fresh_ids_two_to_five_minutes() {
        let p = RetryPolicy::default();
        assert!(
            p.consistency >= Duration::from_secs(120) && p.consistency <= Duration::from_secs(300)
        );
    }

    #[tokio::test]
    async fn retry_gives_up_on_permanent_errors_at_once() {
        let mut calls = 0;
        let r: Result<(), _> = retry(RetryPolicy::default(), || {
            calls += 1;
            async {
                Err(Ec2Error::from_code(
                    "X",
                    Some(400),
                    "InvalidParameterValue",
                    "bad",
                ))
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn retry_retries_transient_errors() {
        let mut calls = 0;
        let r = retry(quick(4), || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(Ec2Error::from_code("X", Some(503), "Unavailable", "busy"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.ok(), Some(3));
    }

    #[tokio::test]
    async fn capacity_errors_are_not_retried() {
        let mut calls = 0;
        let r: Result<(), _> = retry_new(quick(8), || {
            calls += 1;
            async {
                Err(Ec2Error::from_code(
                    "RunInstances",
                    Some(500),
                    "InsufficientInstanceCapacity",
                    "none",
                ))
            }
        })
        .await;
        assert!(matches!(r, Err(Ec2Error::Capacity { .. })), "{r:?}");
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn not_found_is_retried_only_by_retry_new_and_only_for_the_window() {
        let nf = || async {
            Err::<(), _>(Ec2Error::from_code(
                "CreateRoute",
                Some(400),
                "InvalidRouteTableID.NotFound",
                "no such table",
            ))
        };
        let mut calls = 0;
        let r = retry(quick(8), || {
            calls += 1;
            nf()
        })
        .await;
        assert!(r.is_err() && calls == 1);
        let started = Instant::now();
        let mut calls = 0;
        let r = retry_new(quick(8), || {
            calls += 1;
            nf()
        })
        .await;
        assert!(matches!(r, Err(Ec2Error::NotFound { .. })));
        assert!(calls > 3, "{calls}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(2));
        // Visible after a while: the call succeeds.
        let mut calls = 0;
        let r = retry_new(quick(8), || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(Ec2Error::from_code(
                        "AuthorizeSecurityGroupIngress",
                        Some(400),
                        "InvalidGroup.NotFound",
                        "x",
                    ))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.ok(), Some(3));
    }
}
