//! Node mode's HTTP endpoint. Each connection is served by its own task;
//! every request becomes a [`Query`] to the agent's event loop, which owns
//! all the state and answers it between events, so no lock is shared.
use std::{collections::HashMap, convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, header, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};

/// What a request asks of the agent.
#[derive(Debug)]
pub enum Ask {
    /// `/metrics`; `openmetrics` when the scraper accepts OpenMetrics.
    Metrics { openmetrics: bool },
    /// `/targets`.
    Targets,
    /// `/report?pid=N&format=F`.
    Report { params: HashMap<String, String> },
}

/// An answer: status, content type, body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn ok(content_type: &'static str, body: Vec<u8>) -> Self {
        Self { status: StatusCode::OK, content_type, body }
    }

    /// A one-line error, as plain text.
    pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Self {
        Self { status, content_type: "text/plain; charset=utf-8", body: format!("gcprobe: {message}\n").into_bytes() }
    }
}

/// A request on its way to the event loop, with where its answer goes.
pub struct Query {
    pub ask: Ask,
    pub reply: oneshot::Sender<Answer>,
}

/// Binds `addr` now, so a taken port is an error at start, not later.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Connections served at once: scrapers and people, not a crowd. Past it
/// a new connection waits for one to close.
const MAX_CONNECTIONS: usize = 32;
/// A client gets this long to send its request's headers.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections until the listener fails; each request is sent to
/// `queries`. The port is open to the pod network: a client that sends
/// nothing, or opens many connections, holds a bounded share of the agent.
pub async fn serve(listener: TcpListener, queries: mpsc::Sender<Query>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = std::sync::Arc::clone(&slots).acquire_owned().await else { return };
        let Ok((stream, _)) = listener.accept().await else { continue };
        let queries = queries.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, queries.clone()));
            // A client that hangs up mid-request is its own business.
            let _ = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

async fn answer(req: Request<Incoming>, queries: mpsc::Sender<Query>) -> Result<Response<Full<Bytes>>, Infallible> {
    let a = match route(&req) {
        Ok(ask) => {
            let (tx, rx) = oneshot::channel();
            if queries.send(Query { ask, reply: tx }).await.is_err() {
                Answer::error(StatusCode::SERVICE_UNAVAILABLE, "the agent is shutting down")
            } else {
                rx.await.unwrap_or_else(|_| Answer::error(StatusCode::SERVICE_UNAVAILABLE, "the agent is shutting down"))
            }
        }
        Err(a) => a,
    };
    let mut resp = Response::new(Full::new(Bytes::from(a.body)));
    *resp.status_mut() = a.status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(a.content_type));
    Ok(resp)
}

/// Which question a request asks; a bad request is answered here.
fn route(req: &Request<Incoming>) -> Result<Ask, Answer> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(Answer::error(StatusCode::METHOD_NOT_ALLOWED, "only GET"));
    }
    let params = query_params(req.uri().query().unwrap_or(""));
    match req.uri().path() {
        "/metrics" => {
            let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            Ok(Ask::Metrics { openmetrics: accept.contains("application/openmetrics-text") })
        }
        "/targets" => Ok(Ask::Targets),
        "/report" => Ok(Ask::Report { params }),
        "/" => Err(Answer::ok("text/plain; charset=utf-8", INDEX.as_bytes().to_vec())),
        other => Err(Answer::error(StatusCode::NOT_FOUND, format!("no page {other}: try /metrics, /targets or /report?pid=N"))),
    }
}

const INDEX: &str = "gcprobe node\n\n/metrics                      Prometheus metrics of every Go process watched\n/targets                      the processes watched, as JSON\n/report?pid=N&format=F        one process's report since it was first watched (F: text, json, pprof, perfetto, prometheus, html)\n/report?pid=N&window=60s      the same over the last 60 s (at most 10 minutes back)\n";

/// `a=1&b=2`, percent-decoded; a key given twice keeps its last value.
fn query_params(q: &str) -> HashMap<String, String> {
    q.split('&').filter(|kv| !kv.is_empty()).map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (decode(k), decode(v))
    }).collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        let p = query_params("pid=42&format=json&x=a%20b+c&bad=%zz&end=%4");
        assert_eq!(p["pid"], "42");
        assert_eq!(p["format"], "json");
        assert_eq!(p["x"], "a b c");
        assert_eq!(p["bad"], "%zz");
        assert_eq!(p["end"], "%4");
        assert!(query_params("").is_empty());
    }
}
