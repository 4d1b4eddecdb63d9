//! HTTP origin against real servers on 127.0.0.1: a hyper server (plain and TLS) for
//! normal traffic, raw TCP servers for misbehaviour (silence, stalls, garbage, a
//! viewer that goes away mid-stream).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fileproxy::config::OriginConfig;
use fileproxy::origin::http_origin::HttpOrigin;
use fileproxy::origin::{FetchClass, OriginBody, OriginError, OriginRequest};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIG: usize = 300_000;

fn payload() -> Bytes {
    (0..BIG).map(|i| (i * 31 + i / 997) as u8).collect()
}

/// What the test server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    method: Method,
    headers: HeaderMap,
}

/// A hyper origin on 127.0.0.1 counting connections and recording requests.
struct TestServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    seen.lock().unwrap().push(Seen {
        uri: req.uri().to_string(),
        method: req.method().clone(),
        headers: req.headers().clone(),
    });
    let path = req.uri().path().to_owned();
    let resp = if path.ends_with("/big") {
        Response::builder()
            .header("content-type", "video/mp2t")
            .body(Full::new(payload()))
    } else if path.ends_with("/missing") {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"nope")))
    } else {
        Response::builder().body(Full::new(Bytes::from_static(b"ok")))
    };
    Ok(resp.unwrap())
}

async fn start_server(tls: Option<tokio_rustls::TlsAcceptor>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (acc, sn) = (accepted.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            acc.fetch_add(1, Ordering::SeqCst);
            let sn = sn.clone();
            let svc = service_fn(move |req| handle(req, sn.clone()));
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    }
                    None => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    }
                }
            });
        }
    });
    TestServer {
        addr,
        accepted,
        seen,
    }
}

fn config(url: String) -> OriginConfig {
    OriginConfig {
        url: url.parse().unwrap(),
        ..OriginConfig::default()
    }
}

fn request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    class: FetchClass,
) -> OriginRequest {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    OriginRequest {
        method,
        path: path.into(),
        headers: map,
        client_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
        class,
    }
}

fn get(path: &str) -> OriginRequest {
    request(Method::GET, path, &[], FetchClass::Other)
}

