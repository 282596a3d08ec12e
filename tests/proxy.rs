//! A loopback HTTP/1.1 proxy in front of an emulator, for the suites that
//! need to see or disturb what escrow-sync sends (`#[path]`-included by
//! them). It listens on 127.0.0.1, reads each request of a keep-alive client
//! connection (Content-Length or chunked framing), forwards it upstream on a
//! connection of its own, records it, and, as its [`Schedule`] says,
//! answers it instead with `503 SlowDown` (an S3 XML error body) or resets
//! the connection (RST). It runs on a thread of its own, so tests may block
//! on the binary while it serves; dropping it stops it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Which requests get a fault.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// None: a recording proxy.
    Never,
    /// Of every `of` requests with the same method, target and body (an SDK
    /// retry repeats its request), the first `faults` get one: `Burst { 3,
    /// 5 }` is 60 % of requests, in runs of three faults; a call needs its
    /// fourth attempt.
    Burst {
        /// Faults per cycle.
        faults: u32,
        /// The cycle's length.
        of: u32,
    },
    /// Each request independently with probability `share` (seeded).
    Random {
        /// The share of requests that get a fault (1.0: every one).
        share: f64,
        /// The generator's seed.
        seed: u64,
    },
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`...
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// The STS (query protocol) action, for form posts.
    pub action: Option<String>,
    /// The access key id the request was signed with.
    pub key: Option<String>,
    /// The body, when it is a small form post.
    pub form: String,
    /// Whether it was answered with a fault.
    pub faulted: bool,
}

struct State {
    schedule: Schedule,
    rng: StdRng,
    counts: HashMap<String, u32>,
    faults: u64,
    seen: Vec<Seen>,
}

impl State {
    fn new(schedule: Schedule) -> Self {
        let seed = match &schedule {
            Schedule::Random { seed, .. } => *seed,
            _ => 0,
        };
        State {
            schedule,
            rng: StdRng::seed_from_u64(seed),
            counts: HashMap::new(),
            faults: 0,
            seen: Vec::new(),
        }
    }

    /// Whether the request with `key` gets a fault, and which: `Some(true)`
    /// for a reset, `Some(false)` for 503 SlowDown (they alternate).
    fn decide(&mut self, key: &str) -> Option<bool> {
        let fault = match self.schedule {
            Schedule::Never => false,
            Schedule::Burst { faults, of } => {
                let n = self.counts.entry(key.to_string()).or_insert(0);
                let index = *n % of.max(1);
                *n += 1;
                index < faults
            }
            Schedule::Random { share, .. } => self.rng.random::<f64>() < share,
        };
        if !fault {
            return None;
        }
        self.faults += 1;
        Some(self.faults.is_multiple_of(2))
    }
}

/// A running proxy; dropping it stops it.
pub struct Proxy {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// A proxy in front of `upstream` (`http://host:port`).
    pub fn start(upstream: &str, schedule: Schedule) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let state = Arc::new(Mutex::new(State::new(schedule)));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("listener");
                let serve = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else { continue };
                        let (st, upstream) = (st.clone(), upstream.clone());
                        tokio::spawn(async move {
                            let _ = serve(client, &upstream, &st).await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_background();
        });
        Proxy { endpoint, state, stop: Some(stop), thread: Some(thread) }
    }

    /// Changes the schedule (and starts its counts afresh).
    pub fn set_schedule(&self, schedule: Schedule) {
        let mut s = self.state.lock().expect("state");
        let seen = std::mem::take(&mut s.seen);
        *s = State::new(schedule);
        s.seen = seen;
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("state").seen.clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear(&self) {
        self.state.lock().expect("state").seen.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request: its head (request line and headers, as sent) and body.
struct Request {
    head: Vec<String>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.iter().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn method(&self) -> &str {
        self.head[0].split(' ').next().unwrap_or_default()
    }

    fn target(&self) -> &str {
        self.head[0].split(' ').nth(1).unwrap_or_default()
    }
}

/// Reads one request; `None` when the client closed the connection.
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if head.is_empty() {
                continue;
            }
            break;
        }
        head.push(line);
    }
    let mut req = Request { head, body: Vec::new() };
    if req.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(std::io::Error::other)?;
            let mut chunk = vec![0; n + 2];
            if n == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut t = String::new();
                    r.read_line(&mut t).await?;
                    if t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            r.read_exact(&mut chunk).await?;
            req.body.extend_from_slice(&chunk[..n]);
        }
        req.head.retain(|l| !l.to_ascii_lowercase().starts_with("transfer-encoding:"));
        req.head.push(format!("Content-Length: {}", req.body.len()));
    } else if let Some(n) = req.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        req.body = vec![0; n];
        r.read_exact(&mut req.body).await?;
    }
    Ok(Some(req))
}

