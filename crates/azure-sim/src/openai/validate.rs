//! Parameter validation as Azure OpenAI does it: the documented ranges, types and enums of
//! chat completions, completions, embeddings and responses, refused with a 400 before any
//! work. Messages follow the service's schema validator (`7 is greater than the maximum of 2 -
//! 'temperature'`, `'nope' is not one of ['json_object', 'json_schema', 'text'] -
//! 'response_format.type'`), with `param` naming the field.
//!
//! Only what the REST reference documents is checked; an unknown field is left alone, as the
//! service leaves it.

use serde_json::{Map, Value};

use super::handlers::Operation;
use crate::common::AzureError;

/// One documented constraint on a top-level field.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// A number within `[min, max]`.
    Number {
        min: f64,
        max: f64,
    },
    /// An integer within `[min, max]`.
    Integer {
        min: i64,
        max: i64,
    },
    Boolean,
    Text,
    /// One of these strings.
    OneOf(&'static [&'static str]),
}

use Rule::{Boolean, Integer, Number, OneOf, Text};

const SAMPLING: &[(&str, Rule)] = &[
    ("temperature", Number { min: 0.0, max: 2.0 }),
    ("top_p", Number { min: 0.0, max: 1.0 }),
    (
        "presence_penalty",
        Number {
            min: -2.0,
            max: 2.0,
        },
    ),
    (
        "frequency_penalty",
        Number {
            min: -2.0,
            max: 2.0,
        },
    ),
    (
        "seed",
        Integer {
            min: i64::MIN,
            max: i64::MAX,
        },
    ),
    ("user", Text),
];

const CHAT: &[(&str, Rule)] = &[
    ("logprobs", Boolean),
    ("top_logprobs", Integer { min: 0, max: 20 }),
    ("parallel_tool_calls", Boolean),
    ("store", Boolean),
    (
        "reasoning_effort",
        OneOf(&["high", "low", "medium", "minimal"]),
    ),
    (
        "service_tier",
        OneOf(&["auto", "default", "flex", "priority"]),
    ),
];

const COMPLETIONS: &[(&str, Rule)] = &[
    ("logprobs", Integer { min: 0, max: 5 }),
    ("best_of", Integer { min: 1, max: 20 }),
    ("suffix", Text),
];

const EMBEDDINGS: &[(&str, Rule)] = &[
    ("encoding_format", OneOf(&["base64", "float"])),
    ("user", Text),
];

const RESPONSES: &[(&str, Rule)] = &[
    ("temperature", Number { min: 0.0, max: 2.0 }),
    ("top_p", Number { min: 0.0, max: 1.0 }),
    ("truncation", OneOf(&["auto", "disabled"])),
    ("store", Boolean),
    ("parallel_tool_calls", Boolean),
    ("instructions", Text),
    ("user", Text),
    ("top_logprobs", Integer { min: 0, max: 20 }),
];

const RESPONSE_FORMATS: &[&str] = &["json_object", "json_schema", "text"];

/// Validates the parameters of a chat, completions or embeddings body.
pub fn parameters(op: Operation, body: &Map<String, Value>) -> Result<(), AzureError> {
    match op {
        Operation::ChatCompletions => {
            check_all(body, SAMPLING)?;
            check_all(body, CHAT)?;
            if positive(body.get("top_logprobs"))
                && body.get("logprobs") != Some(&Value::Bool(true))
            {
                return Err(bad(
                    "'logprobs' must be set to true when 'top_logprobs' is set.",
                    "top_logprobs",
                ));
            }
            response_format(body.get("response_format"), "response_format")?;
            stop(body)?;
            logit_bias(body)?;
            tool_choice(body)?;
            Ok(())
        }
        Operation::Completions => {
            check_all(body, SAMPLING)?;
            check_all(body, COMPLETIONS)?;
            stop(body)?;
            logit_bias(body)
        }
        Operation::Embeddings => check_all(body, EMBEDDINGS),
    }
}

