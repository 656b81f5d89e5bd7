//! Azure OpenAI behaviour of azure-sim over real HTTP: the emulator in-process on port 0,
//! called with reqwest. Rate-limit windows are crossed by advancing the emulator's clock,
//! never by sleeping.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions fail loudly too"
)]

use std::time::{Duration, Instant};

use azure_sim::{
    fingerprint, DeploymentConfig, FaultAction, FaultSpec, ResourceConfig, SearchServiceConfig,
    Sim, SimConfig, SimHandle,
};
use base64::Engine as _;
use futures::StreamExt;
use serde_json::{json, Value};

const API_VERSION: &str = "2024-10-21";
const EAST_KEY: &str = "key-east-1";
const EAST_KEY_2: &str = "key-east-2";
const WEST_KEY: &str = "key-west-1";

fn config() -> SimConfig {
    let mut east = ResourceConfig::new("aoai-eastus", "eastus", EAST_KEY)
        .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o"))
        .with_deployment(DeploymentConfig::new("gpt-35-turbo", "gpt-35-turbo"))
        .with_deployment(DeploymentConfig::new("o3-mini", "o3-mini"))
        .with_deployment(DeploymentConfig::new("instruct", "gpt-35-turbo-instruct"))
        .with_deployment(DeploymentConfig::new(
            "text-embedding-3-small",
            "text-embedding-3-small",
        ))
        .with_deployment(DeploymentConfig::new("ada", "text-embedding-ada-002"))
        .with_deployment(
            DeploymentConfig::new("small-dims", "text-embedding-3-small").with_dimensions(64),
        )
        // 1000 TPM with a generous RPM: only the token window limits.
        .with_deployment(
            DeploymentConfig::new("tpm-1000", "gpt-4o")
                .with_tpm(1000)
                .with_rpm(600),
        )
        // 1000 TPM, default RPM = 6, i.e. one request per 10 s window.
        .with_deployment(DeploymentConfig::new("rpm-6", "gpt-4o").with_tpm(1000))
        .with_deployment(DeploymentConfig::new("slow", "gpt-4o").with_latency(120, 10));
    east.keys.push(EAST_KEY_2.to_owned());
    let mut versioned = DeploymentConfig::new("gpt-4o-versioned", "gpt-4o");
    versioned.version = Some("2024-11-20".to_owned());
    east.deployments.push(versioned);
    let west = ResourceConfig::new("aoai-westeurope", "westeurope", WEST_KEY)
        .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o"));
    SimConfig::default()
        .with_resource(east)
        .with_resource(west)
        .with_search_service(SearchServiceConfig::new(
            "search-shared-1",
            "eastus",
            "search-admin",
            "search-query",
        ))
}

struct Env {
    sim: SimHandle,
    http: reqwest::Client,
}

impl Env {
    async fn new() -> Self {
        Self::with(config()).await
    }

    async fn with(config: SimConfig) -> Self {
        let sim = Sim::start(config).await.expect("sim starts");
        Env {
            sim,
            http: reqwest::Client::new(),
        }
    }

    fn deployment_url(&self, resource: &str, deployment: &str, op: &str) -> String {
        format!(
            "{}/openai/deployments/{deployment}/{op}?api-version={API_VERSION}",
            self.sim.resource_url(resource)
        )
    }

    async fn post(&self, url: &str, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(url)
            .header("api-key", key)
            .json(body)
            .send()
            .await
            .expect("request completes")
    }

    /// A chat completion on aoai-eastus.
    async fn chat(&self, deployment: &str, body: Value) -> reqwest::Response {
        let url = self.deployment_url("aoai-eastus", deployment, "chat/completions");
        self.post(&url, EAST_KEY, &body).await
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}/_sim{path}", self.sim.base_url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("control request completes")
    }

    fn fault(
        &self,
        resource: &str,
        deployment: Option<&str>,
        count: u64,
        action: FaultAction,
    ) -> u64 {
        self.sim.inject_fault(FaultSpec {
            resource: resource.to_owned(),
            deployment: deployment.map(str::to_owned),
            count,
            action,
        })
    }
}

fn hello() -> Value {
    json!({"messages": [{"role": "user", "content": "Hello!"}]})
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

/// The JSON payloads of an SSE body, and whether it ended with `[DONE]`.
fn sse_events(text: &str) -> (Vec<Value>, bool) {
    let mut events = Vec::new();
    let mut done = false;
    for frame in text.split("\n\n").filter(|f| !f.is_empty()) {
        let data = frame
            .strip_prefix("data: ")
            .expect("every frame is a data line");
        if data == "[DONE]" {
            done = true;
        } else {
            events.push(serde_json::from_str(data).expect("frame is JSON"));
        }
    }
    (events, done)
}

fn status_fault(status: u16) -> FaultAction {
    FaultAction::Status {
        status,
        retry_after: None,
        retry_after_ms: None,
        headers: Default::default(),
        body: None,
    }
}

// ---------------------------------------------------------------- chat completions

#[tokio::test]
async fn chat_completion_answers_in_azures_shape_with_the_standard_headers() {
    let env = Env::new().await;
    let response = env.chat("gpt-4o-versioned", hello()).await;
    assert_eq!(response.status(), 200);
    let request_id = header(&response, "apim-request-id")
        .expect("apim-request-id")
        .to_owned();
    assert_eq!(header(&response, "x-request-id"), Some(request_id.as_str()));
    assert_eq!(header(&response, "x-ms-region"), Some("eastus"));
    // Unlimited deployment: no rate-limit headers.
    assert!(header(&response, "x-ratelimit-remaining-tokens").is_none());
    let body = json_of(response).await;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-2024-11-20");
    assert!(body["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(body["prompt_filter_results"][0]["prompt_index"], 0);
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["content_filter_results"]["hate"]["filtered"], false);
    let content = choice["message"]["content"].as_str().expect("content");
    assert!(content.ends_with('.'));
    let usage = &body["usage"];
    assert_eq!(
        usage["prompt_tokens"], 9,
        "3 + (3 + user + Hello!) + 3 priming"
    );
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 0);
}

#[tokio::test]
async fn chat_output_is_deterministic_for_the_same_messages_and_differs_for_others() {
    let env = Env::new().await;
    let first = json_of(env.chat("gpt-4o", hello()).await).await;
    let again = json_of(env.chat("gpt-4o", hello()).await).await;
    let other = json_of(
        env.chat(
            "gpt-4o",
            json!({"messages": [{"role": "user", "content": "Goodbye!"}]}),
        )
        .await,
    )
    .await;
    let content = |v: &Value| v["choices"][0]["message"]["content"].clone();
    assert_eq!(content(&first), content(&again));
    assert_ne!(content(&first), content(&other));
    assert_ne!(first["id"], again["id"], "ids are unique");
}

#[tokio::test]
async fn prompt_tokens_use_the_models_tokenizer_and_the_message_overhead() {
    let env = Env::new().await;
    let body = json!({"messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "name": "alice", "content": "What is the capital of France?"},
    ]});
    let gpt4o = json_of(env.chat("gpt-4o", body.clone()).await).await;
    let gpt35 = json_of(env.chat("gpt-35-turbo", body).await).await;
    // Both encodings: "system" 1, "You are a helpful assistant." 6, "user" 1, "alice" 1,
    // "What is the capital of France?" 7. 3 + (3+1+6) + (3+1+1+1+7) = 26.
    assert_eq!(gpt4o["usage"]["prompt_tokens"], 26);
    assert_eq!(gpt35["usage"]["prompt_tokens"], 26);
    // A text where the encodings differ: o200k packs this Unicode text tighter.
    let unicode = json!({"messages": [{"role": "user", "content": "Привет, как дела? Это тест токенизатора."}]});
    let a = json_of(env.chat("gpt-4o", unicode.clone()).await).await;
    let b = json_of(env.chat("gpt-35-turbo", unicode).await).await;
    assert!(
        a["usage"]["prompt_tokens"].as_u64() < b["usage"]["prompt_tokens"].as_u64(),
        "o200k {} vs cl100k {}",
        a["usage"]["prompt_tokens"],
        b["usage"]["prompt_tokens"]
    );
}

