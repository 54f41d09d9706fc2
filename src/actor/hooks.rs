//! OPNsense-compatible event scripts: on a CARP transition every executable in
//! `<root>/usr/local/etc/rc.syshook.d/carp/` runs, sorted, with `$1 = <vhid>@<device>` and
//! `$2 = MASTER|BACKUP|INIT`. Scripts run one at a time, in transition order, each with a time
//! limit, on their own task: a slow or failing script is logged and never delays an advert.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

/// Longest a single hook script may run.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// One transition to report to the scripts.
#[derive(Clone, Debug)]
pub struct HookEvent {
    pub subsystem: String,
    pub state: String,
}

/// Handle to the hook runner; cheap to clone.
#[derive(Clone)]
pub struct Hooks {
    tx: mpsc::UnboundedSender<HookEvent>,
}

impl Hooks {
    /// Start the runner for scripts in `dir`.
    pub fn start(dir: PathBuf) -> Hooks {
        let (tx, mut rx) = mpsc::unbounded_channel::<HookEvent>();
        actix_rt::spawn(async move {
            while let Some(ev) = rx.recv().await {
                run_all(&dir, &ev).await;
            }
        });
        Hooks { tx }
    }

    pub fn carp(&self, vhid: u8, device: &str, state: &str) {
        let _ = self.tx.send(HookEvent {
            subsystem: format!("{vhid}@{device}"),
            state: state.to_string(),
        });
    }
}

/// The executable regular files of `dir`, sorted by name; hidden files are skipped.
pub fn scripts(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| {
                e.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

async fn run_all(dir: &Path, ev: &HookEvent) {
    for script in scripts(dir) {
        let name = script.display().to_string();
        let child = tokio::process::Command::new(&script)
            .arg(&ev.subsystem)
            .arg(&ev.state)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(HOOK_TIMEOUT, child).await {
            Ok(Ok(out)) if out.status.success() => {
                tracing::info!(script = %name, subsystem = %ev.subsystem, state = %ev.state, "carp hook ran");
            }
            Ok(Ok(out)) => tracing::warn!(
                script = %name, subsystem = %ev.subsystem, state = %ev.state,
                status = %out.status, stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                ">>> Error in carp script"
            ),
            Ok(Err(e)) => tracing::warn!(script = %name, "carp hook could not start: {e}"),
            Err(_) => {
                tracing::warn!(script = %name, timeout_s = HOOK_TIMEOUT.as_secs(), "carp hook timed out and was killed")
            }
        }
    }
}
