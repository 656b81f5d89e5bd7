//! The counter against Python tiktoken: `tests/fixtures/tokens/chat_bodies.jsonl` (written by
//! `generate.py` beside it, which implements the counting rules independently) holds bodies
//! with the counts Python computed. Every count must be equal; the byte-length bound must
//! never be below it; truncation must keep its promises on every real-looking body.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a malformed fixture should fail loudly"
)]

use serde_json::Value;
use token_count::{
    fits_without_counting, prompt_upper_bound, CountError, Counter, ModelLimits, Operation,
};

const FIXTURE: &str = include_str!("../../../tests/fixtures/tokens/chat_bodies.jsonl");

/// One fixture case with its 1-based line number.
struct Case {
    line: usize,
    id: String,
    kind: Operation,
    model: String,
    encoding: String,
    expected: u64,
    expected_tools: Option<u64>,
    body: Value,
}

impl Case {
    fn at(&self) -> String {
        format!("chat_bodies.jsonl line {} ({})", self.line, self.id)
    }
}

fn cases() -> Vec<Case> {
    FIXTURE
        .lines()
        .enumerate()
        .filter_map(|(i, text)| {
            let line = i + 1;
            let value: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("chat_bodies.jsonl line {line}: {e}"));
            let kind = match value["kind"].as_str() {
                Some("meta") => return None,
                Some("chat") => Operation::ChatCompletions,
                Some("embeddings") => Operation::Embeddings,
                Some("completions") => Operation::Completions,
                other => panic!("chat_bodies.jsonl line {line}: unknown kind {other:?}"),
            };
            let text = |field: &str| value[field].as_str().unwrap().to_owned();
            Some(Case {
                line,
                id: text("id"),
                kind,
                model: text("model"),
                encoding: text("encoding"),
                expected: value["expected"].as_u64().unwrap(),
                expected_tools: value["expected_tools"].as_u64(),
                body: value["body"].clone(),
            })
        })
        .collect()
}

/// Fails once, listing every case that went wrong.
fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} fixture case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_fixture_covers_enough_bodies_of_each_kind() {
    let cases = cases();
    let of = |kind| cases.iter().filter(|c| c.kind == kind).count();
    assert!(
        of(Operation::ChatCompletions) >= 200,
        "{}",
        of(Operation::ChatCompletions)
    );
    assert!(
        of(Operation::Embeddings) >= 30,
        "{}",
        of(Operation::Embeddings)
    );
    for encoding in ["o200k_base", "cl100k_base"] {
        assert!(
            cases
                .iter()
                .filter(|c| c.kind == Operation::ChatCompletions && c.encoding == encoding)
                .count()
                >= 50,
            "{encoding}"
        );
    }
}

#[test]
fn every_count_equals_python_tiktoken() {
    let counter = Counter::default();
    let mut failures = Vec::new();
    for case in cases() {
        let encoding = counter.encoding(&case.model).name();
        if encoding != case.encoding {
            failures.push(format!(
                "{}: model {} maps to {encoding}, Python used {}",
                case.at(),
                case.model,
                case.encoding
            ));
            continue;
        }
        let (total, tools) = match case.kind {
            Operation::ChatCompletions => match counter.count_chat(&case.model, &case.body) {
                Ok(count) => (count.total, Some(count.tools)),
                Err(e) => {
                    failures.push(format!("{}: {e}", case.at()));
                    continue;
                }
            },
            kind => match counter.count_prompt(kind, &case.model, &case.body) {
                Ok(total) => (total, None),
                Err(e) => {
                    failures.push(format!("{}: {e}", case.at()));
                    continue;
                }
            },
        };
        if total != case.expected || tools != case.expected_tools {
            failures.push(format!(
                "{}: Rust counted {total} (tools {tools:?}), Python {} (tools {:?})",
                case.at(),
                case.expected,
                case.expected_tools
            ));
        }
    }
    report(failures);
}

#[test]
fn the_byte_length_bound_never_says_fits_when_the_exact_count_does_not() {
    let mut failures = Vec::new();
    for case in cases() {
        let bound = match prompt_upper_bound(case.kind, &case.body) {
            Ok(bound) => bound,
            Err(e) => {
                failures.push(format!("{}: {e}", case.at()));
                continue;
            }
        };
        if bound < case.expected {
            failures.push(format!(
                "{}: bound {bound} below the exact count {}",
                case.at(),
                case.expected
            ));
        }
        // Windows around both the exact count and the bound, with and without a reserve.
        for reserve in [0, 1, 100] {
            let exact = case.expected + reserve;
            let edge = bound + reserve;
            for window in [exact.saturating_sub(1), exact, edge.saturating_sub(1), edge] {
                let Ok(window) = u32::try_from(window) else {
                    continue;
                };
                let limits = ModelLimits::new(window, 0);
                if fits_without_counting(bound, reserve, limits) && exact > u64::from(window) {
                    failures.push(format!(
                        "{}: said fits in {window} with reserve {reserve}, exact needs {exact}",
                        case.at()
                    ));
                }
            }
        }
    }
    report(failures);
}

#[test]
fn truncation_keeps_its_promises_on_every_fixture_conversation() {
    let counter = Counter::default();
    let mut failures = Vec::new();
    let mut truncated = 0;
    for case in cases() {
        let messages = case.body["messages"].as_array().map_or(0, Vec::len);
        if case.kind != Operation::ChatCompletions || messages < 3 {
            continue;
        }
        let original = case.body.clone();
        let mut body = case.body.clone();
        let window = case.expected * 2 / 3;
        match counter.truncate_to_fit(&case.model, &mut body, window, 0) {
            Ok(t) => {
                truncated += 1;
                let recount = counter.count_chat(&case.model, &body).unwrap().total;
                if recount != t.prompt_tokens || recount > window {
                    failures.push(format!(
                        "{}: reported {}, recounted {recount}, window {window}",
                        case.at(),
                        t.prompt_tokens
                    ));
                }
                if let Some(problem) = broken_promise(&original, &t.dropped) {
                    failures.push(format!("{}: {problem}", case.at()));
                }
            }
            Err(CountError::CannotFit {
                min_prompt_tokens, ..
            }) => {
                if min_prompt_tokens <= window {
                    failures.push(format!(
                        "{}: refused although {min_prompt_tokens} fits in {window}",
                        case.at()
                    ));
                }
                if case.body != body {
                    failures.push(format!("{}: body changed on error", case.at()));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", case.at())),
        }
    }
    assert!(
        truncated >= 20,
        "only {truncated} bodies could be truncated"
    );
    report(failures);
}

/// What is wrong with dropping `dropped` from `body`'s messages, if anything.
fn broken_promise(body: &Value, dropped: &[usize]) -> Option<String> {
    let messages = body["messages"].as_array().unwrap();
    let role = |i: usize| messages[i]["role"].as_str().unwrap_or("");
    let last_user = (0..messages.len()).rev().find(|&i| role(i) == "user");
    for &i in dropped {
        if matches!(role(i), "system" | "developer") || Some(i) == last_user {
            return Some(format!("dropped protected message {i} ({})", role(i)));
        }
    }
    // A kept tool result's call must be kept, and a dropped call's results dropped.
    for i in 0..messages.len() {
        if !matches!(role(i), "tool" | "function") {
            continue;
        }
        let call = (0..i)
            .rev()
            .find(|&j| !matches!(role(j), "tool" | "function"));
        if let Some(call) = call.filter(|&j| role(j) == "assistant") {
            if dropped.contains(&i) != dropped.contains(&call) {
                return Some(format!("tool result {i} separated from its call {call}"));
            }
        }
    }
    None
}