#[tokio::test]
async fn max_tokens_cuts_the_answer_with_finish_reason_length() {
    let env = Env::new().await;
    let mut body = hello();
    body["max_tokens"] = json!(3);
    let answer = json_of(env.chat("gpt-4o", body).await).await;
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], 3);
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        content.split(' ').count(),
        3,
        "three one-token words: {content:?}"
    );

    let mut body = hello();
    body["max_completion_tokens"] = json!(2);
    let answer = json_of(env.chat("gpt-4o", body).await).await;
    assert_eq!(answer["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn n_returns_that_many_choices_and_counts_all_their_tokens() {
    let env = Env::new().await;
    let mut body = hello();
    body["n"] = json!(3);
    let answer = json_of(env.chat("gpt-4o", body).await).await;
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    let words: u64 = choices
        .iter()
        .map(|c| {
            let text = c["message"]["content"].as_str().unwrap();
            // Words plus the final period, each one token.
            text.split(' ').count() as u64 + 1
        })
        .sum();
    assert_eq!(answer["usage"]["completion_tokens"].as_u64(), Some(words));
    let indexes: Vec<u64> = choices
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, vec![0, 1, 2]);
}

#[tokio::test]
async fn reasoning_models_refuse_max_tokens_in_favour_of_max_completion_tokens() {
    let env = Env::new().await;
    let mut body = hello();
    body["max_tokens"] = json!(10);
    let response = env.chat("o3-mini", body).await;
    assert_eq!(response.status(), 400);
    let error = json_of(response).await;
    assert_eq!(error["error"]["code"], "unsupported_parameter");
    let mut body = hello();
    body["max_completion_tokens"] = json!(10);
    assert_eq!(env.chat("o3-mini", body).await.status(), 200);
}

#[tokio::test]
async fn chat_completion_without_api_version_is_a_400() {
    let env = Env::new().await;
    let url = format!(
        "{}/openai/deployments/gpt-4o/chat/completions",
        env.sim.resource_url("aoai-eastus")
    );
    let response = env.post(&url, EAST_KEY, &hello()).await;
    assert_eq!(response.status(), 400);
    assert!(header(&response, "apim-request-id").is_some());
    let error = json_of(response).await;
    assert_eq!(error["error"]["code"], "MissingApiVersionParameter");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("api-version"));
}

#[tokio::test]
async fn a_malformed_api_version_is_a_400() {
    let env = Env::new().await;
    let url = format!(
        "{}/openai/deployments/gpt-4o/chat/completions?api-version=banana",
        env.sim.resource_url("aoai-eastus")
    );
    let response = env.post(&url, EAST_KEY, &hello()).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        json_of(response).await["error"]["message"],
        "API version not supported"
    );
}

#[tokio::test]
async fn a_configured_api_version_list_is_enforced() {
    let mut config = config();
    config.openai_api_versions = vec!["2024-10-21".to_owned()];
    let env = Env::with(config).await;
    assert_eq!(env.chat("gpt-4o", hello()).await.status(), 200);
    let url = format!(
        "{}/openai/deployments/gpt-4o/chat/completions?api-version=2023-05-15",
        env.sim.resource_url("aoai-eastus")
    );
    assert_eq!(env.post(&url, EAST_KEY, &hello()).await.status(), 400);
}

#[tokio::test]
async fn requests_without_a_valid_key_are_a_401_in_azures_words() {
    let env = Env::new().await;
    let url = env.deployment_url("aoai-eastus", "gpt-4o", "chat/completions");
    let missing = env.http.post(&url).json(&hello()).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(header(&missing, "x-ms-region"), Some("eastus"));
    let error = json_of(missing).await;
    assert_eq!(error["error"]["code"], "401");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Access denied"));
    assert_eq!(env.post(&url, "wrong", &hello()).await.status(), 401);
    // Either of the resource's two keys works.
    assert_eq!(env.post(&url, EAST_KEY_2, &hello()).await.status(), 200);
}

#[tokio::test]
async fn a_bearer_key_works_and_api_key_wins_when_both_are_sent() {
    let env = Env::new().await;
    let url = env.deployment_url("aoai-eastus", "gpt-4o", "chat/completions");
    let send = |api_key: Option<&str>, bearer: Option<&str>| {
        let mut request = env.http.post(&url).json(&hello());
        if let Some(k) = api_key {
            request = request.header("api-key", k);
        }
        if let Some(b) = bearer {
            request = request.bearer_auth(b);
        }
        request.send()
    };
    assert_eq!(send(None, Some(EAST_KEY)).await.unwrap().status(), 200);
    assert_eq!(
        send(Some(EAST_KEY), Some("wrong")).await.unwrap().status(),
        200
    );
    assert_eq!(
        send(Some("wrong"), Some(EAST_KEY)).await.unwrap().status(),
        401
    );
}

