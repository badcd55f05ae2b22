//! The loopback listener of `login --browser` (RFC 8252): an HTTP/1 server
//! (hyper) on 127.0.0.1 that sends the opened browser on to the provider
//! once, then waits for the provider's redirect back with this login's
//! state.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, LOCATION};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use super::ClientError;

/// The one-time local address the opened browser starts at.
pub(crate) struct Start {
    pub(crate) path: String,
    target: String,
    used: AtomicBool,
}

impl Start {
    /// `path` redirects (once) to `target`, the provider's authorization URL.
    pub(crate) fn new(path: String, target: String) -> Start {
        Start {
            path,
            target,
            used: AtomicBool::new(false),
        }
    }
}

/// The query of the redirect back to the loopback listener.
pub(crate) struct Redirect {
    pub(crate) code: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) error_description: Option<String>,
    pub(crate) iss: Option<String>,
}

/// How many connections to the loopback listener are served at once; a
/// new one beyond that closes the oldest, so a connection never waits for
/// another.
const MAX_OPEN_CONNECTIONS: usize = 32;

/// How long a connection to the loopback listener has to send its request
/// head (a browser sends it at once).
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// The most a connection may send before its request head is complete.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

type Page = Response<Full<Bytes>>;

/// Answers requests on the loopback listener until one to /callback
/// carries `state`; others (a favicon, a stale tab) get a 404 or a 400.
/// Connections are served concurrently, each within `REQUEST_DEADLINE`,
/// at most `MAX_OPEN_CONNECTIONS` at a time: a connection that says
/// nothing delays no other.
pub(crate) async fn wait_for_redirect(
    listener: &tokio::net::TcpListener,
    state: &str,
    start: Arc<Start>,
) -> Result<Redirect, ClientError> {
    let (found, mut answers) = mpsc::channel::<Redirect>(1);
    let state: Arc<str> = Arc::from(state);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(REQUEST_DEADLINE)
        .max_buf_size(MAX_REQUEST_HEAD)
        // One request per connection, answered even when the client has
        // closed its side after sending it.
        .keep_alive(false)
        .half_close(true)
        .auto_date_header(false);
    let mut open = JoinSet::new();
    let mut order: VecDeque<AbortHandle> = VecDeque::new();
    loop {
        tokio::select! {
            Some(redirect) = answers.recv() => return Ok(redirect),
            accepted = listener.accept() => {
                let (socket, _) = accepted
                    .map_err(|e| ClientError::failed(format!("loopback listener: {e}")))?;
                while open.try_join_next().is_some() {}
                order.retain(|t| !t.is_finished());
                if order.len() >= MAX_OPEN_CONNECTIONS {
                    if let Some(oldest) = order.pop_front() {
                        oldest.abort();
                    }
                }
                let mut connection = Box::pin(serve(
                    http.clone(),
                    socket,
                    state.clone(),
                    start.clone(),
                    found.clone(),
                ));
                // Each connection is read once before the next is accepted:
                // a backlog of connections cannot evict a redirect that has
                // not been looked at.
                let first = std::future::poll_fn(|cx| Poll::Ready(connection.as_mut().poll(cx)));
                if first.await.is_pending() {
                    order.push_back(open.spawn(connection));
                }
            }
        }
    }
}

/// Serves one connection (one request); hands over the login's redirect
/// when it was one, once the browser has its page.
async fn serve(
    http: http1::Builder,
    socket: tokio::net::TcpStream,
    state: Arc<str>,
    start: Arc<Start>,
    found: mpsc::Sender<Redirect>,
) {
    let redirect = Arc::new(Mutex::new(None));
    let service = {
        let redirect = redirect.clone();
        hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let (page, answer) = answer(&request, &state, &start);
            if let (Some(answer), Ok(mut slot)) = (answer, redirect.lock()) {
                *slot = Some(answer);
            }
            std::future::ready(Ok::<_, Infallible>(page))
        })
    };
    // Ends when the response is written (no keep-alive), when the request
    // head is late or malformed, or when the client goes away.
    let _ = http.serve_connection(TokioIo::new(socket), service).await;
    // Only now: the listener stops, and drops every other connection, as
    // soon as it has the redirect.
    let answer = redirect.lock().ok().and_then(|mut slot| slot.take());
    if let Some(answer) = answer {
        let _ = found.try_send(answer);
    }
}

