//! Dropping the oldest messages of a chat body until its prompt fits.

use serde_json::Value;

use crate::count::{chat_body, messages_of, object, role};
use crate::error::CountError;

/// What [`Counter::truncate_to_fit`](crate::Counter::truncate_to_fit) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// Positions, in the original `messages`, of the dropped messages (ascending; empty when
    /// the prompt already fitted). `dropped.len()` is how many were dropped.
    pub dropped: Vec<usize>,
    /// Prompt tokens of the body as it now is.
    pub prompt_tokens: u64,
}

pub(crate) fn truncate(
    body: &mut Value,
    context_window: u64,
    reserve_output: u64,
    measure: &impl Fn(&str) -> u64,
) -> Result<Truncation, CountError> {
    let count = chat_body(body, measure)?;
    let fits = |prompt: u64| prompt.saturating_add(reserve_output) <= context_window;
    let mut prompt = count.total;
    let mut dropped = Vec::new();
    if !fits(prompt) {
        // Dropping a message lowers the count by exactly its own tokens (ChatCount docs).
        for group in droppable_groups(messages_of(object(body)?)?)? {
            if fits(prompt) {
                break;
            }
            prompt -= group.iter().map(|&i| count.messages[i]).sum::<u64>();
            dropped.extend(group);
        }
    }
    if !fits(prompt) {
        return Err(CountError::CannotFit {
            min_prompt_tokens: prompt,
            reserve_output,
            context_window,
        });
    }
    if let Some(Value::Array(messages)) = body.get_mut("messages") {
        let mut position = 0;
        messages.retain(|_| {
            let keep = dropped.binary_search(&position).is_err();
            position += 1;
            keep
        });
    }
    Ok(Truncation {
        dropped,
        prompt_tokens: prompt,
    })
}

/// The messages that may be dropped, oldest first, in groups that go together: an
/// assistant message that made calls with the tool results directly after it, else one
/// message. System and developer messages and the last user message are in no group.
fn droppable_groups(messages: &[Value]) -> Result<Vec<Vec<usize>>, CountError> {
    let roles = messages
        .iter()
        .enumerate()
        .map(|(i, m)| role(i, m))
        .collect::<Result<Vec<&str>, CountError>>()?;
    let last_user = roles.iter().rposition(|r| *r == "user");
    let mut groups = Vec::new();
    let mut i = 0;
    while i < roles.len() {
        let start = i;
        i += 1;
        if matches!(roles[start], "system" | "developer") || Some(start) == last_user {
            continue;
        }
        if roles[start] == "assistant" && makes_calls(&messages[start]) {
            while i < roles.len() && matches!(roles[i], "tool" | "function") {
                i += 1;
            }
        }
        groups.push((start..i).collect());
    }
    Ok(groups)
}