/// Validates the parameters of a responses body.
pub fn responses(body: &Map<String, Value>) -> Result<(), AzureError> {
    check_all(body, RESPONSES)?;
    if let Some(text) = present(body.get("text")) {
        let Value::Object(text) = text else {
            return Err(type_error(text, "object", "text"));
        };
        if let Some(format) = present(text.get("format")) {
            let Value::Object(format) = format else {
                return Err(type_error(format, "object", "text.format"));
            };
            check_one_of(
                format.get("type"),
                RESPONSE_FORMATS,
                "text.format.type",
                true,
            )?;
        }
    }
    if let Some(reasoning) = present(body.get("reasoning")) {
        let Value::Object(reasoning) = reasoning else {
            return Err(type_error(reasoning, "object", "reasoning"));
        };
        check_one_of(
            reasoning.get("effort"),
            &["high", "low", "medium", "minimal"],
            "reasoning.effort",
            false,
        )?;
    }
    Ok(())
}

fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

fn positive(value: Option<&Value>) -> bool {
    value.and_then(Value::as_u64).is_some_and(|n| n > 0)
}

fn bad(message: impl Into<String>, param: &str) -> AzureError {
    AzureError::bad_request(message, Some(param))
}

/// A value as the validator prints it (strings quoted, numbers as sent).
fn shown(value: &Value) -> String {
    let text = match value {
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    };
    text.chars().take(200).collect()
}

fn type_error(value: &Value, expected: &str, param: &str) -> AzureError {
    bad(
        format!("{} is not of type '{expected}' - '{param}'", shown(value)),
        param,
    )
}

fn check_all(body: &Map<String, Value>, rules: &[(&str, Rule)]) -> Result<(), AzureError> {
    for (name, rule) in rules {
        if let Some(value) = present(body.get(*name)) {
            check(value, *rule, name)?;
        }
    }
    Ok(())
}

fn check(value: &Value, rule: Rule, param: &str) -> Result<(), AzureError> {
    match rule {
        Number { min, max } => {
            let Some(n) = value.as_f64() else {
                return Err(type_error(value, "number", param));
            };
            range(value, n, min, max, param)
        }
        Integer { min, max } => {
            let n = match (value.as_i64(), value.as_u64()) {
                (Some(n), _) => n,
                (None, Some(_)) => i64::MAX,
                _ => return Err(type_error(value, "integer", param)),
            };
            if n < min {
                return Err(bad(
                    format!(
                        "{} is less than the minimum of {min} - '{param}'",
                        shown(value)
                    ),
                    param,
                ));
            }
            if n > max {
                return Err(bad(
                    format!(
                        "{} is greater than the maximum of {max} - '{param}'",
                        shown(value)
                    ),
                    param,
                ));
            }
            Ok(())
        }
        Boolean if value.is_boolean() => Ok(()),
        Boolean => Err(type_error(value, "boolean", param)),
        Text if value.is_string() => Ok(()),
        Text => Err(type_error(value, "string", param)),
        OneOf(allowed) => check_one_of(Some(value), allowed, param, false),
    }
}

fn range(value: &Value, n: f64, min: f64, max: f64, param: &str) -> Result<(), AzureError> {
    if n < min {
        return Err(bad(
            format!(
                "{} is less than the minimum of {} - '{param}'",
                shown(value),
                number(min)
            ),
            param,
        ));
    }
    if n > max {
        return Err(bad(
            format!(
                "{} is greater than the maximum of {} - '{param}'",
                shown(value),
                number(max)
            ),
            param,
        ));
    }
    Ok(())
}

