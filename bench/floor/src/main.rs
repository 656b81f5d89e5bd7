//! The floor of the gateway benchmark: the least a Rust proxy on the gateway's own stack
//! (tokio's multi-thread runtime, hyper's HTTP/1 server, hyper-util's pooled client) can do
//! per request. It reads the whole body, swaps `api-key` for the upstream's, forwards to one
//! fixed upstream and returns its answer, with TCP_NODELAY on both sides. No routing,
//! authentication, metering or framework. See bench/README.md.
//!
//!   bench-floor LISTEN_ADDR UPSTREAM_BASE_URL UPSTREAM_KEY

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Proxy {
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
    key: hyper::header::HeaderValue,
}

async fn forward(proxy: Arc<Proxy>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    if !parts.headers.contains_key("api-key") {
        return status(StatusCode::UNAUTHORIZED);
    }
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(upstream) = Request::post(format!("{}{path}", proxy.upstream))
        .header("api-key", proxy.key.clone())
        .header("content-type", "application/json")
        .body(Full::new(body))
    else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Ok(answer) = proxy.client.request(upstream).await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let (parts, body) = answer.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = parts.status;
    for name in [
        "content-type",
        "x-ms-region",
        "apim-request-id",
        "x-request-id",
    ] {
        if let Some(value) = parts.headers.get(name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

/// The gateway's rule (crates/api/src/main.rs): one CPU, tokio's single-threaded scheduler;
/// more, the work-stealing pool with a worker per CPU.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let runtime = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve())
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench-floor LISTEN_ADDR UPSTREAM_BASE_URL UPSTREAM_KEY";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream = args.next().ok_or(usage)?;
    let key = args.next().ok_or(usage)?.parse()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let proxy = Arc::new(Proxy {
        client,
        upstream,
        key,
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let proxy = Arc::clone(&proxy);
                async move { Ok::<_, Infallible>(forward(proxy, request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
