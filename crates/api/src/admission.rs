//! Admission of an Azure OpenAI call, before it goes upstream: the prompt counted with the
//! model's tokenizer, the context window checked (or the oldest messages dropped, when the
//! tenant's policy says so), and the admission estimate reserved against the tenant's (and
//! the key's) quotas. The reservation is settled to the real usage when the call ends.
//!
//! The tokenizer runs only when its answer matters: the tenant (or key) has a token limit,
//! or a bound computed from the body's size does not prove that the prompt fits the context
//! window. A tenant without limits and an ordinary body costs neither a parse nor a Redis call.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use openai_router::{BodyFacts, Operation};
use quota::{Refusal, Scope, ScopeLimits};
use serde_json::Value;
use tenant_registry::model::{ContextOverflow, Limits};

use crate::auth::{Caller, Credential};
use crate::error::ApiError;
use crate::state::AppState;

const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
/// What is left of the caller's monthly spending budget (the smaller of the tenant's and the
/// key's), in the price table's currency, after this call's estimate.
const REMAINING_BUDGET: HeaderName = HeaderName::from_static("x-bulkhead-budget-remaining");

/// A call that may go upstream.
pub struct Admitted {
    /// The body to send: the caller's, or a truncated one.
    pub body: Bytes,
    pub facts: BodyFacts,
    /// Tokens the call may consume at most (prompt + every possible output token).
    pub estimate: u64,
    /// The prompt's tokens: counted when admission counted, else estimated from the body's
    /// size. Metered if the call ends before Azure's usage arrives.
    pub prompt: u64,
    /// Settled when the call ends; `None` when no scope has a limit.
    pub admission: Option<quota::Admission>,
    /// What is left of the tenant's quota, for the response headers.
    pub remaining: Option<quota::Remaining>,
    /// The call's estimated cost held against the spending budgets; settled to its cost.
    pub spending: Option<quota::Admission>,
}

/// A refusal, already in Azure's error shape (boxed: a `Response` is large and refusals are
/// the rare path).
pub type Refused = Box<Response>;

fn scopes(caller: &Caller) -> Vec<ScopeLimits> {
    let tenant = &caller.tenant.tenant;
    let mut scopes = Vec::with_capacity(2);
    let limits = to_quota(tenant.limits);
    if !limits.is_unlimited() {
        scopes.push(ScopeLimits::new(Scope::tenant(tenant.id), limits));
    }
    if let Credential::ApiKey { id } = caller.credential {
        let limits = to_quota(caller.key_limits);
        if !limits.is_unlimited() {
            scopes.push(ScopeLimits::new(Scope::api_key(tenant.id, id), limits));
        }
    }
    scopes
}

fn to_quota(limits: Limits) -> quota::Limits {
    quota::Limits {
        tokens_per_minute: limits.tokens_per_minute,
        requests_per_minute: limits.requests_per_minute,
        monthly_tokens: limits.monthly_tokens,
    }
}

/// The spending budgets of the call: the tenant's and the key's, each a scope of its own
/// whose monthly counter holds micro-units of the price table's currency. The quota crate's
/// monthly arithmetic (reservation, settlement, leases, exact across replicas) applies as is.
fn spending_scopes(caller: &Caller) -> Vec<ScopeLimits> {
    let tenant = &caller.tenant.tenant;
    let budget = |micros: Option<tenant_registry::prices::Micros>| {
        micros.map(|m| quota::Limits {
            monthly_tokens: Some(m.0),
            ..quota::Limits::default()
        })
    };
    let mut scopes = Vec::new();
    if let Some(limits) = budget(tenant.limits.monthly_budget) {
        scopes.push(ScopeLimits::new(Scope::tenant_spending(tenant.id), limits));
    }
    if let Credential::ApiKey { id } = caller.credential {
        if let Some(limits) = budget(caller.key_limits.monthly_budget) {
            scopes.push(ScopeLimits::new(Scope::key_spending(tenant.id, id), limits));
        }
    }
    scopes
}

fn counted_operation(operation: Operation) -> Option<token_count::Operation> {
    match operation {
        Operation::ChatCompletions => Some(token_count::Operation::ChatCompletions),
        Operation::Completions => Some(token_count::Operation::Completions),
        Operation::Embeddings => Some(token_count::Operation::Embeddings),
        // The responses API's `input` has a shape of its own; it is estimated from its size.
        Operation::Responses => None,
    }
}

