//! The HTTP client every HTTP-based sink shares (keep-alive connection pool,
//! `http://` and `https://` with the TLS roots of `SINK_CA_FILE` or the
//! system), and `pushMethod.http`: a POST of each record.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::SinkError;
use super::method::HttpPush;
use super::options::{DataOptions, PayloadFormat};
use super::target::{Entry, Route, TargetSpec};

/// Most bytes of a response body read (the rest is not needed).
const MAX_RESPONSE: usize = 64 << 10;

/// A keep-alive HTTP/1.1 client.
#[derive(Clone)]
pub(crate) struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// A client trusting the roots of `SINK_CA_FILE` or the system.
    pub(crate) fn new() -> Result<Self, SinkError> {
        let tls = super::client_tls("SINK_CA_FILE")?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(4)
            .build(https);
        Ok(Self { inner })
    }

    /// POSTs `body` to `uri` and returns the response body (at most 64 KiB).
    ///
    /// Errors: [`SinkError::Unreachable`] when no answer came within
    /// `timeout` or the connection failed; [`SinkError::Refused`] for a
    /// non-2xx status, with the status and the start of the body.
    pub(crate) async fn post(
        &self,
        uri: &Uri,
        content_type: &'static str,
        headers: &[(HeaderName, HeaderValue)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, SinkError> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(CONTENT_TYPE, content_type);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SinkError::Config(format!("{uri}: {e}")))?;
        let call = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| SinkError::Unreachable(format!("{uri}: {}", chain(&e))))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                Ok(body)
            } else {
                let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                Err(SinkError::Refused(format!(
                    "{uri}: {status}: {}",
                    text.trim()
                )))
            }
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| SinkError::Unreachable(format!("{uri}: no answer within {timeout:?}")))?
    }
}

/// An error with its sources, `a: b: c`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Parses `text` as an absolute `http(s)://` URI.
pub(crate) fn parse_uri(what: &str, text: &str) -> Result<Uri, SinkError> {
    let uri: Uri = text
        .parse()
        .map_err(|e| SinkError::Config(format!("{what} `{text}`: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some() => Ok(uri),
        _ => Err(SinkError::Config(format!(
            "{what} `{text}`: expected http://host[:port]/… or https://…"
        ))),
    }
}

/// The target and route of one property's `pushMethod.http`. `hostName`
/// carries the scheme as in mapper-framework (`http://10.0.0.5`); a bare host
/// means `http://`.
pub(super) fn route(h: &HttpPush) -> Result<(TargetSpec, Route), SinkError> {
    let host = h.host_name.trim().trim_end_matches('/');
    if host.is_empty() {
        return Err(SinkError::Config("http hostName is empty".into()));
    }
    let with_scheme = if host.contains("://") {
        host.to_owned()
    } else {
        format!("http://{host}")
    };
    let base = match h.port {
        0 => with_scheme,
        p if (1..=65535).contains(&p) => format!("{with_scheme}:{p}"),
        p => return Err(SinkError::Config(format!("http port {p} is out of range"))),
    };
    let path = if h.request_path.starts_with('/') {
        h.request_path.clone()
    } else {
        format!("/{}", h.request_path)
    };
    parse_uri("http push", &format!("{base}{path}"))?;
    // One target per URL: an endpoint that refuses (a wrong path) holds back
    // only its own records, not those of other paths on the same server.
    Ok((
        TargetSpec::Http {
            base: format!("{base}{path}"),
        },
        Route::Http {
            path: String::new(),
            timeout_ms: u64::try_from(h.timeout_ms).unwrap_or(0),
        },
    ))
}

/// One HTTP server of `pushMethod.http`.
pub(crate) struct HttpTarget {
    client: HttpClient,
    base: String,
    format: PayloadFormat,
    timeout: Duration,
}

impl HttpTarget {
    /// A client of the server at `base` (`scheme://host:port`).
    pub(crate) fn new(base: &str, opts: &DataOptions) -> Result<Self, SinkError> {
        parse_uri("http push", base)?;
        Ok(Self {
            client: HttpClient::new()?,
            base: base.to_owned(),
            format: opts.payload,
            timeout: opts.delivery_timeout,
        })
    }

    /// POSTs each record in order; stops at the first failure.
    pub(crate) async fn deliver(&mut self, batch: &[Arc<Entry>]) -> Result<(), SinkError> {
        for e in batch {
            let Route::Http { path, timeout_ms } = &e.route else {
                continue;
            };
            let uri = parse_uri("http push", &format!("{}{path}", self.base))?;
            let (ct, body) = match self.format {
                PayloadFormat::Json => ("application/json", e.record.document_bytes()),
                PayloadFormat::Stock => (
                    "application/x-www-form-urlencoded",
                    e.record.stock_http_form().into_bytes(),
                ),
            };
            let timeout = match timeout_ms {
                0 => self.timeout,
                ms => Duration::from_millis(*ms).min(self.timeout),
            };
            self.client.post(&uri, ct, &[], body, timeout).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(host: &str, port: i64, path: &str) -> HttpPush {
        HttpPush {
            host_name: host.into(),
            port,
            request_path: path.into(),
            timeout_ms: 0,
        }
    }

    #[test]
    fn routes() {
        let (t, r) = route(&push("http://10.0.0.5", 8080, "/in")).unwrap();
        assert_eq!(
            t,
            TargetSpec::Http {
                base: "http://10.0.0.5:8080/in".into()
            }
        );
        assert_eq!(
            r,
            Route::Http {
                path: String::new(),
                timeout_ms: 0
            }
        );
        let (t, _) = route(&push("collector", 0, "data")).unwrap();
        assert_eq!(
            t,
            TargetSpec::Http {
                base: "http://collector/data".into()
            }
        );
        assert!(
            route(&push("ftp://x", 1, "/"))
                .unwrap_err()
                .to_string()
                .contains("ftp://x")
        );
        assert!(route(&push("", 1, "/")).is_err());
        assert!(
            route(&push("h", 70000, "/"))
                .unwrap_err()
                .to_string()
                .contains("70000")
        );
    }
}