async fn collect(resp: Response<OriginBody>) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn byte_exact_and_pooled_connection_reused() {
    let server = start_server(None).await;
    let origin = HttpOrigin::new(&config(format!("http://{}", server.addr))).unwrap();
    assert_eq!(origin.pool_state().kind, "http");
    for _ in 0..5 {
        let (status, headers, body) = collect(origin.fetch(get("/v/big")).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "video/mp2t");
        assert_eq!(body, payload());
    }
    let state = origin.pool_state();
    assert_eq!(state.connections_opened, 1);
    assert_eq!(state.in_flight, 0);
    assert_eq!(state.connect_timeouts, 0);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn in_flight_counts_until_the_body_is_finished() {
    let server = start_server(None).await;
    let origin = HttpOrigin::new(&config(format!("http://{}", server.addr))).unwrap();
    let resp = origin.fetch(get("/big")).await.unwrap();
    assert_eq!(origin.pool_state().in_flight, 1);
    let (_, _, body) = collect(resp).await;
    assert_eq!(body.len(), BIG);
    assert_eq!(origin.pool_state().in_flight, 0);
}

#[tokio::test]
async fn forwards_headers_and_prefixes_base_path() {
    let server = start_server(None).await;
    let mut cfg = config(format!("http://{}/base/", server.addr));
    cfg.host_header = "media.example".into();
    let origin = HttpOrigin::new(&cfg).unwrap();
    let req = request(
        Method::GET,
        "/vod/2024-05-01/abc/seg%201.ts",
        &[
            ("user-agent", "Mozilla/5.0 Test"),
            ("range", "bytes=10-19"),
            ("if-range", "\"tag\""),
            ("if-none-match", "\"x\""),
            ("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT"),
            ("connection", "close"),
            ("host", "viewer.example"),
            ("x-forwarded-for", "6.6.6.6"),
        ],
        FetchClass::Other,
    );
    let (status, _, body) = collect(origin.fetch(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"ok");
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, Method::GET);
    assert_eq!(s.uri, "/base/vod/2024-05-01/abc/seg%201.ts");
    assert_eq!(s.headers["host"], "media.example");
    assert_eq!(s.headers["x-forwarded-for"], "203.0.113.9");
    assert_eq!(s.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(s.headers["user-agent"], "Mozilla/5.0 Test");
    assert_eq!(s.headers["range"], "bytes=10-19");
    assert_eq!(s.headers["if-range"], "\"tag\"");
    assert_eq!(s.headers["if-none-match"], "\"x\"");
    assert_eq!(
        s.headers["if-modified-since"],
        "Mon, 01 Jan 2001 00:00:00 GMT"
    );
    assert!(s.headers.get("connection").is_none());
    assert_eq!(
        origin.url_for("/a.ts"),
        format!("http://{}/base/a.ts", server.addr)
    );

    // No host_header: the origin's own authority; IPv6 client in XFF.
    let origin = HttpOrigin::new(&config(format!("http://{}", server.addr))).unwrap();
    let mut req = get("/plain");
    req.client_ip = "2001:db8::1".parse().unwrap();
    collect(origin.fetch(req).await.unwrap()).await;
    let seen = server.seen.lock().unwrap().clone();
    let s = seen.last().unwrap();
    assert_eq!(s.uri, "/plain");
    assert_eq!(s.headers["host"], server.addr.to_string());
    assert_eq!(s.headers["x-forwarded-for"], "2001:db8::1");
    assert!(s.headers.get("user-agent").is_none());
}

#[tokio::test]
async fn statuses_pass_through_and_head_has_no_body() {
    let server = start_server(None).await;
    let origin = HttpOrigin::new(&config(format!("http://{}", server.addr))).unwrap();
    let (status, _, body) = collect(origin.fetch(get("/missing")).await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(&body[..], b"nope");
    let req = request(Method::HEAD, "/big", &[], FetchClass::Other);
    let (status, headers, body) = collect(origin.fetch(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], BIG.to_string());
    assert!(body.is_empty());
    assert_eq!(
        server.seen.lock().unwrap().last().unwrap().method,
        Method::HEAD
    );
    assert_eq!(origin.pool_state().in_flight, 0);
}

#[tokio::test]
async fn refused_port_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let origin = HttpOrigin::new(&config(format!("http://127.0.0.1:{port}"))).unwrap();
    let err = origin.fetch(get("/a.ts")).await.unwrap_err();
    assert!(matches!(err, OriginError::Unreachable(_)), "{err}");
    let state = origin.pool_state();
    assert_eq!(state.in_flight, 0);
    assert_eq!(state.connections_opened, 0);
    assert_eq!(state.connect_timeouts, 0);
}

/// Accepts connections and holds them open without ever answering.
async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

#[tokio::test]
async fn silent_origin_times_out_by_class() {
    let addr = silent_server().await;
    let mut cfg = config(format!("http://{addr}"));
    cfg.timeout_ms = 300;
    cfg.playlist_timeout_ms = 150;
    let origin = HttpOrigin::new(&cfg).unwrap();
    let err = origin.fetch(get("/a.ts")).await.unwrap_err();
    assert!(
        matches!(err, OriginError::Timeout(d) if d == Duration::from_millis(300)),
        "{err}"
    );
    let req = request(Method::GET, "/a.m3u8", &[], FetchClass::Playlist);
    let err = origin.fetch(req).await.unwrap_err();
    assert!(
        matches!(err, OriginError::Timeout(d) if d == Duration::from_millis(150)),
        "{err}"
    );
    assert_eq!(origin.pool_state().in_flight, 0);
    assert_eq!(origin.pool_state().connect_timeouts, 0);
}

#[tokio::test]
async fn connect_timeout_is_a_timeout_and_counted() {
    // A listener with backlog 0 that never accepts: once one connection sits in its
    // accept queue, the kernel drops further SYNs, so the next connect hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..2 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(s);
        }
    }
    let mut cfg = config(format!("http://{addr}"));
    cfg.connect_timeout_ms = 200;
    cfg.timeout_ms = 20_000;
    let origin = HttpOrigin::new(&cfg).unwrap();
    let err = origin.fetch(get("/a.ts")).await.unwrap_err();
    assert!(
        matches!(err, OriginError::Timeout(d) if d == Duration::from_millis(200)),
        "{err}"
    );
    let state = origin.pool_state();
    assert_eq!(state.connect_timeouts, 1);
    assert_eq!(state.connections_opened, 0);
    assert_eq!(state.in_flight, 0);
    drop(listener);
}

