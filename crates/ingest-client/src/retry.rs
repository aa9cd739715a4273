//! The retry policy (docs/clients.md, "Retries"): which answers are retried, the
//! full-jitter backoff, and the least wait an answer asks for (`Retry-After`,
//! `X-RateLimit-Reset`). Pure functions; the retry loop itself is in `deliver.rs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;

/// What to do with an HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// A batch answer (200, 202, 422): one outcome per item.
    BatchAnswer,
    /// Worth sending again: 408, 429, 500, 502, 503, 504.
    Retry,
    /// Never retried: every item of the request is rejected with the request's message.
    Refused,
}

pub(crate) fn classify(status: u16) -> Class {
    match status {
        200 | 202 | 422 => Class::BatchAnswer,
        408 | 429 | 500 | 502 | 503 | 504 => Class::Retry,
        _ => Class::Refused,
    }
}

/// The backoff cap before retry `retry` (1, 2, ...):
/// `min(max, initial × 2^(retry-1))`.
pub(crate) fn backoff_cap(retry: u32, initial: Duration, max: Duration) -> Duration {
    let doublings = retry.saturating_sub(1).min(63);
    initial
        .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

/// Full jitter: a uniformly random time in `[0, backoff_cap(retry)]`.
pub(crate) fn full_jitter(
    retry: u32,
    initial: Duration,
    max: Duration,
    rng: &mut impl Rng,
) -> Duration {
    let cap = backoff_cap(retry, initial, max);
    Duration::from_secs_f64(rng.random_range(0.0..=cap.as_secs_f64()))
}

/// The least time the answer asks the client to wait before sending again: `Retry-After`
/// (seconds) on 429 and 503, and on a 429 also until `X-RateLimit-Reset` (Unix seconds)
/// when that is later. `None` when the answer says nothing usable.
pub(crate) fn server_wait(
    status: u16,
    retry_after: Option<&str>,
    ratelimit_reset: Option<&str>,
    now: SystemTime,
) -> Option<Duration> {
    if status != 429 && status != 503 {
        return None;
    }
    let after = retry_after.and_then(seconds);
    let until_reset = if status == 429 {
        ratelimit_reset.and_then(seconds).and_then(|reset| {
            let now = now.duration_since(UNIX_EPOCH).ok()?;
            reset.checked_sub(now)
        })
    } else {
        None
    };
    match (after, until_reset) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A non-negative number of seconds (`"3"`, `"1.5"`); HTTP dates are not used by the
/// gateway and are ignored.
fn seconds(text: &str) -> Option<Duration> {
    let value: f64 = text.trim().parse().ok()?;
    (value.is_finite() && (0.0..1e12).contains(&value)).then(|| Duration::from_secs_f64(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const INITIAL: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn statuses_are_classified_as_docs_clients_md_lists_them() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify(status), Class::Retry, "{status}");
        }
        for status in [
            400, 401, 403, 404, 405, 413, 409, 418, 501, 505, 201, 204, 301,
        ] {
            assert_eq!(classify(status), Class::Refused, "{status}");
        }
        for status in [200, 202, 422] {
            assert_eq!(classify(status), Class::BatchAnswer, "{status}");
        }
    }

    #[test]
    fn the_backoff_cap_doubles_from_the_initial_up_to_the_max() {
        let caps: Vec<_> = (1..=10).map(|n| backoff_cap(n, INITIAL, MAX)).collect();
        assert_eq!(caps[0], Duration::from_millis(200));
        assert_eq!(caps[1], Duration::from_millis(400));
        assert_eq!(caps[2], Duration::from_millis(800));
        assert_eq!(caps[7], Duration::from_millis(25_600));
        assert_eq!(caps[8], MAX);
        assert_eq!(caps[9], MAX);
        // No overflow far out.
        assert_eq!(backoff_cap(40, INITIAL, MAX), MAX);
        assert_eq!(backoff_cap(u32::MAX, INITIAL, MAX), MAX);
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_cap_and_spreads_over_it() {
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 1..=12 {
            let cap = backoff_cap(retry, INITIAL, MAX);
            let samples: Vec<Duration> = (0..2000)
                .map(|_| full_jitter(retry, INITIAL, MAX, &mut rng))
                .collect();
            assert!(samples.iter().all(|s| *s <= cap), "retry {retry}");
            let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
            // Uniform on [0, cap]: the mean is cap/2 (±5 % over 2000 samples).
            let half = cap.as_secs_f64() / 2.0;
            assert!(
                (mean.as_secs_f64() - half).abs() < half * 0.1,
                "retry {retry}: mean {mean:?}, cap {cap:?}"
            );
            assert!(samples.iter().any(|s| *s < cap / 10), "retry {retry}");
            assert!(samples.iter().any(|s| *s > cap * 9 / 10), "retry {retry}");
        }
    }

    #[test]
    fn retry_after_is_read_on_429_and_503_only() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            server_wait(503, Some("1"), None, now),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            server_wait(429, Some("7"), None, now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            server_wait(429, Some(" 2.5 "), None, now),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(server_wait(500, Some("5"), None, now), None);
        assert_eq!(server_wait(502, Some("5"), Some("1000010"), now), None);
        assert_eq!(server_wait(503, None, None, now), None);
        // Unusable values are ignored.
        for bad in [
            "",
            "-1",
            "soon",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "NaN",
            "inf",
        ] {
            assert_eq!(server_wait(503, Some(bad), None, now), None, "{bad:?}");
        }
    }

    #[test]
    fn a_429_waits_until_the_rate_limit_reset_when_that_is_later() {
        let now = UNIX_EPOCH + Duration::from_millis(1_780_000_000_250);
        // Reset 30 s ahead (less the 250 ms already into the second), Retry-After 1 s.
        assert_eq!(
            server_wait(429, Some("1"), Some("1780000030"), now),
            Some(Duration::from_millis(29_750))
        );
        // Retry-After later than the reset: Retry-After.
        assert_eq!(
            server_wait(429, Some("40"), Some("1780000030"), now),
            Some(Duration::from_secs(40))
        );
        // Only the reset.
        assert_eq!(
            server_wait(429, None, Some("1780000002"), now),
            Some(Duration::from_millis(1750))
        );
        // A reset in the past asks for nothing more.
        assert_eq!(
            server_wait(429, Some("1"), Some("1779999999"), now),
            Some(Duration::from_secs(1))
        );
        assert_eq!(server_wait(429, None, Some("1779999999"), now), None);
        // The reset is not read on a 503.
        assert_eq!(
            server_wait(503, Some("1"), Some("1780000030"), now),
            Some(Duration::from_secs(1))
        );
    }
}
