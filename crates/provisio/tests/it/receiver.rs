//! Real HTTP receivers on loopback ports that record what they get and answer
//! as a test scripts them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::sync::Notify;

use crate::helpers::PATIENCE;

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
    pub at: tokio::time::Instant,
    /// The status the receiver answered with.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

/// What a receiver answers: a status (and optional delay) per request, by
/// the order requests arrive in; the last entry repeats.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
            body: String::new(),
            headers: Vec::new(),
        }
    }

    pub fn delayed(status: u16, delay: Duration) -> Self {
        Self {
            delay,
            ..Self::status(status)
        }
    }

    pub fn with_body(status: u16, body: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            ..Self::status(status)
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Decides the reply to the n-th request.
type ReplyFn = Box<dyn FnMut(&Received, usize) -> Reply + Send>;

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    replies: Mutex<ReplyFn>,
    arrived: Notify,
    /// TCP connections accepted so far.
    connections: AtomicUsize,
}

/// A real HTTP receiver on a loopback port that records what it gets.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Answers 200 to everything.
    pub async fn ok() -> Receiver {
        Self::with(|_, _| Reply::status(200)).await
    }

    /// Answers 503 until `up` is set, then 200: a receiver that is down for
    /// a while.
    pub async fn down_until(up: Arc<std::sync::atomic::AtomicBool>) -> Receiver {
        Self::with(move |_, _| {
            Reply::status(if up.load(std::sync::atomic::Ordering::SeqCst) {
                200
            } else {
                503
            })
        })
        .await
    }

    /// Answers with `replies[n]` to the n-th request (the last repeats).
    pub async fn sequence(replies: Vec<Reply>) -> Receiver {
        Self::with(move |_, n| replies[n.min(replies.len() - 1)].clone()).await
    }

    /// Answers with whatever `reply` decides for each request and its index.
    pub async fn with(reply: impl FnMut(&Received, usize) -> Reply + Send + 'static) -> Receiver {
        let state = Arc::new(ReceiverState {
            received: Mutex::new(Vec::new()),
            replies: Mutex::new(Box::new(reply)),
            arrived: Notify::new(),
            connections: AtomicUsize::new(0),
        });
        let app_state = state.clone();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: HeaderMap,
                  body: String| {
                let state = app_state.clone();
                async move {
                    let mut received = Received {
                        method: method.to_string(),
                        path: uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        headers,
                        body,
                        at: tokio::time::Instant::now(),
                        status: 0,
                    };
                    let reply = {
                        let mut list = state.received.lock().unwrap();
                        let n = list.len();
                        let reply = (state.replies.lock().unwrap())(&received, n);
                        received.status = reply.status;
                        list.push(received);
                        reply
                    };
                    state.arrived.notify_waiters();
                    if !reply.delay.is_zero() {
                        tokio::time::sleep(reply.delay).await;
                    }
                    let mut response = axum::response::IntoResponse::into_response((
                        StatusCode::from_u16(reply.status).unwrap(),
                        reply.body,
                    ));
                    for (name, value) in reply.headers {
                        response.headers_mut().insert(name, value.parse().unwrap());
                    }
                    response
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counted = state.clone();
        let listener = listener.tap_io(move |_| {
            counted.connections.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// How many TCP connections the receiver has accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived, and returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        self.wait_for_within(n, PATIENCE).await
    }

    /// [`Receiver::wait_for`], for runs longer than the usual patience.
    pub async fn wait_for_within(&self, n: usize, patience: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let notified = self.state.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("expected {n} requests, got {}", self.received().len());
            }
        }
    }
}
