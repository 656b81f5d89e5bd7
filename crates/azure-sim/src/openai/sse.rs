//! Server-sent events: `data: {json}\n\n` frames with per-frame delays (the latency model)
//! and an optional cut (the `cut_stream` fault: after K frames the body fails, so hyper drops
//! the connection mid-stream and no `data: [DONE]` arrives).

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderValue};

/// How long a cut stream waits before dropping the connection.
const CUT_FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// One frame and how long to wait before sending it.
pub struct Frame {
    pub delay: Duration,
    pub data: Bytes,
}

impl Frame {
    /// `data: {json}\n\n`.
    pub fn json<T: serde::Serialize>(delay: Duration, value: &T) -> Self {
        let mut data = Vec::with_capacity(256);
        data.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut data, value);
        data.extend_from_slice(b"\n\n");
        Frame {
            delay,
            data: Bytes::from(data),
        }
    }

    /// `data: [DONE]\n\n`.
    pub fn done() -> Self {
        Frame {
            delay: Duration::ZERO,
            data: Bytes::from_static(b"data: [DONE]\n\n"),
        }
    }
}

/// A `text/event-stream` response sending `frames`; with `cut_after = Some(k)` only the
/// first `k` frames are sent before the connection is dropped.
pub fn response(frames: Vec<Frame>, cut_after: Option<usize>) -> Response {
    let total = frames.len();
    let keep = cut_after.map_or(total, |k| k.min(total));
    let cut = cut_after.is_some();
    let frames = futures::stream::iter(frames.into_iter().take(keep)).then(|frame| async move {
        if !frame.delay.is_zero() {
            tokio::time::sleep(frame.delay).await;
        }
        Ok::<Bytes, std::io::Error>(frame.data)
    });
    // Before failing, pause: hyper flushes what it has written only when the body is
    // pending, and the client must receive the head and the first `k` frames.
    let ending = futures::stream::iter(cut.then_some(())).then(|()| async {
        tokio::time::sleep(CUT_FLUSH_PAUSE).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "stream cut by an injected fault",
        ))
    });
    let body = Body::from_stream(frames.chain(ending));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
