//! The real server on a loopback port: slow clients are cut off, TLS. (The CLI's serve flags
//! are tested where they live, in autoglm-cli's `serve` module.)

use crate::Packages;
use autoglm_serve::{load_tls, serve_on, AppState, Config, ServeOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// A server on 127.0.0.1:<any>; stops (and closes its connections) when dropped. The other
/// test modules start theirs with [`Server::plain`].
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    /// Without TLS.
    pub(crate) async fn plain(config: &Config) -> Server {
        Server::start(config, None).await
    }

    /// `http://` and the address.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn start(config: &Config, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let state = AppState::start(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = ServeOptions {
            grace: Duration::from_millis(100),
            tls,
        };
        tokio::spawn(serve_on(state, listener, options, async move {
            let _ = stopped.await;
        }));
        Server { addr, _stop: stop }
    }
}

fn quick_timeouts(p: &Packages) -> Config {
    let mut config = p.config();
    config.limits.header_timeout = Duration::from_secs(1);
    config.limits.body_timeout = Duration::from_secs(1);
    config
}

/// Reads until the server closes the connection (EOF or reset), or panics after `limit`.
/// Returns what arrived and when the connection closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf))
            .await
        {
            Err(_) => panic!(
                "the server kept the connection open past {limit:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

#[tokio::test]
async fn a_slow_header_client_is_disconnected() {
    let p = Packages::new();
    let server = Server::start(&quick_timeouts(&p), None).await;
    // Part of a request head, then nothing.
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial
        .write_all(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .await
        .unwrap();
    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let (_, after) = read_until_closed(&mut partial, Duration::from_secs(5)).await;
    assert!(after < Duration::from_secs(3), "closed after {after:?}");
    let (_, after) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(after < Duration::from_secs(3), "closed after {after:?}");
}

#[tokio::test]
async fn a_head_trickled_a_byte_at_a_time_is_cut_off_too() {
    let p = Packages::new();
    let server = Server::start(&quick_timeouts(&p), None).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // One byte every 200 ms: each arrives well within the timeout, the whole head never does.
    let trickle = tokio::spawn(async move {
        for b in b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa"
        {
            if write.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after 5 s");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    trickle.abort();
}

#[tokio::test]
async fn a_slow_body_client_gets_408_and_is_disconnected() {
    let p = Packages::new();
    let server = Server::start(&quick_timeouts(&p), None).await;
    // Headers promise 100 bytes; 10 arrive, then nothing.
    let mut stopped = TcpStream::connect(server.addr).await.unwrap();
    stopped
        .write_all(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"texts\": ")
        .await
        .unwrap();
    let (answer, after) = read_until_closed(&mut stopped, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");
    assert!(after < Duration::from_secs(3), "closed after {after:?}");

    // A body trickled a byte every 200 ms: each byte is in time, the whole body is not.
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if write.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let start = Instant::now();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "still open after 5 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    trickle.abort();
}

#[tokio::test]
async fn prompt_clients_are_served_over_keep_alive() {
    let p = Packages::new();
    let server = Server::start(&quick_timeouts(&p), None).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let body = r#"{"texts": ["good"]}"#;
    let request = format!(
        "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..2 {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // Idle past the header timeout: closed.
    let (_, after) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(after < Duration::from_secs(3));
}

/// A self-signed certificate for `localhost` and 127.0.0.1, as PEM files in `dir`.
fn self_signed(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, rcgen::Certificate) {
    let key =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    std::fs::write(&cert_path, key.cert.pem()).unwrap();
    std::fs::write(&key_path, key.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path, key.cert)
}

#[tokio::test]
async fn tls_serves_https_and_refuses_plain_http() {
    let p = Packages::new();
    let (cert_path, key_path, cert) = self_signed(p.dir.path());
    let tls = load_tls(&cert_path, &key_path).unwrap();
    let server = Server::start(&quick_timeouts(&p), Some(tls)).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let body = r#"{"texts": ["good"]}"#;
    tls.write_all(
        format!(
            "POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    // A server may close without close_notify after `Connection: close`; what arrived counts.
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""model":"cls""#), "{answer}");

    // Plain HTTP to the TLS port: no HTTP answer, the connection is closed.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut plain, Duration::from_secs(5)).await;
    assert!(!answer.contains("HTTP/1.1"), "{answer}");

    // A TLS client that sends nothing after connecting is cut off like a slow head.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let (_, after) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(after < Duration::from_secs(3));
}

#[test]
fn tls_files_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = self_signed(dir.path());
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (_, other_key, _) = self_signed(&other);
    let e = load_tls(&cert, &other_key).unwrap_err().to_string();
    assert!(e.contains("do not make a usable pair"), "{e}");
    let e = load_tls(&dir.path().join("missing.crt"), &key)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.crt"), "{e}");
    let e = load_tls(&key, &key).unwrap_err().to_string();
    assert!(e.contains("no CERTIFICATE"), "{e}");
    let e = load_tls(&cert, &cert).unwrap_err().to_string();
    assert!(e.contains("private key"), "{e}");
}
