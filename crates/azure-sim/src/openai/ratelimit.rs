//! Per-deployment TPM and RPM with Azure's semantics.
//!
//! - Tokens: each request's *estimate* (prompt tokens + `max_tokens`, times `n`/`best_of`;
//!   a deployment default when `max_tokens` is absent) is charged to the current token window
//!   (one minute by default). A request whose estimate does not fit in what is left of the
//!   window is refused and charges nothing.
//! - Requests: RPM (default 6 per 1000 TPM) is enforced as RPM/6 requests per 10-second
//!   window (at least one).
//! - Windows are fixed, aligned to the emulator's clock (its start, plus any advance), so
//!   `retry-after-ms` is exactly the time left in the window that refused the request.
//! - The request window is checked first: a request refused for either reason consumes nothing.

use crate::config::RateLimitSettings;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Tokens,
    Requests,
}

/// The limiter's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// No limits configured.
    Unlimited,
    Admitted {
        remaining_tokens: u64,
        remaining_requests: u64,
    },
    Refused {
        limit: Limit,
        retry_after_ms: u64,
    },
}

#[derive(Default)]
struct Windows {
    token_window: u64,
    tokens_used: u64,
    request_window: u64,
    requests_used: u64,
}

/// The rate limiter of one deployment.
pub struct RateLimiter {
    tpm: Option<u64>,
    rpm: Option<u64>,
    windows: parking_lot::Mutex<Windows>,
}

impl RateLimiter {
    /// `rpm` defaults to 6 per 1000 `tpm`.
    pub fn new(tpm: Option<u64>, rpm: Option<u64>) -> Self {
        let rpm = rpm.or_else(|| tpm.map(|t| t * 6 / 1000));
        Self {
            tpm,
            rpm,
            windows: parking_lot::Mutex::new(Windows::default()),
        }
    }

    /// Requests admitted per request window.
    fn requests_per_window(&self, settings: &RateLimitSettings) -> Option<u64> {
        self.rpm.map(|rpm| {
            let per = u128::from(rpm) * u128::from(settings.request_window_ms) / 60_000;
            u64::try_from(per).unwrap_or(u64::MAX).max(1)
        })
    }

    /// Tokens admitted per token window (TPM scaled to the window length).
    fn tokens_per_window(&self, settings: &RateLimitSettings) -> Option<u64> {
        self.tpm.map(|tpm| {
            let per = u128::from(tpm) * u128::from(settings.token_window_ms) / 60_000;
            u64::try_from(per).unwrap_or(u64::MAX)
        })
    }

    /// Charges a request of `estimate` tokens at `now_ms`, or refuses it.
    pub fn admit(&self, now_ms: u64, settings: &RateLimitSettings, estimate: u64) -> Admission {
        let token_limit = self.tokens_per_window(settings);
        let request_limit = self.requests_per_window(settings);
        if token_limit.is_none() && request_limit.is_none() {
            return Admission::Unlimited;
        }
        let token_len = settings.token_window_ms.max(1);
        let request_len = settings.request_window_ms.max(1);
        let token_window = now_ms / token_len;
        let request_window = now_ms / request_len;
        let mut w = self.windows.lock();
        if w.token_window != token_window {
            w.token_window = token_window;
            w.tokens_used = 0;
        }
        if w.request_window != request_window {
            w.request_window = request_window;
            w.requests_used = 0;
        }
        if let Some(limit) = request_limit {
            if w.requests_used >= limit {
                return Admission::Refused {
                    limit: Limit::Requests,
                    retry_after_ms: (request_window + 1) * request_len - now_ms,
                };
            }
        }
        if let Some(limit) = token_limit {
            if w.tokens_used.saturating_add(estimate) > limit {
                return Admission::Refused {
                    limit: Limit::Tokens,
                    retry_after_ms: (token_window + 1) * token_len - now_ms,
                };
            }
        }
        w.requests_used += 1;
        w.tokens_used = w.tokens_used.saturating_add(estimate);
        Admission::Admitted {
            remaining_tokens: token_limit.map_or(u64::MAX, |l| l - w.tokens_used),
            remaining_requests: request_limit.map_or(u64::MAX, |l| l - w.requests_used),
        }
    }

    /// Forgets all usage.
    pub fn reset(&self) {
        *self.windows.lock() = Windows::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RateLimitSettings {
        RateLimitSettings::default()
    }

    #[test]
    fn rpm_defaults_to_six_per_thousand_tpm_over_ten_second_windows() {
        // 10k TPM -> 60 RPM -> 10 requests per 10 s.
        let limiter = RateLimiter::new(Some(10_000), None);
        for i in 0..10 {
            assert!(
                matches!(
                    limiter.admit(1_000, &settings(), 1),
                    Admission::Admitted { .. }
                ),
                "request {i}"
            );
        }
        assert_eq!(
            limiter.admit(2_500, &settings(), 1),
            Admission::Refused {
                limit: Limit::Requests,
                retry_after_ms: 7_500
            }
        );
        assert!(matches!(
            limiter.admit(10_000, &settings(), 1),
            Admission::Admitted { .. }
        ));
    }

    #[test]
    fn a_token_estimate_that_does_not_fit_is_refused_until_the_minute_ends() {
        let limiter = RateLimiter::new(Some(1_000), Some(1_000));
        assert_eq!(
            limiter.admit(0, &settings(), 600),
            Admission::Admitted {
                remaining_tokens: 400,
                remaining_requests: 165
            }
        );
        assert_eq!(
            limiter.admit(20_000, &settings(), 600),
            Admission::Refused {
                limit: Limit::Tokens,
                retry_after_ms: 40_000
            }
        );
        // The refused request charged nothing: 400 still fit.
        assert!(matches!(
            limiter.admit(20_001, &settings(), 400),
            Admission::Admitted {
                remaining_tokens: 0,
                ..
            }
        ));
        assert!(matches!(
            limiter.admit(60_000, &settings(), 600),
            Admission::Admitted { .. }
        ));
    }

    #[test]
    fn no_limits_means_unlimited() {
        let limiter = RateLimiter::new(None, None);
        assert_eq!(limiter.admit(0, &settings(), 1 << 40), Admission::Unlimited);
    }
}