/// A bound as the schema states it (`2`, `-2`, `0.5`).
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn check_one_of(
    value: Option<&Value>,
    allowed: &[&str],
    param: &str,
    required: bool,
) -> Result<(), AzureError> {
    let listed = format!(
        "[{}]",
        allowed
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    match present(value) {
        None if required => Err(bad(
            format!("'type' is a required property - '{}'", parent(param)),
            param,
        )),
        None => Ok(()),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
        Some(other) => Err(bad(
            format!("{} is not one of {listed} - '{param}'", shown(other)),
            param,
        )),
    }
}

fn parent(param: &str) -> &str {
    param.rsplit_once('.').map_or(param, |(p, _)| p)
}

fn response_format(value: Option<&Value>, param: &str) -> Result<(), AzureError> {
    let Some(value) = present(value) else {
        return Ok(());
    };
    let Value::Object(format) = value else {
        return Err(type_error(value, "object", param));
    };
    let type_param = format!("{param}.type");
    check_one_of(format.get("type"), RESPONSE_FORMATS, &type_param, true)?;
    if format.get("type").and_then(Value::as_str) == Some("json_schema") {
        let schema_param = format!("{param}.json_schema");
        match present(format.get("json_schema")) {
            None => {
                return Err(bad(
                    format!("'json_schema' is a required property - '{param}'"),
                    &schema_param,
                ))
            }
            Some(Value::Object(schema)) => {
                if !schema.get("name").is_some_and(Value::is_string) {
                    return Err(bad(
                        format!("'name' is a required property - '{schema_param}'"),
                        &format!("{schema_param}.name"),
                    ));
                }
            }
            Some(other) => return Err(type_error(other, "object", &schema_param)),
        }
    }
    Ok(())
}

/// `stop`: a string, or at most 4 strings.
fn stop(body: &Map<String, Value>) -> Result<(), AzureError> {
    match present(body.get("stop")) {
        None | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) if items.len() > 4 => Err(bad(
            format!(
                "{} is too long - 'stop'",
                shown(&Value::Array(items.clone()))
            ),
            "stop",
        )),
        Some(Value::Array(items)) => match items.iter().find(|i| !i.is_string()) {
            Some(item) => Err(type_error(item, "string", "stop")),
            None => Ok(()),
        },
        Some(other) => Err(type_error(other, "array", "stop")),
    }
}

/// `logit_bias`: token ids mapped to a bias in [-100, 100].
fn logit_bias(body: &Map<String, Value>) -> Result<(), AzureError> {
    let Some(value) = present(body.get("logit_bias")) else {
        return Ok(());
    };
    let Value::Object(bias) = value else {
        return Err(type_error(value, "object", "logit_bias"));
    };
    for (token, bias) in bias {
        let param = format!("logit_bias.{token}");
        if token.parse::<u64>().is_err() {
            return Err(bad(
                format!("Invalid key in 'logit_bias': {token}. Keys must be token ids."),
                "logit_bias",
            ));
        }
        let Some(n) = bias.as_f64() else {
            return Err(type_error(bias, "number", &param));
        };
        range(bias, n, -100.0, 100.0, &param)?;
    }
    Ok(())
}