/// A bound on the prompt's tokens from the raw body alone: every token is at least one byte
/// of the JSON text it comes from (message overheads are smaller than the JSON around a
/// message), except images, which cost a fixed amount whatever their URL's length. Doubled
/// for numbers that are longer once re-serialised.
fn raw_bound(body: &[u8]) -> u64 {
    let images = count_occurrences(body, b"\"image_url\"") as u64;
    (body.len() as u64)
        .saturating_mul(2)
        .saturating_add(images.saturating_mul(token_count::IMAGE_TOKENS_DEFAULT))
        .saturating_add(16)
}

fn count_occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    memchr::memmem::find_iter(haystack, needle).count()
}

/// Counts, checks and reserves. `model` is the model of the deployments the alias reaches,
/// `target` the deployments themselves (their prices, for a spending budget).
pub async fn admit(
    state: &AppState,
    caller: &Caller,
    operation: Operation,
    model: &str,
    target: &openai_router::Target,
    body: Bytes,
    facts: BodyFacts,
) -> Result<Admitted, Refused> {
    let scopes = scopes(caller);
    let spending_scopes = spending_scopes(caller);
    let limits = state.tokens.limits(model);
    let needs_tokens = !spending_scopes.is_empty()
        || scopes
            .iter()
            .any(|s| s.limits.tokens_per_minute.is_some() || s.limits.monthly_tokens.is_some());
    let requested_output = facts.max_output.unwrap_or(0).saturating_mul(facts.choices);
    let (body, facts, estimate, prompt) = match counted_operation(operation) {
        Some(counted)
            if needs_tokens
                || raw_bound(&body).saturating_add(requested_output)
                    > u64::from(limits.context_window) =>
        {
            let work = {
                let tokens = state.tokens.clone();
                let overflow = caller.tenant.context_overflow();
                let budget = state.counting.budget(limits.context_window);
                let model = model.to_owned();
                let body = body.clone();
                move || count_and_fit(&tokens, overflow, counted, &model, body, facts, budget)
            };
            let ready = state.tokens.encoding(model).is_ready();
            match state.counting.run(body.len(), ready, work).await {
                Ok(counted) => counted?,
                Err(crate::counting::Busy) => return Err(Box::new(counting_busy())),
            }
        }
        _ => {
            let prompt = body.len() as u64 / 4;
            let rough = prompt.saturating_add(
                facts
                    .max_output
                    .unwrap_or(u64::from(limits.max_output))
                    .saturating_mul(facts.choices),
            );
            (body, facts, rough, prompt)
        }
    };
    // The spending budget first: if the token quota then refuses, dropping this admission
    // gives the whole estimate back (a spending scope counts no requests).
    let spending = match spending_scopes.is_empty() {
        true => None,
        false => reserve_spending(state, &spending_scopes, target, prompt, estimate).await?,
    };
    if scopes.is_empty() {
        return Ok(Admitted {
            body,
            facts,
            estimate,
            prompt,
            admission: None,
            remaining: None,
            spending,
        });
    }
    match state.quota.reserve(&scopes, estimate).await {
        Ok(admission) => {
            let remaining = Some(admission.remaining());
            Ok(Admitted {
                body,
                facts,
                estimate,
                prompt,
                admission: Some(admission),
                remaining,
                spending,
            })
        }
        Err(refusal) => Err(Box::new(refused(&refusal))),
    }
}

/// Reserves the call's most expensive outcome (its prompt and every output token it may
/// produce, at the highest price among the deployments it may reach) against the spending
/// budgets. A call no price applies to is not held (it is recorded and counted as unpriced).
async fn reserve_spending(
    state: &AppState,
    scopes: &[ScopeLimits],
    target: &openai_router::Target,
    prompt: u64,
    estimate: u64,
) -> Result<Option<quota::Admission>, Refused> {
    let tokens = tenant_registry::prices::Tokens {
        prompt,
        cached: 0,
        completion: estimate.saturating_sub(prompt),
    };
    let snapshot = state.registry.snapshot();
    let members = target.members.iter().map(|m| m.key.as_str());
    let Some(cost) = crate::cost::most_on(&snapshot.catalog, members, tokens, chrono::Utc::now())
    else {
        return Ok(None);
    };
    match state.quota.reserve(scopes, cost.micros_ceil()).await {
        Ok(admission) => Ok(Some(admission)),
        Err(refusal) => {
            let error = match refusal {
                Refusal::BudgetExhausted { .. } | Refusal::ExceedsLimit { .. } => {
                    ApiError::SpendingExhausted
                }
                other => return Err(Box::new(refused(&other))),
            };
            let mut response = error.into_response();
            if let Some(left) = refusal_left(&refusal) {
                set_budget_remaining(response.headers_mut(), left);
            }
            Err(Box::new(response))
        }
    }
}

