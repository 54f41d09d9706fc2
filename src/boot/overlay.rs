//! The rootfs overlay: a read-only lower layer (the factory rootfs or `--root`) and a writable upper
//! layer in the state directory, as on an appliance whose root is a squashfs.
//!
//! Where the kernel allows it we mount a real overlayfs in a private mount namespace (so the host
//! never sees it and it vanishes with the process). Otherwise [`Layers`] does the same lookup in
//! process: a path is read from the upper layer if present there, else from the lower one; writes go
//! to the upper layer.

use std::path::{Path, PathBuf};

use include_dir::{Dir, include_dir};

/// The factory rootfs shipped inside the binary (the repo's `rootfs/`).
pub static FACTORY_ROOTFS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/rootfs");

/// How the merged view is provided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverlayKind {
    /// A kernel overlayfs mount in a private mount namespace.
    Overlayfs,
    /// Lookup order done in process (upper, then lower).
    InProcess,
}

/// The two layers and, when mounted, the merged directory.
#[derive(Clone, Debug)]
pub struct Layers {
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub merged: Option<PathBuf>,
    pub kind: OverlayKind,
}

impl Layers {
    /// Where to read `rel` (e.g. `conf/config.xml`) from.
    pub fn read_path(&self, rel: &str) -> PathBuf {
        let rel = rel.trim_start_matches('/');
        if let Some(m) = &self.merged {
            return m.join(rel);
        }
        let up = self.upper.join(rel);
        if up.exists() {
            up
        } else {
            self.lower.join(rel)
        }
    }

    /// Where to write `rel`.
    pub fn write_path(&self, rel: &str) -> PathBuf {
        let rel = rel.trim_start_matches('/');
        match &self.merged {
            Some(m) => m.join(rel),
            None => self.upper.join(rel),
        }
    }

    /// Does `rel` exist in the merged view?
    pub fn exists(&self, rel: &str) -> bool {
        self.read_path(rel).exists()
    }
}

/// Extract the embedded factory rootfs into `dir` (replacing what was there), keeping exec bits on
/// scripts under `rc.*.d/`.
pub fn extract_factory(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    extract_dir(&FACTORY_ROOTFS, dir)
}

fn extract_dir(d: &Dir<'_>, base: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for f in d.files() {
        let p = base.join(f.path());
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, f.contents())?;
        let hidden = f
            .path()
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        let exec = !hidden
            && f.path().components().any(|c| {
                let s = c.as_os_str().to_string_lossy();
                s.starts_with("rc.") && s.ends_with(".d")
            })
            || f.contents().starts_with(b"#!");
        let mode = if exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    }
    for sub in d.dirs() {
        std::fs::create_dir_all(base.join(sub.path()))?;
        extract_dir(sub, base)?;
    }
    Ok(())
}

/// Set up the layers under `state`. Must run before any thread is started (unshare of the mount
/// namespace needs a single-threaded process). Returns the layers and, if the overlayfs mount was
/// not possible, the reason (for the log).
pub fn setup(lower: &Path, state: &Path) -> std::io::Result<(Layers, Option<String>)> {
    let upper = state.join("upper");
    let work = state.join("work");
    let merged = state.join("merged");
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d)?;
    }
    match mount_overlay(lower, &upper, &work, &merged) {
        Ok(()) => Ok((
            Layers {
                lower: lower.to_path_buf(),
                upper,
                merged: Some(merged),
                kind: OverlayKind::Overlayfs,
            },
            None,
        )),
        Err(why) => Ok((
            Layers {
                lower: lower.to_path_buf(),
                upper,
                merged: None,
                kind: OverlayKind::InProcess,
            },
            Some(why),
        )),
    }
}

fn mount_overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    if std::env::var_os("TANDEM_NO_OVERLAYFS").is_some() {
        return Err("disabled by TANDEM_NO_OVERLAYFS".into());
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    // Keep our mounts to ourselves.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| format!("mount -t overlay ({opts}): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_lookup_order() {
        let d = std::env::temp_dir().join(format!("tandem-ovl-{}", std::process::id()));
        let lower = d.join("lower");
        let upper = d.join("upper");
        std::fs::create_dir_all(lower.join("conf")).unwrap();
        std::fs::create_dir_all(upper.join("conf")).unwrap();
        std::fs::write(lower.join("conf/a"), "lower").unwrap();
        std::fs::write(lower.join("conf/b"), "lower").unwrap();
        std::fs::write(upper.join("conf/b"), "upper").unwrap();
        let l = Layers {
            lower,
            upper: upper.clone(),
            merged: None,
            kind: OverlayKind::InProcess,
        };
        assert_eq!(
            std::fs::read_to_string(l.read_path("/conf/a")).unwrap(),
            "lower"
        );
        assert_eq!(
            std::fs::read_to_string(l.read_path("conf/b")).unwrap(),
            "upper"
        );
        assert_eq!(l.write_path("conf/a"), upper.join("conf/a"));
        assert!(!l.exists("conf/c"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn factory_rootfs_extracts() {
        let d = std::env::temp_dir().join(format!("tandem-factory-{}", std::process::id()));
        extract_factory(&d).unwrap();
        assert!(d.join("usr/local/etc/rc.syshook.d/carp").is_dir());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