#[tokio::test]
async fn one_resources_key_does_not_open_another_resource() {
    let env = Env::new().await;
    let west = env.deployment_url("aoai-westeurope", "gpt-4o", "chat/completions");
    assert_eq!(env.post(&west, EAST_KEY, &hello()).await.status(), 401);
    let ok = env.post(&west, WEST_KEY, &hello()).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "x-ms-region"), Some("westeurope"));
}

#[tokio::test]
async fn an_unknown_deployment_is_a_404_deployment_not_found() {
    let env = Env::new().await;
    let response = env.chat("nope", hello()).await;
    assert_eq!(response.status(), 404);
    assert!(header(&response, "x-request-id").is_some());
    let error = json_of(response).await;
    assert_eq!(error["error"]["code"], "DeploymentNotFound");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
}

#[tokio::test]
async fn an_unknown_resource_or_path_is_a_404() {
    let env = Env::new().await;
    let url = env.deployment_url("nobody", "gpt-4o", "chat/completions");
    let response = env.post(&url, EAST_KEY, &hello()).await;
    assert_eq!(response.status(), 404);
    assert_eq!(json_of(response).await["error"]["code"], "ResourceNotFound");
    let url = format!(
        "{}/openai/nothing-here",
        env.sim.resource_url("aoai-eastus")
    );
    let response = env.post(&url, EAST_KEY, &hello()).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        json_of(response).await["error"]["message"],
        "Resource not found"
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_in_azures_format() {
    let env = Env::new().await;
    let url = env.deployment_url("aoai-eastus", "gpt-4o", "chat/completions");
    let response = env
        .http
        .post(&url)
        .header("api-key", EAST_KEY)
        .header("content-type", "application/json")
        .body("{\"messages\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error = json_of(response).await;
    assert_eq!(error["error"]["code"], "BadRequest");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("could not parse the JSON body"));
}

#[tokio::test]
async fn missing_or_invalid_messages_are_a_400() {
    let env = Env::new().await;
    let cases = [
        (json!({}), "'messages' is a required property"),
        (json!({"messages": []}), "[] is too short - 'messages'"),
        (
            json!({"messages": [{"content": "hi"}]}),
            "Missing required parameter: 'messages[0].role'.",
        ),
    ];
    for (body, message) in cases {
        let response = env.chat("gpt-4o", body).await;
        assert_eq!(response.status(), 400);
        let error = json_of(response).await;
        assert_eq!(error["error"]["message"], message);
        assert_eq!(error["error"]["code"], "BadRequest");
    }
    let response = env
        .chat(
            "gpt-4o",
            json!({"messages": [{"role": "robot", "content": "hi"}]}),
        )
        .await;
    assert_eq!(
        json_of(response).await["error"]["param"],
        "messages[0].role"
    );
}

#[tokio::test]
async fn chat_on_an_embedding_deployment_is_operation_not_supported() {
    let env = Env::new().await;
    let response = env.chat("text-embedding-3-small", hello()).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        json_of(response).await["error"]["code"],
        "OperationNotSupported"
    );
    let response = env.chat("instruct", hello()).await;
    assert_eq!(response.status(), 400);
}

// ---------------------------------------------------------------- streaming

