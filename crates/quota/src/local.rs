//! The in-process limiter: the same arithmetic as the Redis scripts on a map behind one lock,
//! so an admission over several scopes is all-or-nothing. Used when no Redis is configured,
//! and as the fail-open fallback while Redis is unreachable (limits then hold per replica).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::scope::{Limits, Scope};
use crate::window::{self, ScopeState, Verdict};

#[derive(Debug, Default)]
pub(crate) struct LocalLimiter {
    scopes: Mutex<HashMap<Scope, ScopeState>>,
}

/// Wall-clock milliseconds and seconds since the epoch, like Redis `TIME`.
fn now() -> (i64, i64) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
    )
}

impl LocalLimiter {
    pub(crate) fn reserve(&self, scopes: &[(Scope, Limits)], estimate: u64) -> Verdict {
        let (now_ms, now_secs) = now();
        let month = window::month_of(now_secs);
        let limits: Vec<Limits> = scopes.iter().map(|(_, l)| *l).collect();
        let mut map = self.scopes.lock();
        let mut states: Vec<ScopeState> = scopes
            .iter()
            .map(|(s, _)| map.get(s).copied().unwrap_or_default())
            .collect();
        let verdict = window::reserve(&mut states, &limits, estimate, now_ms, month);
        if matches!(verdict, Verdict::Admitted { .. }) {
            for ((scope, _), state) in scopes.iter().zip(states) {
                map.insert(scope.clone(), state);
            }
        }
        verdict
    }

    pub(crate) fn settle(
        &self,
        scopes: &[(Scope, Limits)],
        estimate: u64,
        actual: u64,
        month: u32,
    ) {
        let (now_ms, _) = now();
        let mut map = self.scopes.lock();
        for (scope, limits) in scopes {
            if let Some(state) = map.get_mut(scope) {
                window::settle(state, limits, estimate, actual, month, now_ms);
            }
        }
    }
}