/// Whether an assistant message called tools (or a legacy function).
fn makes_calls(message: &Value) -> bool {
    let calls = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .is_some_and(|calls| !calls.is_empty());
    calls || message.get("function_call").is_some_and(Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Counter;
    use serde_json::json;

    /// A message whose content is `words` one-token words.
    fn msg(role: &str, words: usize) -> Value {
        json!({"role": role, "content": " hello".repeat(words)})
    }

    fn roles_and_sizes(body: &Value) -> Vec<(String, usize)> {
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let content = m["content"].as_str().unwrap_or("");
                (m["role"].as_str().unwrap().to_owned(), content.len() / 6)
            })
            .collect()
    }

    fn total(counter: &Counter, body: &Value) -> u64 {
        counter.count_chat("gpt-4o", body).unwrap().total
    }

    #[test]
    fn a_prompt_that_fits_is_left_alone() {
        let counter = Counter::default();
        let mut body = json!({"messages": [msg("system", 10), msg("user", 10)]});
        let before = body.clone();
        let t = counter
            .truncate_to_fit("gpt-4o", &mut body, 1000, 100)
            .unwrap();
        assert_eq!(t.dropped, Vec::<usize>::new());
        assert_eq!(t.prompt_tokens, total(&counter, &before));
        assert_eq!(body, before);
    }

    #[test]
    fn the_oldest_turns_go_first_and_system_and_last_user_stay() {
        let counter = Counter::default();
        let mut body = json!({"messages": [
            msg("system", 20), msg("user", 100), msg("assistant", 100),
            msg("developer", 20), msg("user", 100), msg("assistant", 100), msg("user", 50),
        ]});
        let full = total(&counter, &body);
        // Room for everything but about 1.5 old turns: the first user and assistant go.
        let window = full - 150;
        let t = counter
            .truncate_to_fit("gpt-4o", &mut body, window, 0)
            .unwrap();
        assert_eq!(t.dropped, vec![1, 2]);
        assert_eq!(t.prompt_tokens, total(&counter, &body));
        assert!(t.prompt_tokens <= window);
        assert_eq!(
            roles_and_sizes(&body),
            vec![
                ("system".into(), 20),
                ("developer".into(), 20),
                ("user".into(), 100),
                ("assistant".into(), 100),
                ("user".into(), 50),
            ]
        );
    }

    #[test]
    fn the_reserve_for_the_output_counts_against_the_window() {
        let counter = Counter::default();
        let body = json!({"messages": [msg("user", 100), msg("assistant", 100), msg("user", 10)]});
        let full = total(&counter, &body);
        let mut without_reserve = body.clone();
        let t = counter
            .truncate_to_fit("gpt-4o", &mut without_reserve, full, 0)
            .unwrap();
        assert!(t.dropped.is_empty());
        let mut with_reserve = body.clone();
        let t = counter
            .truncate_to_fit("gpt-4o", &mut with_reserve, full, 1)
            .unwrap();
        assert_eq!(t.dropped, vec![0]);
        assert_eq!(t.prompt_tokens, total(&counter, &with_reserve));
    }

    #[test]
    fn a_tool_result_goes_with_the_call_that_asked_for_it() {
        let counter = Counter::default();
        let call = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ]});
        let mut body = json!({"messages": [
            msg("system", 5),
            msg("user", 10),
            call,
            {"role": "tool", "tool_call_id": "c1", "content": " hello".repeat(10)},
            {"role": "tool", "tool_call_id": "c2", "content": " hello".repeat(10)},
            msg("assistant", 10),
            msg("user", 10),
        ]});
        let full = total(&counter, &body);
        // Dropping the first user message is not enough; the call must go with both results.
        let t = counter
            .truncate_to_fit("gpt-4o", &mut body, full - 20, 0)
            .unwrap();
        assert_eq!(t.dropped, vec![1, 2, 3, 4]);
        assert_eq!(
            roles_and_sizes(&body),
            vec![
                ("system".into(), 5),
                ("assistant".into(), 10),
                ("user".into(), 10)
            ]
        );
        assert_eq!(t.prompt_tokens, total(&counter, &body));
    }

    #[test]
    fn a_prompt_that_cannot_fit_is_an_error_and_the_body_is_untouched() {
        let counter = Counter::default();
        let mut body = json!({"messages": [msg("system", 100), msg("user", 10), msg("assistant", 10), msg("user", 100)]});
        let before = body.clone();
        let kept = total(
            &counter,
            &json!({"messages": [msg("system", 100), msg("user", 100)]}),
        );
        let err = counter
            .truncate_to_fit("gpt-4o", &mut body, kept + 10, 11)
            .unwrap_err();
        assert_eq!(
            err,
            CountError::CannotFit {
                min_prompt_tokens: kept,
                reserve_output: 11,
                context_window: kept + 10,
            }
        );
        assert!(err
            .to_string()
            .starts_with("This model's maximum context length is"));
        assert_eq!(body, before);
        // With the same window and a smaller reserve, it fits exactly.
        let t = counter
            .truncate_to_fit("gpt-4o", &mut body, kept + 10, 10)
            .unwrap();
        assert_eq!((t.dropped, t.prompt_tokens), (vec![1, 2], kept));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let counter = Counter::default();
        let mut body = json!({"messages": [{"role": "user", "content": 3}]});
        let err = counter
            .truncate_to_fit("gpt-4o", &mut body, 10, 0)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "messages[0].content must be a string or an array of parts"
        );
        let mut body = json!({"model": "x"});
        let err = counter
            .truncate_to_fit("gpt-4o", &mut body, 10, 0)
            .unwrap_err();
        assert_eq!(err.to_string(), "'messages' is a required property");
    }
}