/// The page for one request, and the login's redirect when it is one.
fn answer(
    request: &Request<hyper::body::Incoming>,
    state: &str,
    start: &Start,
) -> (Page, Option<Redirect>) {
    // Only GET is answered; anything else is not found.
    let target = if request.method() == Method::GET {
        request.uri().to_string()
    } else {
        String::new()
    };
    let Ok(url) = url::Url::parse(&format!("http://127.0.0.1{target}")) else {
        return (page(StatusCode::BAD_REQUEST, "Not a login redirect."), None);
    };
    if url.path() == start.path && !start.used.swap(true, Ordering::SeqCst) {
        return (redirect_to(&start.target), None);
    }
    if url.path() != "/callback" {
        return (page(StatusCode::NOT_FOUND, "Not found."), None);
    }
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if param("state").as_deref() != Some(state) {
        let text = "This answer belongs to another login attempt; it was ignored.";
        return (page(StatusCode::BAD_REQUEST, text), None);
    }
    let redirect = Redirect {
        code: param("code"),
        error: param("error"),
        error_description: param("error_description"),
        iss: param("iss"),
    };
    let text = if redirect.error.is_some() {
        "The login was not completed. You can close this window."
    } else {
        "Logged in to NATS. You can close this window."
    };
    (page(StatusCode::OK, text), Some(redirect))
}

/// A 302 to `location`.
fn redirect_to(location: &str) -> Page {
    // A serialized URL is always visible ASCII, so this does not fail.
    let Ok(location) = HeaderValue::from_str(location) else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The provider's address cannot be sent to the browser; open the printed one.",
        );
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A small HTML page saying `text`.
fn page(status: StatusCode, text: &str) -> Page {
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>nats-oidc-callout</title></head><body><p>{text}</p></body></html>"
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `request` on a new connection (closing its sending side after
    /// it when `half_close`) and reads the whole answer.
    async fn send(port: u16, request: &str, half_close: bool) -> String {
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        if half_close {
            socket.shutdown().await.unwrap();
        }
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn the_start_address_works_once_and_only_this_logins_answer_is_taken() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let start = Arc::new(Start::new(
            "/start/r4nd0m".into(),
            "https://id.example.com/auth?state=s1".into(),
        ));
        let waiting = tokio::spawn(async move {
            let r = wait_for_redirect(&listener, "s1", start).await.unwrap();
            (r.code, r.error, r.iss)
        });
        let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");

        let first = send(port, &get("/start/r4nd0m"), false).await;
        assert!(first.starts_with("HTTP/1.1 302"), "{first}");
        assert!(
            first.contains("location: https://id.example.com/auth?state=s1\r\n"),
            "{first}"
        );
        let again = send(port, &get("/start/r4nd0m"), false).await;
        assert!(again.starts_with("HTTP/1.1 404"), "one time only: {again}");
        let posted = "POST /callback?state=s1&code=c HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n";
        let posted = send(port, posted, false).await;
        assert!(posted.starts_with("HTTP/1.1 404"), "{posted}");
        let stale = send(port, &get("/callback?state=s0&code=c"), false).await;
        assert!(stale.starts_with("HTTP/1.1 400"), "{stale}");
        assert!(stale.contains("another login attempt"), "{stale}");
        assert!(!waiting.is_finished());

        // Answered although the browser closed its side after the request.
        let done = send(
            port,
            &get("/callback?state=s1&code=c0de&iss=https%3A%2F%2Fid.example.com"),
            true,
        )
        .await;
        assert!(done.starts_with("HTTP/1.1 200"), "{done}");
        assert!(done.contains("Logged in to NATS"), "{done}");
        assert!(done.contains("cache-control: no-store\r\n"), "{done}");
        let (code, error, iss) = waiting.await.unwrap();
        assert_eq!(code.as_deref(), Some("c0de"));
        assert_eq!(error, None);
        assert_eq!(iss.as_deref(), Some("https://id.example.com"));
    }

    /// A connection that says nothing is closed after `REQUEST_DEADLINE`
    /// (tokio's paused clock: no real wait).
    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_has_ten_seconds() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let start = Arc::new(Start::new(
            "/start/x".into(),
            "https://id.example.com/".into(),
        ));
        let _waiting =
            tokio::spawn(async move { wait_for_redirect(&listener, "s1", start).await.is_ok() });
        let began = tokio::time::Instant::now();
        let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = silent.read_to_end(&mut rest).await;
        let waited = began.elapsed();
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
        assert!(
            waited >= REQUEST_DEADLINE && waited < REQUEST_DEADLINE + Duration::from_secs(1),
            "closed after {waited:?}"
        );
    }
}
