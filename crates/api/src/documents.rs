//! The OpenAPI documents against the routers that serve them: a route without a document entry
//! (or an entry without a route) fails the build's tests. The routers are read from their own
//! source (`.route("PATH", get(..).post(..))`), since axum does not list its routes.

#![cfg(test)]

use std::collections::BTreeSet;

use serde_json::Value;

/// (METHOD, path) of every `.route(..)` in `source` between `start` and the next `fn `.
fn routed(source: &str, start: &str) -> BTreeSet<(String, String)> {
    let body = source.split(start).nth(1).expect("the router function");
    let body = body.split("\nfn ").next().unwrap_or(body);
    let body = body.split("\npub fn ").next().unwrap_or(body);
    let mut routes = BTreeSet::new();
    for call in body.split(".route(").skip(1) {
        let path = call.split('"').nth(1).expect("a path literal");
        // The handlers of this route: up to the next `.route(` (already split) or `.layer(`.
        let handlers = call.split(".layer(").next().unwrap_or(call);
        for method in ["get", "post", "put", "patch", "delete", "any"] {
            let mut rest = handlers;
            while let Some(at) = rest.find(&format!("{method}(")) {
                let before = rest[..at].chars().last();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    routes.insert((method.to_uppercase(), path.to_owned()));
                }
                rest = &rest[at + method.len()..];
            }
        }
    }
    routes
}

/// (METHOD, path) of every operation in an OpenAPI document; `{id}:cancel` is routed as
/// `{id}` (axum cannot match a suffix after a parameter; the handler checks it).
fn documented(document: &str) -> BTreeSet<(String, String)> {
    let document: Value = serde_json::from_str(document).expect("the document is JSON");
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        let path = match path.find("}:") {
            Some(at) => &path[..=at],
            None => path,
        };
        for method in item.as_object().expect("a path item").keys() {
            operations.insert((method.to_uppercase(), path.to_owned()));
        }
    }
    operations
}

#[test]
fn every_admin_route_is_documented_and_every_documented_operation_is_routed() {
    let routes = routed(include_str!("admin/mod.rs"), "pub fn routes()");
    let document = documented(crate::admin::OPENAPI);
    assert!(routes.len() >= 30, "{routes:?}");
    let undocumented: Vec<_> = routes.difference(&document).collect();
    let unrouted: Vec<_> = document.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "routed, not documented: {undocumented:?}"
    );
    assert!(unrouted.is_empty(), "documented, not routed: {unrouted:?}");
}

#[test]
fn every_tenant_route_of_the_gateways_own_is_documented_and_routed() {
    // Azure's and OpenAI's own routes are described by their specs, not by this document.
    let azures = |path: &str| {
        [
            "completions",
            "embeddings",
            "responses",
            "/openai/deployments",
            "indexes",
            "{odata}",
        ]
        .iter()
        .any(|part| path.contains(part))
    };
    let routes: BTreeSet<_> = routed(include_str!("startup.rs"), "pub fn router(")
        .into_iter()
        .filter(|(_, path)| {
            (path.starts_with("/v1/") || path.starts_with("/openai/")) && !azures(path)
        })
        .collect();
    let document = documented(crate::models::TENANT_OPENAPI);
    assert!(routes.len() >= 7, "{routes:?}");
    assert_eq!(routes, document);
}

#[test]
fn the_route_reader_sees_what_it_is_shown() {
    let source = r#"pub fn routes() {
        Router::new()
            .route("/a", post(create).get(list))
            .route("/a/{id}", delete(remove).patch(update))
            .route("/b", get(crate::x::get_b))
    }
    fn next() {}"#;
    let expected: BTreeSet<(String, String)> = [
        ("POST", "/a"),
        ("GET", "/a"),
        ("DELETE", "/a/{id}"),
        ("PATCH", "/a/{id}"),
        ("GET", "/b"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(routed(source, "pub fn routes()"), expected);
}
