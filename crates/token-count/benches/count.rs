//! Counting worst-case bodies: 1 MB chat bodies whose one message is a run of one letter,
//! random letters, a long number, whitespace, punctuation or mixed scripts, each counted
//! exactly (`count_prompt`, what `/v1/tokenize` needs up to its byte cap) and within a
//! gpt-4o context window (`count_prompt_within`, what admission needs: it stops once the
//! prompt is past the window). Milliseconds per body, best of `COUNT_BENCH_RUNS` (default 5).
//!
//! `cargo bench -p token-count --bench count` (release build; on demand, never a test).

#![expect(clippy::print_stdout, reason = "a benchmark reports on the terminal")]

use std::time::{Duration, Instant};

use serde_json::json;
use token_count::{CountBudget, Counter, Operation};

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let runs: usize = std::env::var("COUNT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let n = 1_000_000;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut pick = |alphabet: &[char]| -> String {
        (0..n)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect()
    };
    let lower: Vec<char> = ('a'..='z').collect();
    let digits: Vec<char> = ('0'..='9').collect();
    let mixed: Vec<char> = "aZé漢字Ωж🙂ß, .\n\t-_'1".chars().collect();
    let texts = [
        ("one letter", "a".repeat(n)),
        ("random letters", pick(&lower)),
        ("a long number", pick(&digits)),
        ("spaces", " ".repeat(n)),
        ("newlines and spaces", " \n".repeat(n / 2)),
        ("punctuation", "!?".repeat(n / 2)),
        ("mixed scripts", pick(&mixed)),
        (
            "ordinary words",
            "the quick brown fox jumps over the lazy dog ".repeat(n / 44),
        ),
    ];
    let counter = Counter::default();
    let model = "gpt-4o";
    let window = u64::from(counter.limits(model).context_window);
    let budget = CountBudget {
        max_text_tokens: window,
        max_bytes: 8 * 1024 * 1024,
    };
    println!("1 MB chat bodies, {model} (o200k_base, window {window}), best of {runs}:");
    println!("| text | tokens | exact count ms | within the window ms |");
    println!("|---|---|---|---|");
    for (name, text) in texts {
        let raw = serde_json::to_vec(&json!({"messages": [{"role": "user", "content": text}]}))
            .unwrap_or_default();
        let mut tokens = 0;
        let exact = best_of(runs, || {
            let body: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
            tokens = counter
                .count_prompt(Operation::ChatCompletions, model, &body)
                .unwrap_or(0);
        });
        let within = best_of(runs, || {
            let body: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
            let _ = counter.count_prompt_within(Operation::ChatCompletions, model, &body, budget);
        });
        println!(
            "| {name} | {tokens} | {:.1} | {:.1} |",
            exact.as_secs_f64() * 1000.0,
            within.as_secs_f64() * 1000.0
        );
    }
}
