//! One plugin process: spawn it, feed its stdin from a bounded queue, log its stdout and stderr
//! (rate limited, bounded lines), and stop it (SIGTERM to its process group, SIGKILL after
//! [`STOP_GRACE`]).
//!
//! ```text
//!   Plugins actor ──try_send──▶ [queue, QUEUE_LEN] ──▶ stdin writer task ──▶ plugin stdin
//!   plugin stdout/stderr ──▶ reader tasks ──▶ tracing (plugin=<name>), counters
//!   exit watcher task: child.wait() | stop ──▶ on_exit(ExitInfo) ──▶ Plugins actor
//! ```
//! Nothing here can block the actor: it only ever calls `try_send`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Events waiting for a plugin that does not read: beyond this they are dropped (and counted).
pub const QUEUE_LEN: usize = 256;
/// Time between SIGTERM and SIGKILL when stopping a plugin.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// Longest output line kept (the rest of the line is discarded).
pub const MAX_LINE: usize = 1024;
/// Output lines logged per second per stream (burst [`LOG_BURST`]); the rest are counted.
pub const LOG_RATE: f64 = 5.0;
pub const LOG_BURST: f64 = 20.0;

/// Counters of one plugin, kept across its restarts (atomics: written by its I/O tasks).
#[derive(Debug, Default)]
pub struct Counters {
    /// Event lines written to stdin in full.
    pub delivered: AtomicU64,
    /// Event lines dropped: queue full or the plugin gone.
    pub dropped: AtomicU64,
    pub stdout_lines: AtomicU64,
    pub stderr_lines: AtomicU64,
    /// Output lines that were not UTF-8 or held control characters (logged escaped).
    pub garbage_lines: AtomicU64,
    /// Output lines not logged because of the rate limit.
    pub log_suppressed: AtomicU64,
    /// Output lines longer than [`MAX_LINE`] (cut).
    pub long_lines: AtomicU64,
}

impl Counters {
    pub fn json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "delivered": g(&self.delivered),
            "dropped": g(&self.dropped),
            "stdout_lines": g(&self.stdout_lines),
            "stderr_lines": g(&self.stderr_lines),
            "garbage_lines": g(&self.garbage_lines),
            "log_suppressed": g(&self.log_suppressed),
            "long_lines": g(&self.long_lines),
        })
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub argv: Vec<String>,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
}

/// How a plugin process ended.
#[derive(Clone, Debug)]
pub struct ExitInfo {
    /// `exit status: 1`, `signal: 9 (SIGKILL)`, or the wait error.
    pub status: String,
    /// It was stopped by us (not a crash).
    pub stopped: bool,
}

/// A running plugin. Dropping it stops the process.
pub struct Running {
    pub pid: u32,
    pub started: Instant,
    events: mpsc::Sender<Arc<str>>,
    stop: Option<oneshot::Sender<()>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

/// Outcome of offering an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    Queued,
    QueueFull,
    Gone,
}

impl Running {
    /// Queue one event line (ending in `\n`); never waits.
    pub fn offer(&self, line: Arc<str>) -> Offer {
        match self.events.try_send(line) {
            Ok(()) => Offer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Offer::QueueFull,
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
        }
    }

