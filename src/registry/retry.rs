//! Retries for the failures real registries and networks produce: connection errors, resets, truncated
//! bodies, 5xx and 429 (with the `Retry-After` of registries and of their token services). Every registry
//! request of a pull or push goes through here; what cannot get better (a refusal, a certificate this
//! machine does not trust, a name that does not exist) fails at the first attempt.

use std::future::Future;
use std::time::Duration;

/// Sets the first pause between attempts, in milliseconds, instead of 250: longer on a link that needs
/// it, 1 in tests that go through every attempt (as go-containerregistry's tests shorten theirs).
pub const BASE_DELAY_ENV: &str = "FERRY_RETRY_BASE_DELAY_MS";

/// How often and how patiently to retry. The defaults live here and nowhere else.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` ferry honours; a registry asking for more gets this much.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    pub fn standard() -> RetryPolicy {
        RetryPolicy {
            attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(15),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// The standard policy, with the first pause [`BASE_DELAY_ENV`] sets (when it is a number).
impl Default for RetryPolicy {
    fn default() -> Self {
        let base_delay = std::env::var(BASE_DELAY_ENV)
            .ok()
            .and_then(|ms| ms.trim().parse().ok())
            .map(Duration::from_millis);
        RetryPolicy {
            base_delay: base_delay.unwrap_or(RetryPolicy::standard().base_delay),
            ..RetryPolicy::standard()
        }
    }
}

/// What a failed attempt says about the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Permanent (not found, unauthorized, schema 1, ...): stop now.
    Fatal,
    /// Worth another attempt after the usual backoff.
    Transient,
    /// The server said when to come back.
    RetryAfter(Duration),
}

/// Implemented by errors that know whether they are worth retrying.
pub trait Classify {
    fn verdict(&self) -> Verdict;
}

impl RetryPolicy {
    /// The pause before attempt `attempt + 1` (counting from 1): exponential with full jitter, so that
    /// many parallel downloads failing together do not come back together.
    pub fn delay(&self, attempt: u32, verdict: Verdict) -> Duration {
        if let Verdict::RetryAfter(wanted) = verdict {
            return wanted.min(self.max_retry_after);
        }
        let ceiling = self
            .base_delay
            .saturating_mul(1 << attempt.min(16))
            .min(self.max_delay);
        ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// Runs `operation` until it succeeds, fails fatally, or runs out of attempts. `on_retry` hears of each
    /// retry (attempt number, the error) so progress can say why it is waiting.
    pub async fn run<T, E, F, Fut>(
        &self,
        mut operation: F,
        mut on_retry: impl FnMut(u32, &E),
    ) -> Result<T, RetryError<E>>
    where
        E: Classify,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 1;
        loop {
            match operation(attempt).await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    let verdict = error.verdict();
                    if verdict == Verdict::Fatal || attempt >= self.attempts {
                        return Err(RetryError {
                            attempts: attempt,
                            last: error,
                        });
                    }
                    on_retry(attempt, &error);
                    tokio::time::sleep(self.delay(attempt, verdict)).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// The error of the last attempt, and how many attempts were made.
#[derive(Debug)]
pub struct RetryError<E> {
    pub attempts: u32,
    pub last: E,
}

/// `, after N attempts` for an error message; nothing for one attempt, as a refusal is not retried.
pub fn after_attempts(attempts: u32) -> String {
    if attempts > 1 {
        format!(", after {attempts} attempts")
    } else {
        String::new()
    }
}

/// Whether an HTTP status is worth retrying: timeouts, rate limits and server errors.
pub fn status_verdict(status: u16) -> Verdict {
    match status {
        408 | 425 | 429 | 500 | 502 | 503 | 504 => Verdict::Transient,
        _ => Verdict::Fatal,
    }
}

/// `Retry-After` as delay-seconds (the form registries use; HTTP dates are treated as absent).
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Failure(Verdict);

    impl Classify for Failure {
        fn verdict(&self) -> Verdict {
            self.0
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::standard()
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let mut retries = 0;
        let result = fast()
            .run(
                |attempt| async move {
                    if attempt < 3 {
                        Err(Failure(Verdict::Transient))
                    } else {
                        Ok(attempt)
                    }
                },
                |_, _| retries += 1,
            )
            .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(retries, 2);
    }

    #[tokio::test]
    async fn fatal_failures_stop_at_once_and_attempts_are_bounded() {
        let fatal = fast()
            .run(
                |_| async { Err::<(), _>(Failure(Verdict::Fatal)) },
                |_, _| {},
            )
            .await
            .unwrap_err();
        assert_eq!(fatal.attempts, 1);
        let endless = fast()
            .run(
                |_| async { Err::<(), _>(Failure(Verdict::Transient)) },
                |_, _| {},
            )
            .await
            .unwrap_err();
        assert_eq!(endless.attempts, 4);
    }

    #[test]
    fn retry_after_is_honoured_within_a_ceiling() {
        let policy = RetryPolicy::standard();
        assert_eq!(
            policy.delay(1, Verdict::RetryAfter(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.delay(1, Verdict::RetryAfter(Duration::from_secs(3600))),
            Duration::from_secs(60)
        );
        assert_eq!(parse_retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::standard();
        for attempt in 1..20 {
            let delay = policy.delay(attempt, Verdict::Transient);
            assert!(delay <= policy.max_delay, "{delay:?}");
            assert!(
                delay
                    >= policy
                        .base_delay
                        .saturating_mul(1 << attempt.min(16))
                        .min(policy.max_delay)
                        / 2
            );
        }
    }
}