fn refusal_left(refusal: &Refusal) -> Option<u64> {
    match refusal {
        Refusal::BudgetExhausted {
            remaining_budget, ..
        } => Some(*remaining_budget),
        _ => None,
    }
}

/// `x-bulkhead-budget-remaining`: micro-units written as a decimal of the currency.
pub fn set_budget_remaining(headers: &mut HeaderMap, micros: u64) {
    let text = tenant_registry::prices::Micros(micros).to_string();
    if let Ok(value) = HeaderValue::from_str(&text) {
        headers.insert(REMAINING_BUDGET, value);
    }
}

/// What is left of the spending budgets after `spending`'s estimate, for the header.
pub fn spending_left(spending: Option<&quota::Admission>) -> Option<u64> {
    spending.and_then(quota::Admission::remaining_tokens)
}

/// Settles a spending admission to the call's cost, rounded up to the micro-unit (a budget
/// never counts less than was spent). An unpriced outcome, or a call the caller hung up on
/// before any usage came, keeps its estimate: Azure may well have spent it.
pub fn settle_spending(
    admission: quota::Admission,
    priced: crate::cost::Priced,
    usage: &openai_router::Usage,
) {
    let used = usage.prompt_tokens.saturating_add(usage.completion_tokens);
    let actual = match priced {
        crate::cost::Priced::Cost(_) if usage.status == 499 && used == 0 => admission.estimate(),
        crate::cost::Priced::Cost(cost) => cost.micros_ceil(),
        crate::cost::Priced::Unpriced => admission.estimate(),
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(admission.settle(actual));
        }
        Err(_) => drop(admission),
    }
}

/// Admission of a call answered from the response cache: one request against the tenant's
/// and the key's `requests_per_minute` (a hit is still a request; the limit bounds how fast
/// a tenant may call, whatever answers), no tokens reserved or charged (none are spent). The
/// reservation is settled at once, to zero tokens. A token bucket in debt (a call that used
/// more than it reserved) holds hits back too, until it refills: the quota decides per call,
/// not per dimension.
pub async fn admit_cache_hit(
    state: &AppState,
    caller: &Caller,
) -> Result<Option<quota::Remaining>, Refused> {
    let scopes = scopes(caller);
    if scopes.is_empty() {
        return Ok(None);
    }
    match state.quota.reserve(&scopes, 0).await {
        Ok(admission) => {
            let remaining = admission.remaining();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(admission.settle(0));
                }
                Err(_) => drop(admission),
            }
            Ok(Some(remaining))
        }
        Err(refusal) => Err(Box::new(refused(&refusal))),
    }
}

/// The prompt count (exact up to the context window), the context window check (or
/// truncation), and the estimate. Runs where [`crate::counting`] puts it.
fn count_and_fit(
    tokens: &token_count::Counter,
    overflow: ContextOverflow,
    operation: token_count::Operation,
    model: &str,
    body: Bytes,
    facts: BodyFacts,
    budget: token_count::CountBudget,
) -> Result<(Bytes, BodyFacts, u64, u64), Refused> {
    let mut value: Value = serde_json::from_slice(&body).map_err(|error| {
        bad_request(
            &format!("We could not parse the JSON body of your request: {error}."),
            None,
        )
    })?;
    let limits = tokens.limits(model);
    let window = u64::from(limits.context_window);
    let counted = tokens
        .count_prompt_within(operation, model, &value, budget)
        .map_err(|e| bad_request(&e.to_string(), e.param()))?;
    let prompt = counted.tokens;
    let output = token_count::requested_output_tokens(operation, &value).unwrap_or(0);
    let (body, facts, prompt) = if counted.exact && prompt.saturating_add(output) <= window {
        (body, facts, prompt)
    } else if operation == token_count::Operation::ChatCompletions
        && overflow == ContextOverflow::TruncateOldest
    {
        let truncation = tokens
            .truncate_to_fit_within(model, &mut value, window, output, budget)
            .map_err(|e| match e {
                token_count::CountError::CannotFit { .. } => context_exceeded(&e.to_string()),
                other => bad_request(&other.to_string(), other.param()),
            })?;
        tracing::info!(
            dropped = truncation.dropped.len(),
            prompt_tokens = truncation.prompt_tokens,
            "prompt truncated to fit the context window"
        );
        let bytes = serde_json::to_vec(&value)
            .map(Bytes::from)
            .map_err(|error| {
                Box::new(
                    ApiError::Internal(anyhow::anyhow!("cannot write a truncated body: {error}"))
                        .into_response(),
                )
            })?;
        let facts = BodyFacts::read(&bytes).map_err(|m| bad_request(&m, None))?;
        (bytes, facts, truncation.prompt_tokens)
    } else if counted.exact {
        return Err(context_exceeded(&format!(
            "This model's maximum context length is {window} tokens. However, you requested \
             {} tokens ({prompt} in the messages, {output} in the completion). Please reduce \
             the length of the messages or completion.",
            prompt.saturating_add(output)
        )));
    } else {
        // Counting stopped once a text was past the window: the total is only a lower bound.
        return Err(context_exceeded(&format!(
            "This model's maximum context length is {window} tokens. However, your messages \
             resulted in more than {window} tokens. Please reduce the length of the messages."
        )));
    };
    let estimate = token_count::admission_estimate(operation, prompt, &value, limits);
    Ok((body, facts, estimate, prompt))
}

