//! Service checks (OPNsense `carp_service_status`): every executable of
//! `rc.carp_service_status.d/` and every plugin health check, each run with a time limit. A
//! non-zero exit, a signal, a timeout or a failure to start is a failure.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;

use super::child::{describe, signal_group};

/// How often each service script runs.
pub const SERVICE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a service script may take.
pub const SERVICE_TIMEOUT: Duration = Duration::from_secs(4);
/// Output kept from a check (for `plugins.list` and the log).
const OUTPUT_MAX: usize = 512;

/// One check to run.
#[derive(Clone, Debug)]
pub struct CheckSpec {
    /// The script's file name, or the plugin's name.
    pub name: String,
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

/// Its outcome.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    /// `exit status: 1`, `timed out after 4s`, `cannot start: ...`.
    pub status: String,
    /// The first bytes of its stdout and stderr, trimmed.
    pub output: String,
    pub took_ms: u64,
}

/// Run one check to its end or its time limit (then its process group is killed).
pub async fn run(spec: CheckSpec) -> CheckResult {
    let t = Instant::now();
    let done = |ok: bool, status: String, output: String| CheckResult {
        name: spec.name.clone(),
        ok,
        status,
        output,
        took_ms: u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let Some((prog, args)) = spec.argv.split_first() else {
        return done(false, "empty command".into(), String::new());
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(d) = &spec.cwd {
        cmd.current_dir(d);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return done(false, format!("cannot start: {e}"), String::new()),
    };
    let pid = child.id().unwrap_or(0);
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let work = async {
        let read = |s: Option<tokio::process::ChildStdout>| async move {
            let mut v = Vec::new();
            if let Some(s) = s {
                let _ = s.take(OUTPUT_MAX as u64).read_to_end(&mut v).await;
            }
            v
        };
        let read_err = |s: Option<tokio::process::ChildStderr>| async move {
            let mut v = Vec::new();
            if let Some(s) = s {
                let _ = s.take(OUTPUT_MAX as u64).read_to_end(&mut v).await;
            }
            v
        };
        let (o, e, st) = tokio::join!(read(out), read_err(err), child.wait());
        (o, e, st)
    };
    match tokio::time::timeout(spec.timeout, work).await {
        Ok((o, e, st)) => {
            let mut text = String::from_utf8_lossy(&o).trim().to_string();
            let e = String::from_utf8_lossy(&e).trim().to_string();
            if !e.is_empty() {
                if !text.is_empty() {
                    text.push_str(" | ");
                }
                text.push_str(&e);
            }
            let text: String = text.chars().take(OUTPUT_MAX).collect();
            match st {
                Ok(s) => done(s.success(), describe(s), text),
                Err(e) => done(false, format!("wait failed: {e}"), text),
            }
        }
        Err(_) => {
            // The child is still unreaped here, so its group id is still ours.
            signal_group(pid, Signal::SIGKILL);
            let _ = child.start_kill();
            let _ = child.wait().await;
            done(
                false,
                format!("timed out after {}s", spec.timeout.as_secs()),
                String::new(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(script: &str, timeout_ms: u64) -> CheckSpec {
        CheckSpec {
            name: "t".into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            cwd: None,
            env: vec![("X".into(), "42".into())],
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[actix_rt::test]
    async fn pass_fail_timeout_flood() {
        let r = run(spec("echo ok $X", 2000)).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.output, "ok 42");
        let r = run(spec("echo bad >&2; exit 2", 2000)).await;
        assert!(!r.ok);
        assert_eq!(r.status, "exit status: 2");
        assert_eq!(r.output, "bad");
        let r = run(spec("sleep 5 & wait", 200)).await;
        assert!(!r.ok);
        assert!(r.status.starts_with("timed out"), "{r:?}");
        assert!(r.took_ms < 2000, "{r:?}");
        // A check that floods its output is cut, not buffered.
        let r = run(spec("yes garbage | head -c 10000000; exit 0", 5000)).await;
        assert!(r.output.len() <= OUTPUT_MAX, "{}", r.output.len());
        let r = run(CheckSpec {
            argv: vec!["/nonexistent/x".into()],
            ..spec("", 100)
        })
        .await;
        assert!(!r.ok && r.status.starts_with("cannot start"), "{r:?}");
    }
}