/// Reads one request head from `s`.
async fn read_head(s: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut byte).await.unwrap();
        assert!(n > 0, "client closed before sending a request");
        buf.extend_from_slice(&byte[..n]);
    }
}

#[tokio::test]
async fn dropping_the_body_closes_the_origin_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_head(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
            .await
            .unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        let outcome = loop {
            if let Err(e) = s.write_all(&chunk).await {
                break Ok(e.kind());
            }
            sent += chunk.len();
            if sent >= 1 << 30 {
                break Err("whole body written: the client kept reading");
            }
        };
        let _ = tx.send(outcome);
    });
    let origin = HttpOrigin::new(&config(format!("http://{addr}"))).unwrap();
    let resp = origin.fetch(get("/live.ts")).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(!first.into_data().unwrap().is_empty());
    assert_eq!(origin.pool_state().in_flight, 1);
    drop(body);
    assert_eq!(origin.pool_state().in_flight, 0);
    // Guard against a hang only; the assertion is on what the server saw.
    let kind = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .expect("origin connection still open after the body was dropped")
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            kind,
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{kind:?}"
    );
    assert_eq!(origin.pool_state().connections_opened, 1);
}

/// A raw origin that answers each request with `response` and then, if `hold`,
/// keeps the connection open without sending more.
async fn raw_server(response: &'static [u8], hold: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            read_head(&mut s).await;
            s.write_all(response).await.unwrap();
            if hold {
                held.push(s);
            }
        }
    });
    addr
}

#[tokio::test]
async fn stalled_body_hits_the_idle_timeout() {
    let addr = raw_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
        true,
    )
    .await;
    let mut cfg = config(format!("http://{addr}"));
    cfg.timeout_ms = 300;
    let origin = HttpOrigin::new(&cfg).unwrap();
    let resp = origin.fetch(get("/a.ts")).await.unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let err = loop {
        match body.frame().await {
            Some(Ok(frame)) => got.extend_from_slice(&frame.into_data().unwrap()),
            Some(Err(e)) => break e,
            None => panic!("body ended without an error"),
        }
    };
    assert_eq!(&got[..], b"0123456789");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(body.frame().await.is_none());
    assert_eq!(origin.pool_state().in_flight, 0);
}

#[tokio::test]
async fn truncated_body_is_an_error() {
    let addr = raw_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
        false,
    )
    .await;
    let origin = HttpOrigin::new(&config(format!("http://{addr}"))).unwrap();
    let resp = origin.fetch(get("/a.ts")).await.unwrap();
    assert!(resp.into_body().collect().await.is_err());
    assert_eq!(origin.pool_state().in_flight, 0);
}

#[tokio::test]
async fn garbage_response_is_unreachable() {
    let addr = raw_server(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", false).await;
    let origin = HttpOrigin::new(&config(format!("http://{addr}"))).unwrap();
    let err = origin.fetch(get("/a.ts")).await.unwrap_err();
    assert!(matches!(err, OriginError::Unreachable(_)), "{err}");
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let certs =
        rustls_pemfile::certs(&mut &std::fs::read(dir.join("origin-cert.pem")).unwrap()[..])
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
    let key =
        rustls_pemfile::private_key(&mut &std::fs::read(dir.join("origin-key.pem")).unwrap()[..])
            .unwrap()
            .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

#[tokio::test]
async fn https_origin_with_and_without_verification() {
    let server = start_server(Some(tls_acceptor())).await;
    let url = format!("https://localhost:{}", server.addr.port());

    let mut cfg = config(url.clone());
    cfg.tls_verify = false;
    let origin = HttpOrigin::new(&cfg).unwrap();
    assert_eq!(origin.pool_state().kind, "https");
    for _ in 0..3 {
        let (status, _, body) = collect(origin.fetch(get("/big")).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, payload());
    }
    assert_eq!(origin.pool_state().connections_opened, 1);
    assert_eq!(
        server.seen.lock().unwrap()[0].headers["x-forwarded-for"],
        "203.0.113.9"
    );

    // A self-signed certificate fails verification against the webpki roots.
    let origin = HttpOrigin::new(&config(url)).unwrap();
    let err = origin.fetch(get("/big")).await.unwrap_err();
    assert!(matches!(err, OriginError::Unreachable(_)), "{err}");
}