/// `tool_choice`: `none`, `auto`, `required`, or a named function; a named one needs `tools`.
fn tool_choice(body: &Map<String, Value>) -> Result<(), AzureError> {
    match present(body.get("tool_choice")) {
        None => Ok(()),
        Some(Value::String(_)) => check_one_of(
            body.get("tool_choice"),
            &["auto", "none", "required"],
            "tool_choice",
            false,
        ),
        Some(Value::Object(_)) => {
            if body
                .get("tools")
                .is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()))
            {
                Ok(())
            } else {
                Err(bad(
                    "'tool_choice' is only allowed when 'tools' are specified.",
                    "tool_choice",
                ))
            }
        }
        Some(other) => Err(type_error(other, "object", "tool_choice")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(op: Option<Operation>, body: Value) -> Option<(String, Option<String>)> {
        let Value::Object(body) = body else {
            panic!("an object")
        };
        let result = match op {
            Some(op) => parameters(op, &body),
            None => responses(&body),
        };
        result.err().map(|e| {
            (
                e.body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e.body["error"]["param"].as_str().map(ToOwned::to_owned),
            )
        })
    }

    #[test]
    fn what_azure_refuses_is_refused_with_its_words() {
        let chat = Some(Operation::ChatCompletions);
        let cases = [
            (chat, json!({"temperature": 7}), "7 is greater than the maximum of 2 - 'temperature'", "temperature"),
            (chat, json!({"temperature": -0.5}), "-0.5 is less than the minimum of 0 - 'temperature'", "temperature"),
            (chat, json!({"temperature": "hot"}), "'hot' is not of type 'number' - 'temperature'", "temperature"),
            (chat, json!({"top_p": 3}), "3 is greater than the maximum of 1 - 'top_p'", "top_p"),
            (chat, json!({"presence_penalty": -2.5}), "-2.5 is less than the minimum of -2 - 'presence_penalty'", "presence_penalty"),
            (chat, json!({"frequency_penalty": 9}), "9 is greater than the maximum of 2 - 'frequency_penalty'", "frequency_penalty"),
            (chat, json!({"response_format": {"type": "nope"}}), "'nope' is not one of ['json_object', 'json_schema', 'text'] - 'response_format.type'", "response_format.type"),
            (chat, json!({"response_format": {}}), "'type' is a required property - 'response_format'", "response_format.type"),
            (chat, json!({"response_format": "json"}), "'json' is not of type 'object' - 'response_format'", "response_format"),
            (chat, json!({"response_format": {"type": "json_schema"}}), "'json_schema' is a required property - 'response_format'", "response_format.json_schema"),
            (chat, json!({"top_logprobs": 21, "logprobs": true}), "21 is greater than the maximum of 20 - 'top_logprobs'", "top_logprobs"),
            (chat, json!({"top_logprobs": 2}), "'logprobs' must be set to true when 'top_logprobs' is set.", "top_logprobs"),
            (chat, json!({"logprobs": "yes"}), "'yes' is not of type 'boolean' - 'logprobs'", "logprobs"),
            (chat, json!({"stop": ["a", "b", "c", "d", "e"]}), "[\"a\",\"b\",\"c\",\"d\",\"e\"] is too long - 'stop'", "stop"),
            (chat, json!({"logit_bias": {"50256": 101}}), "101 is greater than the maximum of 100 - 'logit_bias.50256'", "logit_bias.50256"),
            (chat, json!({"tool_choice": "sometimes"}), "'sometimes' is not one of ['auto', 'none', 'required'] - 'tool_choice'", "tool_choice"),
            (chat, json!({"seed": 1.5}), "1.5 is not of type 'integer' - 'seed'", "seed"),
            (Some(Operation::Completions), json!({"logprobs": 6}), "6 is greater than the maximum of 5 - 'logprobs'", "logprobs"),
            (Some(Operation::Completions), json!({"temperature": 2.5}), "2.5 is greater than the maximum of 2 - 'temperature'", "temperature"),
            (Some(Operation::Embeddings), json!({"encoding_format": "int8"}), "'int8' is not one of ['base64', 'float'] - 'encoding_format'", "encoding_format"),
            (None, json!({"temperature": 3}), "3 is greater than the maximum of 2 - 'temperature'", "temperature"),
            (None, json!({"truncation": "sometimes"}), "'sometimes' is not one of ['auto', 'disabled'] - 'truncation'", "truncation"),
            (None, json!({"text": {"format": {"type": "xml"}}}), "'xml' is not one of ['json_object', 'json_schema', 'text'] - 'text.format.type'", "text.format.type"),
            (None, json!({"reasoning": {"effort": "max"}}), "'max' is not one of ['high', 'low', 'medium', 'minimal'] - 'reasoning.effort'", "reasoning.effort"),
        ];
        for (op, body, message, param) in cases {
            let got = refused(op, body.clone());
            assert_eq!(
                got,
                Some((message.to_owned(), Some(param.to_owned()))),
                "{body}"
            );
        }
    }

    #[test]
    fn what_azure_accepts_passes() {
        let chat = Some(Operation::ChatCompletions);
        for (op, body) in [
            (
                chat,
                json!({"temperature": 0, "top_p": 1, "presence_penalty": -2, "frequency_penalty": 2}),
            ),
            (
                chat,
                json!({"temperature": 2.0, "top_p": 0.0, "seed": -5, "user": "u"}),
            ),
            (
                chat,
                json!({"temperature": null, "response_format": null, "stop": null}),
            ),
            (chat, json!({"response_format": {"type": "json_object"}})),
            (
                chat,
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
            ),
            (
                chat,
                json!({"logprobs": true, "top_logprobs": 5, "stop": ["a", "b", "c", "d"]}),
            ),
            (
                chat,
                json!({"logit_bias": {"50256": -100, "11": 100}, "tool_choice": "auto"}),
            ),
            (
                chat,
                json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "f"}}}),
            ),
            (chat, json!({"an_unknown_field": 123})),
            (
                Some(Operation::Completions),
                json!({"logprobs": 5, "stop": "\n", "suffix": "x"}),
            ),
            (
                Some(Operation::Embeddings),
                json!({"encoding_format": "base64"}),
            ),
            (
                None,
                json!({"temperature": 1, "truncation": "auto", "text": {"format": {"type": "text"}}}),
            ),
        ] {
            assert_eq!(refused(op, body.clone()), None, "{body}");
        }
    }
}
