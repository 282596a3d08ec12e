//! Fault injection at the HTTP level (feature `http`): wrap an SDK client's
//! HTTP connector so that a seeded share of requests is throttled (503
//! SlowDown), fails transiently (500 InternalError), is answered 200 with an
//! `<Error>` body (S3 CopyObject, UploadPartCopy, CompleteMultipartUpload), or
//! loses its connection (before the request reaches the server, or in the
//! middle of a GET's response body). The real SDK, our error classification
//! and our retries see each of them. Every fault is counted in
//! [`HttpFaults::counts`].

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector,
    http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fault::{FaultCounts, FaultKind};

const SLOW_DOWN: &str =
    "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
const INTERNAL_ERROR: &str = "<Error><Code>InternalError</Code><Message>We encountered an \
                              internal error. Please try again.</Message></Error>";

/// Which HTTP faults to inject, and how often (shares of requests, drawn
/// from one seeded generator). Clones share the generator and the counts.
#[derive(Debug, Clone)]
pub struct HttpFaults {
    throttle: f64,
    transient: f64,
    error_in_200: f64,
    reset: f64,
    body_reset: f64,
    rng: Arc<Mutex<StdRng>>,
    counts: FaultCounts,
}

impl Default for HttpFaults {
    fn default() -> Self {
        HttpFaults {
            throttle: 0.0,
            transient: 0.0,
            error_in_200: 0.0,
            reset: 0.0,
            body_reset: 0.0,
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(0x5eed))),
            counts: FaultCounts::new(),
        }
    }
}

impl HttpFaults {
    /// No faults (add them with the setters).
    pub fn new() -> Self {
        Self::default()
    }

    /// The share of requests answered 503 SlowDown.
    pub fn with_throttle_rate(mut self, rate: f64) -> Self {
        self.throttle = rate;
        self
    }

    /// The share of requests answered 500 InternalError.
    pub fn with_transient_rate(mut self, rate: f64) -> Self {
        self.transient = rate;
        self
    }

    /// The share of S3 CopyObject, UploadPartCopy and
    /// CompleteMultipartUpload requests answered 200 with an `<Error>` body
    /// (the operation not done, as S3 does).
    pub fn with_error_in_200_rate(mut self, rate: f64) -> Self {
        self.error_in_200 = rate;
        self
    }

    /// The share of requests whose connection drops before they reach the
    /// server (an I/O error: connection reset).
    pub fn with_reset_rate(mut self, rate: f64) -> Self {
        self.reset = rate;
        self
    }

    /// The share of successful GET responses with a body whose connection
    /// drops halfway through the body.
    pub fn with_body_reset_rate(mut self, rate: f64) -> Self {
        self.body_reset = rate;
        self
    }

    /// The random seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        self
    }

    /// The faults injected so far.
    pub fn counts(&self) -> &FaultCounts {
        &self.counts
    }

    /// Wraps a connector.
    pub fn wrap_connector(&self, inner: SharedHttpConnector) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultyConnector { inner, faults: self.clone() })
    }

    /// Wraps an HTTP client (give the result to the SDK config's `http_client`).
    pub fn wrap_client(&self, base: SharedHttpClient) -> SharedHttpClient {
        let faults = self.clone();
        http_client_fn(move |settings, components| {
            faults.wrap_connector(base.http_connector(settings, components))
        })
    }

    /// An HTTP client that sends every request to `connector` through these
    /// faults (an in-process server, for instance).
    pub fn client_for(&self, connector: SharedHttpConnector) -> SharedHttpClient {
        let wrapped = self.wrap_connector(connector);
        http_client_fn(move |_, _| wrapped.clone())
    }
}

/// What to do with one request.
enum Decision {
    Pass,
    Fault(FaultKind),
    BodyReset,
}

#[derive(Debug)]
struct FaultyConnector {
    inner: SharedHttpConnector,
    faults: HttpFaults,
}

/// Whether S3 may answer `request` 200 with an `<Error>` body: CopyObject,
/// UploadPartCopy (a PUT with `x-amz-copy-source`) and
/// CompleteMultipartUpload (a POST with an `uploadId`).
fn error_in_200_applies(request: &HttpRequest) -> bool {
    let query = request.uri().split_once('?').map(|(_, q)| q).unwrap_or("");
    let copy = request.method() == "PUT" && request.headers().get("x-amz-copy-source").is_some();
    let complete =
        request.method() == "POST" && query.split('&').any(|p| p.starts_with("uploadId="));
    copy || complete
}

impl FaultyConnector {
    fn decide(&self, request: &HttpRequest) -> Decision {
        let f = &self.faults;
        let x: f64 = f.rng.lock().expect("lock").random();
        let mut edge = f.reset;
        if x < edge {
            return Decision::Fault(FaultKind::ConnectionReset);
        }
        edge += f.throttle;
        if x < edge {
            return Decision::Fault(FaultKind::Throttle);
        }
        edge += f.transient;
        if x < edge {
            return Decision::Fault(FaultKind::Transient);
        }
        edge += f.error_in_200;
        if x < edge {
            return if error_in_200_applies(request) {
                Decision::Fault(FaultKind::ErrorIn200)
            } else {
                Decision::Pass
            };
        }
        edge += f.body_reset;
        if x < edge && request.method() == "GET" {
            return Decision::BodyReset;
        }
        Decision::Pass
    }
}

fn response(status: u16, body: &'static str) -> HttpResponse {
    let mut r =
        HttpResponse::new(StatusCode::try_from(status).expect("status"), SdkBody::from(body));
    r.headers_mut().insert("content-type", "application/xml");
    r
}

fn reset() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer (injected)")
}

/// A body that yields the first half of `data`, then fails as a dropped
/// connection does.
fn broken_body(data: Bytes) -> SdkBody {
    let half = data.slice(..data.len() / 2);
    let frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> =
        vec![Ok(http_body::Frame::data(half)), Err(reset())];
    SdkBody::from_body_1_x(http_body_util::StreamBody::new(futures::stream::iter(frames)))
}

impl HttpConnector for FaultyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let counts = self.faults.counts.clone();
        match self.decide(&request) {
            Decision::Pass => self.inner.call(request),
            Decision::Fault(kind) => {
                counts.add(kind);
                HttpConnectorFuture::ready(match kind {
                    FaultKind::ConnectionReset => Err(ConnectorError::io(reset().into())),
                    FaultKind::Throttle => Ok(response(503, SLOW_DOWN)),
                    FaultKind::ErrorIn200 => Ok(response(200, INTERNAL_ERROR)),
                    _ => Ok(response(500, INTERNAL_ERROR)),
                })
            }
            Decision::BodyReset => {
                let call = self.inner.call(request);
                HttpConnectorFuture::new(async move {
                    let mut response = call.await?;
                    let data = response.body().bytes().map(Bytes::copy_from_slice);
                    match data {
                        Some(data) if response.status().is_success() && data.len() >= 2 => {
                            counts.add(FaultKind::ConnectionReset);
                            *response.body_mut() = broken_body(data);
                            Ok(response)
                        }
                        _ => Ok(response),
                    }
                })
            }
        }
    }
}