const SLOW_DOWN: &str = "<Error><Code>SlowDown</Code><Message>Please reduce your request \
                         rate.</Message><RequestId>fault-proxy</RequestId></Error>";

/// Serves one client connection, request after request.
async fn serve(client: TcpStream, upstream: &str, state: &Mutex<State>) -> std::io::Result<()> {
    let (read, mut write) = client.into_split();
    let mut read = BufReader::new(read);
    while let Some(req) = read_request(&mut read).await? {
        let form = if req.body.len() < 4096 {
            String::from_utf8_lossy(&req.body).into_owned()
        } else {
            String::new()
        };
        let action = form.split('&').find_map(|kv| kv.strip_prefix("Action=")).map(str::to_string);
        let key = req.header("authorization").and_then(|a| {
            a.split("Credential=").nth(1).and_then(|c| c.split('/').next()).map(str::to_string)
        });
        let identity = format!("{} {} {}", req.method(), req.target(), form);
        let decision = {
            let mut s = state.lock().expect("state");
            let d = s.decide(&identity);
            s.seen.push(Seen {
                method: req.method().to_string(),
                target: req.target().to_string(),
                action,
                key,
                form,
                faulted: d.is_some(),
            });
            d
        };
        match decision {
            Some(true) => {
                // A reset: RST instead of an answer.
                let client = read.into_inner().reunite(write).map_err(std::io::Error::other)?;
                #[allow(deprecated)] // SO_LINGER 0 does not block: it resets at once.
                client.set_linger(Some(std::time::Duration::ZERO))?;
                drop(client);
                return Ok(());
            }
            Some(false) => {
                let body = if req.method() == "HEAD" { "" } else { SLOW_DOWN };
                let answer = format!(
                    "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: \
                     {}\r\n\r\n{body}",
                    if req.method() == "HEAD" { 0 } else { SLOW_DOWN.len() }
                );
                write.write_all(answer.as_bytes()).await?;
            }
            None => {
                let answer = forward(&req, upstream).await?;
                write.write_all(&answer).await?;
            }
        }
        write.flush().await?;
    }
    Ok(())
}

/// Sends `req` upstream on a connection of its own and returns the answer,
/// framed for a keep-alive client connection.
async fn forward(req: &Request, upstream: &str) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).await?;
    let mut head: Vec<&str> = req
        .head
        .iter()
        .map(String::as_str)
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    head.push("Connection: close");
    let mut out = head.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&req.body);
    up.write_all(&out).await?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).await?;
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(answer);
    };
    let (head, body) =
        (String::from_utf8_lossy(&answer[..split]).into_owned(), &answer[split + 4..]);
    let mut lines: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(str::to_string)
        .collect();
    let framed = lines.iter().skip(1).any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("content-length:") || l.starts_with("transfer-encoding:")
    });
    let status = lines[0].split(' ').nth(1).unwrap_or_default().to_string();
    if !framed && req.method() != "HEAD" && status != "204" && status != "304" {
        lines.push(format!("Content-Length: {}", body.len()));
    }
    let mut framed_answer = lines.join("\r\n").into_bytes();
    framed_answer.extend_from_slice(b"\r\n\r\n");
    framed_answer.extend_from_slice(body);
    Ok(framed_answer)
}