    /// Stop the process; the returned handle finishes once it has exited and been reaped.
    pub fn stop(mut self) -> Option<tokio::task::JoinHandle<()>> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.watcher.take()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Start the process; `on_exit` is called once when it has ended (crash, exit, or stop).
pub fn spawn(
    spec: &Spec,
    counters: Arc<Counters>,
    on_exit: impl FnOnce(ExitInfo) + 'static,
) -> std::io::Result<Running> {
    let Some((prog, args)) = spec.argv.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty command",
        ));
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .current_dir(&spec.dir)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or(0);
    let (tx, mut rx) = mpsc::channel::<Arc<str>>(QUEUE_LEN);
    if let Some(mut stdin) = child.stdin.take() {
        let c = counters.clone();
        actix_rt::spawn(async move {
            while let Some(line) = rx.recv().await {
                if stdin.write_all(line.as_bytes()).await.is_err() {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                let _ = stdin.flush().await;
                c.delivered.fetch_add(1, Ordering::Relaxed);
            }
            // Whatever is still queued is lost with the process.
            rx.close();
            while rx.recv().await.is_some() {
                c.dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    if let Some(out) = child.stdout.take() {
        actix_rt::spawn(read_lines(
            out,
            spec.name.clone(),
            "stdout",
            counters.clone(),
        ));
    }
    if let Some(err) = child.stderr.take() {
        actix_rt::spawn(read_lines(
            err,
            spec.name.clone(),
            "stderr",
            counters.clone(),
        ));
    }
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let watcher = actix_rt::spawn(async move {
        let (res, stopped) = tokio::select! {
            r = child.wait() => (r, false),
            _ = stop_rx => {
                signal_group(pid, Signal::SIGTERM);
                match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                    Ok(r) => (r, true),
                    Err(_) => {
                        signal_group(pid, Signal::SIGKILL);
                        let _ = child.start_kill();
                        (child.wait().await, true)
                    }
                }
            }
        };
        let status = match res {
            Ok(s) => describe(s),
            Err(e) => format!("wait failed: {e}"),
        };
        on_exit(ExitInfo { status, stopped });
    });
    Ok(Running {
        pid,
        started: Instant::now(),
        events: tx,
        stop: Some(stop_tx),
        watcher: Some(watcher),
    })
}

/// Signal the process group led by `pid` (plugins run in their own group, so a shell script's
/// children go too). Only called while the leader is unreaped, so the group id is still ours.
pub fn signal_group(pid: u32, sig: Signal) {
    if let Ok(p) = i32::try_from(pid)
        && p > 0
    {
        let _ = killpg(Pid::from_raw(p), sig);
    }
}

pub fn describe(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status: {c}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?");
            format!("signal: {sig} ({name})")
        }
        _ => s.to_string(),
    }
}

/// A token bucket for log lines.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let dt = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * LOG_RATE).min(LOG_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Make one output line printable: lossy UTF-8, control characters escaped. Returns the text
/// and whether it was garbage.
pub fn clean_line(raw: &[u8]) -> (String, bool) {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let text = String::from_utf8_lossy(raw);
    let mut garbage = matches!(text, std::borrow::Cow::Owned(_));
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            garbage = true;
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    (out, garbage)
}

/// Read `stream` to its end as lines, logging each (rate limited) under the plugin's name.
async fn read_lines(
    mut stream: impl AsyncRead + Unpin,
    name: String,
    which: &'static str,
    c: Arc<Counters>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut cut = false;
    let mut bucket = Bucket {
        tokens: LOG_BURST,
        at: Instant::now(),
    };
    let mut suppressed = 0u64;
    let lines = if which == "stdout" {
        &c.stdout_lines
    } else {
        &c.stderr_lines
    };
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut over_budget = false;
        for &b in &buf[..n] {
            if b != b'\n' {
                if line.len() < MAX_LINE {
                    line.push(b);
                } else {
                    cut = true;
                }
                continue;
            }
            lines.fetch_add(1, Ordering::Relaxed);
            if cut {
                c.long_lines.fetch_add(1, Ordering::Relaxed);
            }
            let (text, garbage) = clean_line(&line);
            if garbage {
                c.garbage_lines.fetch_add(1, Ordering::Relaxed);
            }
            if bucket.take(Instant::now()) {
                if suppressed > 0 {
                    tracing::warn!(plugin = %name, stream = which, suppressed, "plugin output rate limited");
                    suppressed = 0;
                }
                let more = if cut { " [line cut]" } else { "" };
                if garbage {
                    tracing::warn!(plugin = %name, stream = which, "plugin wrote garbage: {text}{more}");
                } else {
                    tracing::info!(plugin = %name, stream = which, "{text}{more}");
                }
            } else {
                suppressed += 1;
                over_budget = true;
                c.log_suppressed.fetch_add(1, Ordering::Relaxed);
            }
            line.clear();
            cut = false;
        }
        if over_budget {
            // A flood costs the node at most one 16 KiB read per millisecond.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    if suppressed > 0 {
        tracing::warn!(plugin = %name, stream = which, suppressed, "plugin output rate limited");
    }
    if !line.is_empty() {
        lines.fetch_add(1, Ordering::Relaxed);
        let (text, _) = clean_line(&line);
        tracing::info!(plugin = %name, stream = which, "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cleaned() {
        assert_eq!(
            clean_line(b"hello\tworld\r"),
            ("hello\tworld".into(), false)
        );
        let (t, g) = clean_line(b"a\x1b[31mb\xff");
        assert!(g);
        assert!(t.starts_with("a\\u{1b}[31mb"), "{t}");
    }

    #[test]
    fn bucket_limits_then_refills() {
        let t0 = Instant::now();
        let mut b = Bucket {
            tokens: LOG_BURST,
            at: t0,
        };
        let n = (0..100).filter(|_| b.take(t0)).count();
        assert_eq!(n, LOG_BURST as usize);
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(250)));
    }
}