/// No counting thread came free in time (every one busy with large bodies).
fn counting_busy() -> Response {
    ApiError::unavailable(
        "The gateway is busy counting the tokens of other large requests. Please retry shortly.",
        Some(Duration::from_secs(1)),
    )
    .into_response()
}

/// [`counting_busy`], for the tokenize route.
pub fn busy_counting() -> Response {
    counting_busy()
}

fn bad_request(message: &str, param: Option<&str>) -> Refused {
    Box::new(
        ApiError::BadRequest {
            message: message.to_owned(),
            param: param.map(ToOwned::to_owned),
        }
        .into_response(),
    )
}

fn context_exceeded(message: &str) -> Refused {
    Box::new(ApiError::ContextLengthExceeded(message.to_owned()).into_response())
}

/// The answer to a refused reservation: 429 with `Retry-After` for a minute limit;
/// 429 `insufficient_quota` (as OpenAI answers) for a spent monthly budget; 400 for a call
/// that can never fit a limit; 503 when the quota store is down and the gateway fails closed.
fn refused(refusal: &Refusal) -> Response {
    let error = match refusal {
        Refusal::RateLimited {
            dimension,
            retry_after,
            ..
        } => ApiError::RateLimited {
            dimension: dimension.to_string(),
            retry_after: *retry_after,
        },
        Refusal::BudgetExhausted { .. } => ApiError::BudgetExhausted,
        Refusal::ExceedsLimit {
            dimension, limit, ..
        } => ApiError::ExceedsQuota {
            dimension: dimension.to_string(),
            limit: *limit,
        },
        Refusal::Unavailable => ApiError::unavailable(
            "Quotas cannot be checked right now. Please retry shortly.",
            Some(Duration::from_secs(1)),
        ),
    };
    let mut response = error.into_response();
    if let Some(remaining) = refusal.remaining() {
        set_remaining(response.headers_mut(), Some(remaining));
    }
    response
}

/// `x-ratelimit-remaining-*` of the tenant's quota (the router never passes the upstream's
/// on); a tenant without limits gets neither header.
pub fn set_remaining(headers: &mut HeaderMap, remaining: Option<quota::Remaining>) {
    let Some(remaining) = remaining else {
        return;
    };
    if let Some(tokens) = remaining.tokens {
        headers.insert(REMAINING_TOKENS, HeaderValue::from(tokens));
    }
    if let Some(requests) = remaining.requests {
        headers.insert(REMAINING_REQUESTS, HeaderValue::from(requests));
    }
}

/// Settles `admission` to what the call consumed. A call that ended without usage figures
/// because the caller hung up (499) keeps its estimate: Azure may well have spent it.
pub fn settle(admission: quota::Admission, usage: &openai_router::Usage) {
    let used = usage.prompt_tokens.saturating_add(usage.completion_tokens);
    let actual = if usage.status == 499 && used == 0 {
        admission.estimate()
    } else {
        used
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(admission.settle(actual));
        }
        // No runtime (a process shutting down): the admission settles itself when dropped.
        Err(_) => drop(admission),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_bound_counts_images_at_their_fixed_price() {
        let plain = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(raw_bound(plain), plain.len() as u64 * 2 + 16);
        let image = br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#;
        assert!(raw_bound(image) >= token_count::IMAGE_TOKENS_DEFAULT);
    }
}
