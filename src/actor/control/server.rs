//! The Unix-socket listener: newline-delimited JSON-RPC, bounded lines, bounded connections.
//!
//! ```text
//!  accept loop ──(permit from Semaphore, else "busy" reply + close)──▶ connection task
//!  connection task: read line (≤ MAX_LINE) ─▶ parse ─▶ dispatch(method) ─▶ reply line
//!                   events.subscribe: also forwards bus events as "event" notifications
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, watch};

use super::rpc::{self, RpcError};
use crate::bus::{Bus, BusMsg};

/// Longest request line accepted.
pub const MAX_LINE: usize = 1 << 20;
/// Most connections served at once; more are answered "busy" and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection with no request for this long is closed (subscriptions excepted).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

pub type DispatchFuture = Pin<Box<dyn Future<Output = Result<Value, RpcError>>>>;
/// Runs one method call.
pub type Dispatch = Rc<dyn Fn(String, Value) -> DispatchFuture>;

/// Counters shown by `system.status`.
#[derive(Default)]
pub struct ServerStats {
    pub connections: AtomicU64,
    pub refused_busy: AtomicU64,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub oversized: AtomicU64,
}

/// Bind the socket (mode 0600), replacing a stale one.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        // A live daemon would answer; a stale socket file from a crash would not.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a running daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // Create it with a tight umask so it is never world-accessible, even briefly.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = l?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serve until `shutdown` flips to true; then remove the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    dispatch: Dispatch,
    bus: Bus,
    stats: Arc<ServerStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let stream = match accepted {
            Ok((s, _)) => {
                backoff = Duration::from_millis(10);
                s
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let d = dispatch.clone();
                let bus = bus.clone();
                let stats = stats.clone();
                let sd = shutdown.clone();
                actix_rt::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = connection(stream, d, bus, stats, sd).await {
                        tracing::debug!(error = %e, "control connection ended");
                    }
                });
            }
            Err(_) => {
                stats.refused_busy.fetch_add(1, Ordering::Relaxed);
                actix_rt::spawn(async move {
                    let mut s = stream;
                    let line = rpc::reply_line(
                        &Value::Null,
                        Err(RpcError::new(
                            rpc::SERVER_BUSY,
                            format!("too many connections (limit {MAX_CONNECTIONS}); retry later"),
                        )),
                    );
                    let _ = tokio::time::timeout(Duration::from_secs(1), s.write_all(&line)).await;
                });
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Read one line of at most MAX_LINE bytes. `Ok(None)` at EOF; `Err(true)`-style oversize is
/// reported as `Line::TooLong` after the rest of the line was discarded.
enum Line {
    Data(Vec<u8>),
    TooLong,
    Eof,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_line(r: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let mut too_long = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if buf.is_empty() {
                Line::Eof
            } else {
                Line::Data(buf)
            });
        }
        let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], Some(i + 1)),
            None => (avail, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > MAX_LINE {
                too_long = true;
                buf = Vec::new();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let n = done.unwrap_or(avail.len());
        r.consume(n);
        if done.is_some() {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Data(buf)
            });
        }
    }
}

async fn connection(
    stream: UnixStream,
    dispatch: Dispatch,
    bus: Bus,
    stats: Arc<ServerStats>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    // Lines are read by their own task so that waiting for events never cancels a half-read line.
    let (line_tx, mut lines) = tokio::sync::mpsc::channel::<std::io::Result<Line>>(4);
    let reader = actix_rt::spawn(async move {
        let mut rd = BufReader::new(rd);
        loop {
            let l = read_line(&mut rd).await;
            let end = matches!(l, Ok(Line::Eof) | Err(_));
            if line_tx.send(l).await.is_err() || end {
                break;
            }
        }
    });
    let _abort = AbortOnDrop(reader);
    let mut events: Option<broadcast::Receiver<BusMsg>> = None;
    let mut filter: Vec<String> = Vec::new();
    loop {
        let idle = if events.is_none() {
            IDLE_TIMEOUT
        } else {
            Duration::from_secs(365 * 24 * 3600)
        };
        let line = tokio::select! {
            l = tokio::time::timeout(idle, lines.recv()) => match l {
                Ok(Some(l)) => l?,
                Ok(None) => return Ok(()),
                Err(_) => return Ok(()),
            },
            ev = recv_event(&mut events) => {
                match ev {
                    Ok(msg) => {
                        if filter.is_empty() || filter.iter().any(|f| f == msg.kind()) {
                            let v = serde_json::to_value(&msg).unwrap_or(Value::Null);
                            wr.write_all(&rpc::notification_line("event", v)).await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        wr.write_all(&rpc::notification_line("events.lost", json!({"count": n}))).await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => events = None,
                }
                continue;
            }
            _ = shutdown.changed() => return Ok(()),
        };
        let bytes = match line {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                stats.oversized.fetch_add(1, Ordering::Relaxed);
                stats.errors.fetch_add(1, Ordering::Relaxed);
                let e = RpcError::new(
                    rpc::INVALID_REQUEST,
                    format!("request line longer than {MAX_LINE} bytes; discarded"),
                );
                wr.write_all(&rpc::reply_line(&Value::Null, Err(e))).await?;
                continue;
            }
            Line::Data(b) => b,
        };
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let req = match rpc::parse_request(&bytes) {
            Ok(r) => r,
            Err((id, e)) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                wr.write_all(&rpc::reply_line(&id, Err(e))).await?;
                continue;
            }
        };
        let result = if req.method == "events.subscribe" {
            match subscribe_filter(&req.params) {
                Ok(f) => {
                    filter = f;
                    events = Some(bus.subscribe());
                    Ok(json!({"subscribed": true, "events": filter}))
                }
                Err(e) => Err(e),
            }
        } else {
            dispatch(req.method.clone(), req.params.clone()).await
        };
        if result.is_err() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(id) = req.id {
            wr.write_all(&rpc::reply_line(&id, result)).await?;
        }
    }
}

fn subscribe_filter(params: &Value) -> Result<Vec<String>, RpcError> {
    match params.get("events") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| RpcError::invalid_params("events must be a list of strings"))
            })
            .collect(),
        Some(_) => Err(RpcError::invalid_params("events must be a list of strings")),
    }
}

async fn recv_event(
    events: &mut Option<broadcast::Receiver<BusMsg>>,
) -> Result<BusMsg, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