#[tokio::test]
async fn streaming_sends_azures_chunk_sequence_with_a_final_usage_chunk() {
    let env = Env::new().await;
    let mut body = hello();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = env.chat("gpt-4o", body).await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(header(&response, "apim-request-id").is_some());
    let text = response.text().await.unwrap();
    assert!(text.starts_with("data: {"));
    assert!(text.ends_with("data: [DONE]\n\n"));
    let (events, done) = sse_events(&text);
    assert!(done);
    // First: no choices, the prompt filter results.
    assert_eq!(events[0]["choices"], json!([]));
    assert_eq!(events[0]["prompt_filter_results"][0]["prompt_index"], 0);
    // Then the role.
    assert_eq!(events[1]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(events[1]["object"], "chat.completion.chunk");
    // Every chunk but the last has "usage": null.
    let (last, rest) = events.split_last().unwrap();
    for event in rest {
        assert_eq!(event.get("usage"), Some(&Value::Null), "{event}");
    }
    assert_eq!(last["choices"], json!([]));
    let finish = &rest[rest.len() - 1];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    // Content deltas add up to the non-streaming answer, and usage counts them.
    let streamed: String = rest[2..rest.len() - 1]
        .iter()
        .map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    let plain = json_of(env.chat("gpt-4o", hello()).await).await;
    assert_eq!(
        streamed,
        plain["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(
        last["usage"]["completion_tokens"].as_u64(),
        Some(rest.len() as u64 - 3)
    );
    assert_eq!(last["usage"]["prompt_tokens"], 9);
    assert_eq!(last["usage"], plain["usage"]);
}

#[tokio::test]
async fn streaming_without_include_usage_has_no_usage_field() {
    let env = Env::new().await;
    let mut body = hello();
    body["stream"] = json!(true);
    body["max_tokens"] = json!(2);
    let text = env.chat("gpt-4o", body).await.text().await.unwrap();
    let (events, done) = sse_events(&text);
    assert!(done);
    assert!(events.iter().all(|e| e.get("usage").is_none()));
    // opening, role, 2 deltas, finish.
    assert_eq!(events.len(), 5);
    assert_eq!(events[4]["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn stream_options_without_stream_is_a_400() {
    let env = Env::new().await;
    let mut body = hello();
    body["stream_options"] = json!({"include_usage": true});
    let response = env.chat("gpt-4o", body).await;
    assert_eq!(response.status(), 400);
    assert_eq!(json_of(response).await["error"]["param"], "stream_options");
}

// ---------------------------------------------------------------- completions

#[tokio::test]
async fn completions_default_to_sixteen_tokens_and_honour_n_and_prompt_arrays() {
    let env = Env::new().await;
    let url = env.deployment_url("aoai-eastus", "instruct", "completions");
    let answer = json_of(
        env.post(&url, EAST_KEY, &json!({"prompt": "Once upon a time"}))
            .await,
    )
    .await;
    assert_eq!(answer["object"], "text_completion");
    let tokens = answer["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(tokens <= 16);
    assert_eq!(answer["usage"]["prompt_tokens"], 4);

    let answer = json_of(
        env.post(
            &url,
            EAST_KEY,
            &json!({"prompt": ["one", "two"], "n": 2, "max_tokens": 4}),
        )
        .await,
    )
    .await;
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    assert!(choices.iter().all(|c| c["finish_reason"] == "length"));
    assert_eq!(answer["usage"]["completion_tokens"], 16);
    assert_eq!(answer["prompt_filter_results"].as_array().unwrap().len(), 2);

    let echoed = json_of(
        env.post(
            &url,
            EAST_KEY,
            &json!({"prompt": "Echo me", "echo": true, "max_tokens": 2}),
        )
        .await,
    )
    .await;
    assert!(echoed["choices"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("Echo me"));
}

#[tokio::test]
async fn completions_stream_text_chunks_and_done() {
    let env = Env::new().await;
    let url = env.deployment_url("aoai-eastus", "gpt-35-turbo", "completions");
    let response = env
        .post(
            &url,
            EAST_KEY,
            &json!({"prompt": "Hi", "stream": true, "max_tokens": 3}),
        )
        .await;
    let (events, done) = sse_events(&response.text().await.unwrap());
    assert!(done);
    assert_eq!(events[0]["choices"], json!([]));
    let text: String = events[1..]
        .iter()
        .map(|e| e["choices"][0]["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(text.split(' ').count(), 3);
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
}

// ---------------------------------------------------------------- embeddings

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn embeddings_are_deterministic_unit_vectors_of_the_deployment_dimension() {
    let env = Env::new().await;
    let url = env.deployment_url("aoai-eastus", "text-embedding-3-small", "embeddings");
    let answer = json_of(
        env.post(&url, EAST_KEY, &json!({"input": "hello world"}))
            .await,
    )
    .await;
    assert_eq!(answer["object"], "list");
    let vector = floats(&answer["data"][0]["embedding"]);
    assert_eq!(vector.len(), 1536);
    assert!((norm(&vector) - 1.0).abs() < 1e-3);
    assert_eq!(
        answer["usage"],
        json!({"prompt_tokens": 2, "total_tokens": 2})
    );
    let again = json_of(
        env.post(&url, EAST_KEY, &json!({"input": ["hello world", "other"]}))
            .await,
    )
    .await;
    assert_eq!(
        again["data"][0]["embedding"],
        answer["data"][0]["embedding"]
    );
    assert_eq!(again["data"][1]["index"], 1);
    assert_ne!(
        again["data"][1]["embedding"],
        answer["data"][0]["embedding"]
    );

    let configured = env.deployment_url("aoai-eastus", "small-dims", "embeddings");
    let answer = json_of(
        env.post(&configured, EAST_KEY, &json!({"input": "x"}))
            .await,
    )
    .await;
    assert_eq!(answer["data"][0]["embedding"].as_array().unwrap().len(), 64);
}

#[tokio::test]
async fn embeddings_honour_dimensions_only_for_text_embedding_3_models() {
    let env = Env::new().await;
    let url = env.deployment_url("aoai-eastus", "text-embedding-3-small", "embeddings");
    let answer = json_of(
        env.post(&url, EAST_KEY, &json!({"input": "hi", "dimensions": 256}))
            .await,
    )
    .await;
    let vector = floats(&answer["data"][0]["embedding"]);
    assert_eq!(vector.len(), 256);
    assert!((norm(&vector) - 1.0).abs() < 1e-3);
    let too_big = env
        .post(&url, EAST_KEY, &json!({"input": "hi", "dimensions": 4000}))
        .await;
    assert_eq!(too_big.status(), 400);
    let ada = env.deployment_url("aoai-eastus", "ada", "embeddings");
    let refused = env
        .post(&ada, EAST_KEY, &json!({"input": "hi", "dimensions": 256}))
        .await;
    assert_eq!(refused.status(), 400);
}

#[tokio::test]
async fn base64_embeddings_decode_to_the_float_vector() {
    let env = Env::new().await;
    let url = env.deployment_url("aoai-eastus", "small-dims", "embeddings");
    let floats_answer = json_of(env.post(&url, EAST_KEY, &json!({"input": "abc"})).await).await;
    let b64 = json_of(
        env.post(
            &url,
            EAST_KEY,
            &json!({"input": "abc", "encoding_format": "base64"}),
        )
        .await,
    )
    .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f64> = bytes
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let expected = floats(&floats_answer["data"][0]["embedding"]);
    assert_eq!(decoded.len(), expected.len());
    for (a, b) in decoded.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[tokio::test]
async fn embeddings_without_input_are_a_400() {
    let env = Env::new().await;
    let url = env.deployment_url("aoai-eastus", "text-embedding-3-small", "embeddings");
    for body in [json!({}), json!({"input": ""}), json!({"input": []})] {
        assert_eq!(
            env.post(&url, EAST_KEY, &body).await.status(),
            400,
            "{body}"
        );
    }
}

// ---------------------------------------------------------------- v1 paths

#[tokio::test]
async fn v1_paths_take_the_deployment_as_model_and_need_no_api_version() {
    let env = Env::new().await;
    let base = format!("{}/openai/v1", env.sim.resource_url("aoai-eastus"));
    let chat = env
        .http
        .post(format!("{base}/chat/completions"))
        .bearer_auth(EAST_KEY)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    assert_eq!(json_of(chat).await["usage"]["prompt_tokens"], 9);

    let embeddings = env
        .post(
            &format!("{base}/embeddings"),
            EAST_KEY,
            &json!({"model": "text-embedding-3-small", "input": "hi", "dimensions": 8}),
        )
        .await;
    assert_eq!(embeddings.status(), 200);
    assert_eq!(
        json_of(embeddings).await["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        8
    );

    let no_model = env
        .post(&format!("{base}/chat/completions"), EAST_KEY, &hello())
        .await;
    assert_eq!(no_model.status(), 400);
    let mut unknown = hello();
    unknown["model"] = json!("nope");
    let unknown = env
        .post(&format!("{base}/chat/completions"), EAST_KEY, &unknown)
        .await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        json_of(unknown).await["error"]["code"],
        "DeploymentNotFound"
    );

    let models = env
        .http
        .get(format!("{base}/models"))
        .bearer_auth(EAST_KEY)
        .send()
        .await
        .unwrap();
    let models = json_of(models).await;
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "gpt-4o"));
}

// ---------------------------------------------------------------- rate limits

#[tokio::test]
async fn the_token_estimate_is_charged_and_a_429_follows_when_it_does_not_fit() {
    let env = Env::new().await;
    let mut body = hello();
    body["max_tokens"] = json!(600);
    let first = env.chat("tpm-1000", body.clone()).await;
    assert_eq!(first.status(), 200);
    // Estimate = 9 prompt + 600 max_tokens.
    assert_eq!(header(&first, "x-ratelimit-remaining-tokens"), Some("391"));
    assert_eq!(header(&first, "x-ratelimit-remaining-requests"), Some("99"));

    let second = env.chat("tpm-1000", body.clone()).await;
    assert_eq!(second.status(), 429);
    assert!(header(&second, "x-ms-region").is_some());
    let retry_after: u64 = header(&second, "retry-after").unwrap().parse().unwrap();
    let retry_after_ms: u64 = header(&second, "retry-after-ms").unwrap().parse().unwrap();
    assert!(
        retry_after_ms <= 60_000 && retry_after_ms > 50_000,
        "{retry_after_ms}"
    );
    assert_eq!(retry_after, retry_after_ms.div_ceil(1000));
    let error = json_of(second).await;
    assert_eq!(error["error"]["code"], "429", "the code is a string");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("token rate limit"), "{message}");
    assert!(
        message.contains(&format!("Please retry after {retry_after} seconds.")),
        "{message}"
    );

    // A request that still fits is admitted.
    let mut small = hello();
    small["max_tokens"] = json!(300);
    assert_eq!(env.chat("tpm-1000", small).await.status(), 200);

    // The next minute the window is fresh.
    env.sim.advance_clock(Duration::from_millis(retry_after_ms));
    let recovered = env.chat("tpm-1000", body).await;
    assert_eq!(recovered.status(), 200);
    assert_eq!(
        header(&recovered, "x-ratelimit-remaining-tokens"),
        Some("391")
    );
}

#[tokio::test]
async fn without_max_tokens_the_estimate_uses_the_deployment_default() {
    let mut config = config();
    let mut deployment = DeploymentConfig::new("budget", "gpt-4o")
        .with_tpm(10_000)
        .with_rpm(1000);
    deployment.default_max_tokens = 4096;
    config.resources[0].deployments.push(deployment);
    let env = Env::with(config).await;
    let first = env.chat("budget", hello()).await;
    assert_eq!(
        header(&first, "x-ratelimit-remaining-tokens"),
        Some(&*(10_000 - 9 - 4096).to_string())
    );
    assert_eq!(env.chat("budget", hello()).await.status(), 200);
    assert_eq!(env.chat("budget", hello()).await.status(), 429);
}

#[tokio::test]
async fn the_estimate_is_multiplied_by_n() {
    let env = Env::new().await;
    let mut body = hello();
    body["max_tokens"] = json!(100);
    body["n"] = json!(3);
    let response = env.chat("tpm-1000", body).await;
    assert_eq!(
        header(&response, "x-ratelimit-remaining-tokens"),
        Some(&*(1000 - 3 * 109).to_string())
    );
}

#[tokio::test]
async fn rpm_is_six_per_thousand_tpm_enforced_per_ten_second_window() {
    let env = Env::new().await;
    let mut body = hello();
    body["max_tokens"] = json!(10);
    let first = env.chat("rpm-6", body.clone()).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-ratelimit-remaining-requests"), Some("0"));
    let second = env.chat("rpm-6", body.clone()).await;
    assert_eq!(second.status(), 429);
    let retry_after_ms: u64 = header(&second, "retry-after-ms").unwrap().parse().unwrap();
    assert!(retry_after_ms <= 10_000, "{retry_after_ms}");
    let message = json_of(second).await["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("call rate limit"), "{message}");
    env.sim.advance_clock(Duration::from_millis(retry_after_ms));
    assert_eq!(env.chat("rpm-6", body).await.status(), 200);
}

#[tokio::test]
async fn embeddings_charge_their_prompt_tokens() {
    let mut config = config();
    config.resources[0].deployments.push(
        DeploymentConfig::new("emb-limited", "text-embedding-3-small")
            .with_tpm(1000)
            .with_rpm(100),
    );
    let env = Env::with(config).await;
    let url = env.deployment_url("aoai-eastus", "emb-limited", "embeddings");
    let response = env
        .post(&url, EAST_KEY, &json!({"input": "hello world"}))
        .await;
    assert_eq!(
        header(&response, "x-ratelimit-remaining-tokens"),
        Some("998")
    );
}

#[tokio::test]
async fn rate_limits_are_per_deployment() {
    let env = Env::new().await;
    let mut body = hello();
    body["max_tokens"] = json!(10);
    assert_eq!(env.chat("rpm-6", body.clone()).await.status(), 200);
    assert_eq!(env.chat("rpm-6", body.clone()).await.status(), 429);
    assert_eq!(env.chat("tpm-1000", body).await.status(), 200);
}

// ---------------------------------------------------------------- latency

#[tokio::test]
async fn the_latency_model_delays_plain_and_streaming_answers() {
    let env = Env::new().await;
    let mut body = hello();
    body["max_tokens"] = json!(3);
    let start = Instant::now();
    assert_eq!(env.chat("slow", body.clone()).await.status(), 200);
    // 120 ms to the first token + 2 x 10 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(140),
        "{:?}",
        start.elapsed()
    );

    body["stream"] = json!(true);
    let start = Instant::now();
    let response = env.chat("slow", body).await;
    let headers_after = start.elapsed();
    let text = response.text().await.unwrap();
    assert!(
        headers_after < Duration::from_millis(120),
        "headers come before the first token"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(140),
        "{:?}",
        start.elapsed()
    );
    assert!(sse_events(&text).1);
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn a_status_fault_fails_the_next_n_requests_then_clears() {
    let env = Env::new().await;
    env.fault("aoai-eastus", None, 2, status_fault(500));
    for _ in 0..2 {
        let response = env.chat("gpt-4o", hello()).await;
        assert_eq!(response.status(), 500);
        assert!(header(&response, "apim-request-id").is_some());
        assert_eq!(
            json_of(response).await["error"]["code"],
            "InternalServerError"
        );
    }
    assert_eq!(env.chat("gpt-4o", hello()).await.status(), 200);
    assert!(env.sim.faults().is_empty());
}

#[tokio::test]
async fn a_503_fault_answers_service_unavailable() {
    let env = Env::new().await;
    env.sim.inject_fault(
        FaultSpec::status("aoai-eastus", 503)
            .for_deployment("gpt-4o")
            .times(1)
            .with_retry_after_ms(250)
            .with_header("x-should-retry", "false"),
    );
    let response = env.chat("gpt-4o", hello()).await;
    assert_eq!(response.status(), 503);
    assert_eq!(header(&response, "retry-after-ms"), Some("250"));
    assert_eq!(header(&response, "x-should-retry"), Some("false"));
    assert_eq!(
        json_of(response).await["error"]["code"],
        "ServiceUnavailable"
    );
    assert_eq!(env.chat("gpt-4o", hello()).await.status(), 200);
}

#[tokio::test]
async fn a_429_fault_carries_the_chosen_retry_headers_or_none() {
    let env = Env::new().await;
    env.fault(
        "aoai-eastus",
        None,
        1,
        FaultAction::Status {
            status: 429,
            retry_after: Some(7),
            retry_after_ms: Some(6500),
            headers: [("x-should-retry".to_owned(), "true".to_owned())].into(),
            body: None,
        },
    );
    env.fault("aoai-eastus", None, 1, status_fault(429));
    let first = env.chat("gpt-4o", hello()).await;
    assert_eq!(first.status(), 429);
    assert_eq!(header(&first, "retry-after"), Some("7"));
    assert_eq!(header(&first, "retry-after-ms"), Some("6500"));
    assert_eq!(header(&first, "x-should-retry"), Some("true"));
    let error = json_of(first).await;
    assert_eq!(error["error"]["code"], "429");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Please retry after 7 seconds"));
    let second = env.chat("gpt-4o", hello()).await;
    assert_eq!(second.status(), 429);
    assert!(header(&second, "retry-after").is_none());
    assert!(header(&second, "retry-after-ms").is_none());
}

#[tokio::test]
async fn a_fault_can_target_one_deployment() {
    let env = Env::new().await;
    env.fault("aoai-eastus", Some("gpt-35-turbo"), 1, status_fault(503));
    assert_eq!(env.chat("gpt-4o", hello()).await.status(), 200);
    assert_eq!(env.chat("gpt-35-turbo", hello()).await.status(), 503);
    assert_eq!(env.chat("gpt-35-turbo", hello()).await.status(), 200);
}

#[tokio::test]
async fn a_fault_with_count_zero_lasts_until_deleted() {
    let env = Env::new().await;
    let created = env
        .control(
            reqwest::Method::POST,
            "/faults",
            Some(json!({"resource": "aoai-eastus", "kind": "status", "status": 500, "count": 0})),
        )
        .await;
    assert_eq!(created.status(), 201);
    let id = json_of(created).await["id"].as_u64().unwrap();
    for _ in 0..3 {
        assert_eq!(env.chat("gpt-4o", hello()).await.status(), 500);
    }
    let listed = json_of(env.control(reqwest::Method::GET, "/faults", None).await).await;
    assert_eq!(listed["faults"][0]["hits"], 3);
    let deleted = env
        .control(reqwest::Method::DELETE, &format!("/faults/{id}"), None)
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(env.chat("gpt-4o", hello()).await.status(), 200);
}

#[tokio::test]
async fn a_delay_fault_delays_then_answers_normally() {
    let env = Env::new().await;
    env.fault("aoai-eastus", None, 1, FaultAction::Delay { delay_ms: 150 });
    let start = Instant::now();
    assert_eq!(env.chat("gpt-4o", hello()).await.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(150));
    let start = Instant::now();
    assert_eq!(env.chat("gpt-4o", hello()).await.status(), 200);
    assert!(start.elapsed() < Duration::from_millis(150));
}

#[tokio::test]
async fn a_reset_fault_closes_the_connection_without_an_answer() {
    let env = Env::new().await;
    env.fault("aoai-eastus", None, 1, FaultAction::Reset);
    let url = env.deployment_url("aoai-eastus", "gpt-4o", "chat/completions");
    let result = env
        .http
        .post(&url)
        .header("api-key", EAST_KEY)
        .json(&hello())
        .send()
        .await;
    let error = result.expect_err("no HTTP answer");
    assert!(!error.is_status() && !error.is_timeout(), "{error:?}");
    // The request did arrive, and the emulator keeps serving.
    let log = env.sim.requests(Some("aoai-eastus"));
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].body_json(), Some(hello()));
    assert_eq!(
        log[0].header("api-key"),
        Some(&*format!("<masked:{}>", fingerprint(EAST_KEY)))
    );
    assert_eq!(env.chat("gpt-4o", hello()).await.status(), 200);
}

#[tokio::test]
async fn a_cut_stream_fault_drops_the_connection_after_k_chunks() {
    let env = Env::new().await;
    env.fault(
        "aoai-eastus",
        None,
        1,
        FaultAction::CutStream { after_chunks: 3 },
    );
    // A plain request does not consume the fault.
    assert_eq!(env.chat("gpt-4o", hello()).await.status(), 200);
    let mut body = hello();
    body["stream"] = json!(true);
    let response = env.chat("gpt-4o", body.clone()).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body ends with an error, not a clean end");
    let text = String::from_utf8(received).unwrap();
    assert_eq!(text.matches("data: ").count(), 3, "{text}");
    assert!(!text.contains("[DONE]"));
    // The next stream is whole.
    let text = env.chat("gpt-4o", body).await.text().await.unwrap();
    assert!(sse_events(&text).1);
}

#[tokio::test]
async fn faults_on_a_search_service_apply_before_search_handles_the_request() {
    let env = Env::new().await;
    env.fault("search-shared-1", None, 1, status_fault(503));
    let url = format!(
        "{}/indexes?api-version=2024-07-01",
        env.sim.resource_url("search-shared-1")
    );
    let response = env
        .http
        .get(&url)
        .header("api-key", "search-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(header(&response, "x-ms-region").is_some());
}

#[tokio::test]
async fn a_fault_for_an_unknown_resource_is_refused() {
    let env = Env::new().await;
    let response = env
        .control(
            reqwest::Method::POST,
            "/faults",
            Some(json!({"resource": "nobody", "kind": "reset"})),
        )
        .await;
    assert_eq!(response.status(), 404);
}

// ---------------------------------------------------------------- request log

#[tokio::test]
async fn the_request_log_masks_keys_with_a_fingerprint_and_keeps_path_and_body() {
    let env = Env::new().await;
    env.chat("gpt-4o", hello()).await;
    let url = format!(
        "{}/openai/v1/chat/completions",
        env.sim.resource_url("aoai-westeurope")
    );
    env.http
        .post(&url)
        .bearer_auth(WEST_KEY)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let all = json_of(env.control(reqwest::Method::GET, "/requests", None).await).await;
    let requests = all["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2);
    let east = &requests[0];
    assert_eq!(east["resource"], "aoai-eastus");
    assert_eq!(east["method"], "POST");
    assert_eq!(
        east["path"],
        format!("/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}")
    );
    assert_eq!(
        east["headers"]["api-key"],
        format!("<masked:{}>", fingerprint(EAST_KEY))
    );
    assert_eq!(east["body"], hello());
    assert!(!all.to_string().contains(EAST_KEY) && !all.to_string().contains(WEST_KEY));
    let west = json_of(
        env.control(
            reqwest::Method::GET,
            "/requests?resource=aoai-westeurope",
            None,
        )
        .await,
    )
    .await;
    let west = west["requests"].as_array().unwrap();
    assert_eq!(west.len(), 1);
    assert_eq!(
        west[0]["headers"]["authorization"],
        format!("Bearer <masked:{}>", fingerprint(WEST_KEY))
    );
    assert_eq!(west[0]["request_id"].as_str().map(str::len), Some(36));
}

#[tokio::test]
async fn the_request_log_is_bounded() {
    let mut config = config();
    config.request_log_capacity = Some(3);
    let env = Env::with(config).await;
    for _ in 0..5 {
        env.chat("gpt-4o", hello()).await;
    }
    let log = env.sim.requests(None);
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].seq, 3);
}

// ---------------------------------------------------------------- control API

#[tokio::test]
async fn resources_and_deployments_can_be_added_and_removed_at_runtime() {
    let env = Env::new().await;
    let created = env
        .control(
            reqwest::Method::POST,
            "/resources",
            Some(
                json!({"name": "aoai-swedencentral", "region": "swedencentral", "keys": ["k-swe"],
                        "deployments": [{"name": "gpt-4o", "tpm": 30000}]}),
            ),
        )
        .await;
    assert_eq!(created.status(), 201);
    let url = env.deployment_url("aoai-swedencentral", "gpt-4o", "chat/completions");
    let response = env.post(&url, "k-swe", &hello()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-ms-region"), Some("swedencentral"));
    assert_eq!(
        header(&response, "x-ratelimit-remaining-requests"),
        Some("29")
    );

    let duplicate = env
        .control(
            reqwest::Method::POST,
            "/resources",
            Some(json!({"name": "search-shared-1"})),
        )
        .await;
    assert_eq!(duplicate.status(), 409, "names are unique across kinds");

    let added = env
        .control(
            reqwest::Method::POST,
            "/resources/aoai-swedencentral/deployments",
            Some(json!({"name": "mini", "model": "gpt-4o-mini"})),
        )
        .await;
    assert_eq!(added.status(), 201);
    let mini = env.deployment_url("aoai-swedencentral", "mini", "chat/completions");
    assert_eq!(env.post(&mini, "k-swe", &hello()).await.status(), 200);
    let removed = env
        .control(
            reqwest::Method::DELETE,
            "/resources/aoai-swedencentral/deployments/mini",
            None,
        )
        .await;
    assert_eq!(removed.status(), 204);
    assert_eq!(env.post(&mini, "k-swe", &hello()).await.status(), 404);

    let listed = json_of(env.control(reqwest::Method::GET, "/resources", None).await).await;
    let names: Vec<&str> = listed["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["aoai-eastus", "aoai-swedencentral", "aoai-westeurope"]
    );

    let deleted = env
        .control(
            reqwest::Method::DELETE,
            "/resources/aoai-swedencentral",
            None,
        )
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(env.post(&url, "k-swe", &hello()).await.status(), 404);
}

#[tokio::test]
async fn search_services_can_be_added_listed_and_removed_at_runtime() {
    let env = Env::new().await;
    let created = env
        .control(
            reqwest::Method::POST,
            "/search-services",
            Some(json!({"name": "search-eu-1", "region": "westeurope", "admin_keys": ["a"], "query_keys": ["q"]})),
        )
        .await;
    assert_eq!(created.status(), 201);
    let listed = json_of(
        env.control(reqwest::Method::GET, "/search-services", None)
            .await,
    )
    .await;
    let names: Vec<&str> = listed["search_services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["search-eu-1", "search-shared-1"]);
    let wrong_kind = env
        .control(reqwest::Method::DELETE, "/resources/search-eu-1", None)
        .await;
    assert_eq!(wrong_kind.status(), 404);
    let deleted = env
        .control(
            reqwest::Method::DELETE,
            "/search-services/search-eu-1",
            None,
        )
        .await;
    assert_eq!(deleted.status(), 204);
}

#[tokio::test]
async fn reset_clears_faults_log_rate_limits_and_responses_but_keeps_resources() {
    let env = Env::new().await;
    let mut body = hello();
    body["max_tokens"] = json!(10);
    assert_eq!(env.chat("rpm-6", body.clone()).await.status(), 200);
    assert_eq!(env.chat("rpm-6", body.clone()).await.status(), 429);
    env.fault("aoai-eastus", None, 5, status_fault(500));
    let reset = env.control(reqwest::Method::POST, "/reset", None).await;
    assert_eq!(reset.status(), 204);
    assert!(env.sim.requests(None).is_empty());
    assert!(env.sim.faults().is_empty());
    assert_eq!(env.chat("rpm-6", body).await.status(), 200);
}

#[tokio::test]
async fn the_clock_can_be_read_and_advanced_over_http() {
    let env = Env::new().await;
    let before = json_of(env.control(reqwest::Method::GET, "/clock", None).await).await["now_ms"]
        .as_u64()
        .unwrap();
    let after = json_of(
        env.control(
            reqwest::Method::POST,
            "/clock/advance",
            Some(json!({"ms": 60_000})),
        )
        .await,
    )
    .await["now_ms"]
        .as_u64()
        .unwrap();
    assert!(after >= before + 60_000);
}

// ---------------------------------------------------------------- responses API

#[tokio::test]
async fn responses_are_created_fetched_and_chained_on_their_own_resource_only() {
    let env = Env::new().await;
    let east = format!(
        "{}/openai/v1/responses",
        env.sim.resource_url("aoai-eastus")
    );
    let west = format!(
        "{}/openai/v1/responses",
        env.sim.resource_url("aoai-westeurope")
    );
    let created = env
        .post(
            &east,
            EAST_KEY,
            &json!({"model": "gpt-4o", "input": "Tell me a story", "max_output_tokens": 20}),
        )
        .await;
    assert_eq!(created.status(), 200);
    let first = json_of(created).await;
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_"));
    assert_eq!(first["object"], "response");
    assert_eq!(first["output"][0]["content"][0]["type"], "output_text");
    let input_tokens = first["usage"]["input_tokens"].as_u64().unwrap();

    let fetched = env
        .http
        .get(format!("{east}/{id}"))
        .header("api-key", EAST_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(json_of(fetched).await["id"], id.as_str());

    // Another resource does not know the id.
    let elsewhere = env
        .http
        .get(format!("{west}/{id}"))
        .header("api-key", WEST_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
    let chained_elsewhere = env
        .post(
            &west,
            WEST_KEY,
            &json!({"model": "gpt-4o", "input": "more", "previous_response_id": id}),
        )
        .await;
    assert_eq!(chained_elsewhere.status(), 400);
    assert_eq!(
        json_of(chained_elsewhere).await["error"]["code"],
        "previous_response_not_found"
    );

    // The same resource continues the conversation, which grows the input.
    let chained = json_of(
        env.post(
            &east,
            EAST_KEY,
            &json!({"model": "gpt-4o", "input": "more", "previous_response_id": id}),
        )
        .await,
    )
    .await;
    assert_eq!(chained["previous_response_id"], id.as_str());
    assert!(chained["usage"]["input_tokens"].as_u64().unwrap() > input_tokens);

    let deleted = env
        .http
        .delete(format!("{east}/{id}"))
        .header("api-key", EAST_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let gone = env
        .http
        .get(format!("{east}/{id}"))
        .header("api-key", EAST_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn the_versioned_responses_path_requires_an_api_version() {
    let env = Env::new().await;
    let base = format!("{}/openai/responses", env.sim.resource_url("aoai-eastus"));
    let body = json!({"model": "gpt-4o", "input": "hi"});
    assert_eq!(env.post(&base, EAST_KEY, &body).await.status(), 400);
    let ok = env
        .post(
            &format!("{base}?api-version=2025-04-01-preview"),
            EAST_KEY,
            &body,
        )
        .await;
    assert_eq!(ok.status(), 200);
}

// ---------------------------------------------------------------- configuration and binary

#[tokio::test]
async fn config_files_in_json_and_toml_describe_the_same_resources() {
    let dir = std::env::temp_dir().join(format!("azure-sim-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("sim.json");
    std::fs::write(
        &json_path,
        r#"{"resources":[{"name":"aoai-a","region":"eastus","keys":["k"],
            "deployments":[{"name":"gpt-4o","tpm":1000,"ttft_ms":5}]}],
            "search_services":[{"name":"search-a","admin_keys":["a"],"query_keys":["q"]}],
            "rate_limits":{"token_window_ms":60000,"request_window_ms":10000}}"#,
    )
    .unwrap();
    let toml_path = dir.join("sim.toml");
    std::fs::write(
        &toml_path,
        r#"
[[resources]]
name = "aoai-a"
region = "eastus"
keys = ["k"]
[[resources.deployments]]
name = "gpt-4o"
tpm = 1000
ttft_ms = 5

[[search_services]]
name = "search-a"
admin_keys = ["a"]
query_keys = ["q"]
"#,
    )
    .unwrap();
    let from_json = SimConfig::from_file(&json_path).unwrap();
    let from_toml = SimConfig::from_file(&toml_path).unwrap();
    for config in [from_json, from_toml] {
        assert_eq!(config.resources[0].deployments[0].tpm, Some(1000));
        assert_eq!(config.resources[0].deployments[0].ttft_ms, 5);
        assert_eq!(config.search_services[0].query_keys, vec!["q".to_owned()]);
    }
    std::fs::write(&json_path, r#"{"resources":[{"name":"x","bogus":1}]}"#).unwrap();
    assert!(
        SimConfig::from_file(&json_path).is_err(),
        "unknown fields are refused"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_binary_writes_its_address_to_the_ready_file_and_serves() {
    let dir = std::env::temp_dir().join(format!("azure-sim-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sim.json");
    std::fs::write(
        &config,
        r#"{"resources":[{"name":"aoai-a","keys":["k"],"deployments":[{"name":"gpt-4o"}]}]}"#,
    )
    .unwrap();
    let ready = dir.join("ready");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_azure-sim"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--ready-file")
        .arg(&ready)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        if let Ok(addr) = std::fs::read_to_string(&ready) {
            break addr;
        }
        assert!(Instant::now() < deadline, "ready file never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let url = format!(
        "http://{addr}/r/aoai-a/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
    );
    let response = reqwest::Client::new()
        .post(&url)
        .header("api-key", "k")
        .json(&hello())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    child.kill().ok();
    child.wait().ok();
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn with_a_data_dir_runtime_additions_survive_a_restart_and_the_config_file_wins() {
    let dir = std::env::temp_dir().join(format!("azure-sim-data-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let mut config = config();
    config.data_dir = Some(dir.clone());
    let first = Env::with(config.clone()).await;
    let added = first
        .control(
            reqwest::Method::POST,
            "/resources",
            Some(
                json!({"name": "aoai-runtime", "region": "japaneast", "keys": ["k-rt"],
                        "deployments": [{"name": "gpt-4o"}]}),
            ),
        )
        .await;
    assert_eq!(added.status(), 201);
    first
        .control(reqwest::Method::DELETE, "/resources/aoai-westeurope", None)
        .await;
    first.sim.shutdown().await;

    let second = Env::with(config).await;
    let url = second.deployment_url("aoai-runtime", "gpt-4o", "chat/completions");
    let response = second.post(&url, "k-rt", &hello()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-ms-region"), Some("japaneast"));
    // Resources of the configuration file come back even if deleted at runtime.
    let west = second.deployment_url("aoai-westeurope", "gpt-4o", "chat/completions");
    assert_eq!(second.post(&west, WEST_KEY, &hello()).await.status(), 200);
    std::fs::remove_dir_all(&dir).ok();
}
