//! The upstream connector: plain TCP, or a CONNECT tunnel through the proxy that `HTTPS_PROXY`
//! (or `ALL_PROXY`) names for https upstreams, unless `NO_PROXY` exempts the host: the
//! variables curl reads, read once at start. TLS runs inside the tunnel, so the proxy sees the
//! host and port only. Plain-http upstreams (the emulator) always go direct, and the proxy
//! itself is reached over plain http (`http://[user:password@]proxy:port`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Connector {
    direct: HttpConnector,
    proxies: Arc<Matcher>,
}

impl Connector {
    pub(crate) fn new(direct: HttpConnector, proxies: Matcher) -> Self {
        Self {
            direct,
            proxies: Arc::new(proxies),
        }
    }

    /// The proxy an upstream at `dst` is reached through, if any.
    fn proxy_for(&self, dst: &Uri) -> Option<hyper_util::client::proxy::matcher::Intercept> {
        if dst.scheme_str() != Some("https") {
            return None;
        }
        self.proxies.intercept(dst)
    }
}

impl Service<Uri> for Connector {
    type Response = <HttpConnector as Service<Uri>>::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self.proxy_for(&dst) {
            Some(proxy) => {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), self.direct.clone());
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move { tunnel.call(dst).await.map_err(Into::into) })
            }
            None => {
                let mut direct = self.direct.clone();
                Box::pin(async move { direct.call(dst).await.map_err(Into::into) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(https_proxy: &str, no_proxy: &str) -> Connector {
        let matcher = Matcher::builder().https(https_proxy).no(no_proxy).build();
        Connector::new(HttpConnector::new(), matcher)
    }

    #[test]
    fn only_https_upstreams_outside_no_proxy_go_through_the_proxy() {
        let c = connector("http://proxy.internal:3128", "localhost,.corp.example");
        let via = |uri: &str| {
            c.proxy_for(&uri.parse().unwrap())
                .map(|p| p.uri().to_string())
        };
        assert_eq!(
            via("https://aoai.openai.azure.com/openai/x").as_deref(),
            Some("http://proxy.internal:3128/")
        );
        assert_eq!(via("http://aoai.openai.azure.com/openai/x"), None);
        assert_eq!(via("https://aoai.corp.example/openai/x"), None);
        assert_eq!(via("https://localhost:8443/"), None);
        assert_eq!(
            connector("", "")
                .proxy_for(&"https://a.example/".parse().unwrap())
                .map(|_| ()),
            None
        );
    }
}
