//! Test harness: a real origin server, the real `portcullis` binary on ephemeral ports, and a
//! small HTTP client. Nothing is mocked: every test talks over sockets.

#![allow(dead_code, clippy::unwrap_used)]

pub mod tls;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The binary under test: the one cargo built for these tests, or the one `PORTCULLIS_TEST_BIN`
/// names, so the same suite can check another build of the same source (e.g. the
/// profile-guided release build from `bench/pgo.sh`).
pub fn bin() -> PathBuf {
    match std::env::var_os("PORTCULLIS_TEST_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_portcullis")),
    }
}

/// What a [`receiver`] keeps: `decode(headers, body)` of every request, in arrival order.
pub type Received<T> = Arc<std::sync::Mutex<Vec<T>>>;

/// An HTTP/1 receiver on 127.0.0.1 (a webhook, a log or trace collector) that answers every
/// request 200 with an empty body and keeps what `decode` makes of it.
pub async fn receiver<T: Send + 'static>(
    decode: impl Fn(&hyper::HeaderMap, Bytes) -> T + Send + Sync + 'static,
) -> (SocketAddr, Received<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Received<T> = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = got.clone();
    let decode = Arc::new(decode);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (store, decode) = (store.clone(), decode.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (store, decode) = (store.clone(), decode.clone());
                    async move {
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        store.lock().unwrap().push(decode(&headers, body));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

/// An origin server that answers every request with a JSON echo of what it received.
///
/// Special paths: `/status/<code>` answers that status, `/delay/<ms>` sleeps first,
/// `/health` answers the origin's current health status.
pub struct Origin {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub health_status: Arc<AtomicUsize>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
    pub name: String,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start(name: &str) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let health_status = Arc::new(AtomicUsize::new(200));
        let conns = Arc::new(AtomicUsize::new(0));
        let (h, hs, n, c) = (
            hits.clone(),
            health_status.clone(),
            name.to_string(),
            conns.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (h, hs, n) = (h.clone(), hs.clone(), n.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| echo(req, h.clone(), hs.clone(), n.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Origin {
            addr,
            hits,
            health_status,
            conns,
            name: name.to_string(),
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops accepting; established connections are dropped.
    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn echo(
    req: Request<Incoming>,
    hits: Arc<AtomicUsize>,
    health: Arc<AtomicUsize>,
    name: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        let code = health.load(Ordering::SeqCst) as u16;
        return Ok(Response::builder()
            .status(code)
            .body(Full::new(Bytes::from_static(b"health")))
            .unwrap());
    }
    hits.fetch_add(1, Ordering::SeqCst);
    if let Some(ms) = path
        .split_once("/delay/")
        .and_then(|(_, s)| s.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let is_ws = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v == "websocket");
    if is_ws {
        let mut req = req;
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        // With hop-by-hop extras the gateway must not relay: a header its Connection names,
        // and Keep-Alive.
        return Ok(Response::builder()
            .status(101)
            .header("connection", "upgrade, x-up-hop")
            .header("upgrade", "websocket")
            .header("x-up-hop", "1")
            .header("keep-alive", "timeout=5")
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    // `x-echo-response-<name>: v` asks the origin to answer with header `<name>: v`.
    let wanted: Vec<(String, Vec<u8>)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            k.as_str()
                .strip_prefix("x-echo-response-")
                .map(|n| (n.to_string(), v.as_bytes().to_vec()))
        })
        .collect();
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_insert_with(Vec::new)
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let status = path
        .split_once("/status/")
        .and_then(|(_, s)| s.parse::<u16>().ok())
        .unwrap_or(200);
    let echo = json!({
        "origin": name,
        "method": method,
        "uri": uri,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut b = Response::builder();
    for (k, v) in wanted {
        b = b.header(k, v);
    }
    Ok(b.status(status)
        .header("content-type", "application/json")
        .header("connection", "x-hop")
        .header("x-hop", "must-not-reach-client")
        .body(Full::new(Bytes::from(echo.to_string())))
        .unwrap())
}

/// The JSON lines of a file written asynchronously by the gateway; waits (up to 2 s) for at
/// least `n` of them.
pub async fn json_lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "fewer than {n} JSON lines in {}:\n{}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `portcullis start` process.
pub struct Gw {
    pub child: Child,
    pub proxy: SocketAddr,
    pub tls: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub dir: PathBuf,
    pub log: PathBuf,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn temp_dir() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("portcullis-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Gw {
    /// Starts the binary with `config` (YAML text) and extra settings (TOML text).
    pub async fn start(config: &str) -> Gw {
        Gw::start_with(config, "").await
    }

    pub async fn start_with(config: &str, settings: &str) -> Gw {
        Gw::start_workers(config, settings, 2).await
    }

    /// As `start_with`, with `workers` proxy worker threads.
    pub async fn start_workers(config: &str, settings: &str, workers: usize) -> Gw {
        let dir = temp_dir();
        let cfg = dir.join("kong.yml");
        std::fs::write(&cfg, config).unwrap();
        let settings_path = dir.join("portcullis.toml");
        std::fs::write(
            &settings_path,
            format!(
                "log_format = \"json\"\nshutdown_timeout = 5.0\naccess_log = {:?}\n{settings}",
                dir.join("access.log").display().to_string()
            ),
        )
        .unwrap();
        let log = dir.join("gateway.log");
        // free_port() releases the port before the gateway binds it, so a parallel test can
        // take it in between: on "Address already in use" start again on fresh ports.
        for attempt in 0.. {
            let (proxy, tls, admin) = (free_port(), free_port(), free_port());
            let child = Command::new(bin())
                .args(["start", "--config"])
                .arg(&cfg)
                .arg("--settings")
                .arg(&settings_path)
                .args(["--proxy-listen", &format!("127.0.0.1:{proxy}")])
                .args(["--proxy-tls-listen", &format!("127.0.0.1:{tls}")])
                .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
                .args(["--workers", &workers.to_string()])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn portcullis");
            let mut gw = Gw {
                child,
                proxy: ([127, 0, 0, 1], proxy).into(),
                tls: ([127, 0, 0, 1], tls).into(),
                admin: ([127, 0, 0, 1], admin).into(),
                config: cfg.clone(),
                dir: dir.clone(),
                log: log.clone(),
            };
            for _ in 0..200 {
                if let Ok(r) = get(gw.admin, "/status", &[]).await {
                    if r.status == 200 {
                        return gw;
                    }
                }
                if let Ok(Some(_)) = gw.child.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let text = gw.logs();
            if attempt < 5 && text.contains("Address already in use") {
                // Keep the directory: the next attempt reuses it.
                gw.dir = std::path::PathBuf::new();
                continue;
            }
            panic!("gateway did not become ready; log:\n{text}");
        }
        unreachable!()
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = get(self.admin, "/status", &[]).await {
                if r.status == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gateway did not become ready; log:\n{}", self.logs());
    }

    /// Everything the gateway wrote: its log and its access log.
    pub fn logs(&self) -> String {
        let mut all = std::fs::read_to_string(&self.log).unwrap_or_default();
        all.push_str(&self.access_log_text());
        all
    }

    pub fn access_log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// Access-log lines, parsed; waits briefly for at least `n` lines (the writer is async).
    pub async fn access_lines(&self, n: usize) -> Vec<Value> {
        json_lines(&self.dir.join("access.log"), n).await
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Rewrites the config file and sends SIGHUP; waits until the admin reports the new hash
    /// or the log reports a refusal.
    pub async fn reload(&self, config: &str) {
        let before = self.config_hash().await;
        std::fs::write(&self.config, config).unwrap();
        let refusals = self.logs().matches("config reload refused").count();
        self.signal("HUP");
        for _ in 0..200 {
            if self.config_hash().await != before
                || self.logs().matches("config reload refused").count() > refusals
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("reload did not finish; log:\n{}", self.logs());
    }

    pub async fn config_hash(&self) -> String {
        let r = get(self.admin, "/status", &[]).await.unwrap();
        r.json()["configuration_hash"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn get(&self, path: &str) -> Reply {
        get(self.proxy, path, &[]).await.unwrap()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// The upstream's view of the request (origin echo).
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_array().map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

/// Sends one request on a fresh HTTP/1.1 connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut b = Request::builder().method(method).uri(path);
    let mut has_host = false;
    for (k, v) in headers {
        has_host |= k.eq_ignore_ascii_case("host");
        b = b.header(*k, *v);
    }
    if !has_host {
        b = b.header("host", "localhost");
    }
    let req = b
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
    request(addr, "GET", path, headers, "").await
}

/// Writes raw bytes, returns everything read until the peer closes (or 5 s pass) and whether
/// it closed.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// A config with one service pointing at `origin_url` and the given route YAML (indented).
pub fn one_service(origin_url: &str, routes: &str) -> String {
    format!("_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: {origin_url}\n    routes:\n{routes}")
}

pub fn status_of(s: &str) -> u16 {
    s.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

pub fn write_file(path: &std::path::Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

pub fn assert_status(r: &Reply, want: u16) {
    assert_eq!(r.status, want, "body: {}", r.text());
}

pub fn _unused(_: StatusCode) {}

/// Kong's `kong.response.error` body: `{"message": message, "request_id": id}`, with the id
/// the response's request-id header carries.
pub fn assert_error_body(r: &Reply, message: &str) {
    let id = r.header("x-request-id").expect("a request id header");
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(
        r.json(),
        serde_json::json!({"message": message, "request_id": id}),
        "{}",
        r.text()
    );
}

/// Runs `portcullis start` with `config` and `settings` (TOML), expecting it to refuse them:
/// returns its stderr. Listens on free ports, and fails (instead of hanging) if it starts.
pub fn refused_start(config: &str, settings: &str) -> String {
    let dir = temp_dir();
    let cfg = dir.join("kong.yml");
    write_file(&cfg, config);
    let settings_path = dir.join("portcullis.toml");
    write_file(&settings_path, settings);
    let mut child = Command::new(bin())
        .args(["start", "--config"])
        .arg(&cfg)
        .arg("--settings")
        .arg(&settings_path)
        .args(["--proxy-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--proxy-tls-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway started with settings it should refuse:\n{settings}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    err
}
