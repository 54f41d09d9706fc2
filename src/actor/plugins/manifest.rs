//! `plugin.toml` manifests, the plugin search path, and the `<tandem><plugins>` section of
//! config.xml that enables plugins.
//!
//! ```toml
//! name = "carp-notify"
//! version = "0.1.0"
//! description = "log CARP transitions, run a command on each"
//! command = ["./carp-notify.py"]          # argv; argv[0] relative to the plugin dir
//! events = ["carp.transition"]            # bus event kinds written to stdin ("*" = all)
//! sync_id = "carp-notify"                 # optional: the syncitems id of its config section
//! [health]                                # optional: a service check, exit 0 = healthy
//! command = ["./carp-notify.py", "health"]
//! interval = 5                            # seconds (1..=3600, default 5)
//! timeout = 3                             # seconds (1..=60, default 3)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::config::dom::Element;

/// The manifest's file name inside a plugin directory.
pub const MANIFEST: &str = "plugin.toml";

/// Event kinds tandem publishes today (others are accepted for forward compatibility).
pub const KNOWN_EVENTS: &[&str] = &[
    "carp.transition",
    "link.changed",
    "config.applied",
    "demotion.changed",
    "actor.restarted",
    "dhcp.ha.changed",
];

/// Why a manifest was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {reason}")]
    Syntax { path: String, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    command: Vec<String>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    sync_id: Option<String>,
    #[serde(default)]
    health: Option<RawHealth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    command: Vec<String>,
    #[serde(default)]
    interval: Option<u64>,
    #[serde(default)]
    timeout: Option<u64>,
}

/// A plugin's health check (a service check that names the plugin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
}

/// A validated manifest and the directory it was found in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    pub dir: PathBuf,
    /// argv, `argv[0]` resolved against `dir` (see [`resolve`]).
    pub argv: Vec<String>,
    pub events: Vec<String>,
    pub sync_id: Option<String>,
    pub health: Option<Health>,
}

impl Manifest {
    /// Does the plugin want events of this kind?
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == kind || e == "*")
    }
}

/// A plugin name: 1..=64 of `[a-z0-9_-]`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Resolve `argv[0]`: absolute stays; with a `/` it is relative to `dir`; a bare name is a file
/// of `dir` if one exists, else left for a `PATH` lookup (`python3`, `sh`).
pub fn resolve(dir: &Path, argv: &[String]) -> Vec<String> {
    let mut out = argv.to_vec();
    if let Some(first) = out.first_mut() {
        let p = Path::new(first.as_str());
        if p.is_absolute() {
        } else if first.contains('/') || dir.join(p).is_file() {
            *first = dir.join(p).to_string_lossy().into_owned();
        }
    }
    out
}

/// Parse and check a manifest's text; `dir` is the plugin's directory (its last component must
/// be the plugin's name).
pub fn parse(text: &str, dir: &Path) -> Result<Manifest, ManifestError> {
    let path = dir.join(MANIFEST).display().to_string();
    let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
        path: path.clone(),
        reason: e.message().to_string(),
    })?;
    let invalid = |reason: String| ManifestError::Invalid {
        path: path.clone(),
        reason,
    };
    if !valid_name(&raw.name) {
        return Err(invalid(format!(
            "name {:?}: want 1..64 of a-z 0-9 - _",
            raw.name
        )));
    }
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    if dir_name.as_deref() != Some(raw.name.as_str()) {
        return Err(invalid(format!(
            "name {:?} differs from its directory name {:?}",
            raw.name,
            dir_name.unwrap_or_default()
        )));
    }
    if raw.version.trim().is_empty() {
        return Err(invalid("version is empty".into()));
    }
    if raw.command.first().is_none_or(|c| c.is_empty()) {
        return Err(invalid("command is empty".into()));
    }
    for e in &raw.events {
        if e.is_empty() || e.len() > 64 || e.chars().any(|c| c.is_whitespace()) {
            return Err(invalid(format!("event kind {e:?} is not a name")));
        }
    }
    let health = match raw.health {
        None => None,
        Some(h) => {
            if h.command.first().is_none_or(|c| c.is_empty()) {
                return Err(invalid("health.command is empty".into()));
            }
            let interval = h.interval.unwrap_or(5);
            let timeout = h.timeout.unwrap_or(3);
            if !(1..=3600).contains(&interval) {
                return Err(invalid(format!(
                    "health.interval {interval}: want 1..3600 s"
                )));
            }
            if !(1..=60).contains(&timeout) {
                return Err(invalid(format!("health.timeout {timeout}: want 1..60 s")));
            }
            Some(Health {
                argv: resolve(dir, &h.command),
                interval: Duration::from_secs(interval),
                timeout: Duration::from_secs(timeout),
            })
        }
    };
    Ok(Manifest {
        name: raw.name,
        version: raw.version,
        description: raw.description,
        dir: dir.to_path_buf(),
        argv: resolve(dir, &raw.command),
        events: raw.events,
        sync_id: raw.sync_id,
        health,
    })
}

/// Read `<dir>/plugin.toml`.
pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| ManifestError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse(&text, dir)
}

/// Find plugin `name` in the search path (first directory holding `<name>/plugin.toml` wins).
pub fn find(search: &[PathBuf], name: &str) -> Option<Result<Manifest, ManifestError>> {
    if !valid_name(name) {
        return None;
    }
    search
        .iter()
        .map(|d| d.join(name))
        .find(|d| d.join(MANIFEST).is_file())
        .map(|d| load(&d))
}

/// Names of every plugin found in the search path (sorted, deduplicated).
pub fn available(search: &[PathBuf]) -> Vec<String> {
    let mut out: Vec<String> = search
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.flatten())
        .filter(|e| e.path().join(MANIFEST).is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| valid_name(n))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// One `<plugin>` entry of config.xml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginEntry {
    pub name: String,
    pub enabled: bool,
    /// The `<config>` child as JSON (see [`element_json`]); `{}` when absent.
    pub config: Value,
}

/// `<tandem><plugins>` of config.xml: the plugins, and extra search directories (`<path>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginsCfg {
    pub entries: Vec<PluginEntry>,
    pub paths: Vec<PathBuf>,
}

impl PluginsCfg {
    /// Read it from a config (absent section: nothing enabled).
    pub fn from_config(cfg: &Config) -> PluginsCfg {
        let Some(plugins) = cfg.doc.root().at("tandem/plugins") else {
            return PluginsCfg::default();
        };
        let mut out = PluginsCfg::default();
        for p in plugins.children_named("path") {
            let t = p.text();
            if Path::new(&t).is_absolute() {
                out.paths.push(PathBuf::from(t));
            }
        }
        for p in plugins.children_named("plugin") {
            let name = p.child_text("name").unwrap_or_default();
            if name.is_empty() || out.entries.iter().any(|e| e.name == name) {
                continue;
            }
            let enabled = p
                .child_text("enabled")
                .is_some_and(|t| matches!(t.as_str(), "1" | "yes" | "true" | "on"));
            let config = p
                .child("config")
                .map(element_json)
                .filter(Value::is_object)
                .unwrap_or_else(|| Value::Object(Map::new()));
            out.entries.push(PluginEntry {
                name,
                enabled,
                config,
            });
        }
        out
    }

    /// The enabled entries by name.
    pub fn enabled(&self) -> BTreeMap<String, PluginEntry> {
        self.entries
            .iter()
            .filter(|e| e.enabled)
            .map(|e| (e.name.clone(), e.clone()))
            .collect()
    }
}

/// The `<plugin>` element of plugin `name` in config.xml: the part a config sync copies to the
/// peer when the plugin's `sync_id` is in `hasync/syncitems`.
pub fn plugin_element<'a>(cfg: &'a Config, name: &str) -> Option<&'a Element> {
    cfg.doc
        .root()
        .at("tandem/plugins")?
        .children_named("plugin")
        .find(|p| p.child_text("name").as_deref() == Some(name))
}

/// An element as JSON: with child elements an object (a name seen twice becomes an array), else
/// its text as a string.
pub fn element_json(e: &Element) -> Value {
    if e.elements().next().is_none() {
        return Value::String(e.text());
    }
    let mut m = Map::new();
    for c in e.elements() {
        let v = element_json(c);
        match m.get_mut(c.name()) {
            None => {
                m.insert(c.name().to_string(), v);
            }
            Some(Value::Array(a)) => a.push(v),
            Some(old) => {
                let first = old.take();
                *old = Value::Array(vec![first, v]);
            }
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        PathBuf::from("/opt/p").join(name)
    }

    #[test]
    fn full_manifest() {
        let m = parse(
            r#"
name = "gw"
version = "1.0"
description = "d"
command = ["./gw.py", "run"]
events = ["carp.transition", "config.applied"]
sync_id = "gw"
[health]
command = ["sh", "-c", "exit 0"]
interval = 2
"#,
            &dir("gw"),
        )
        .unwrap();
        assert_eq!(m.argv, vec!["/opt/p/gw/./gw.py", "run"]);
        assert!(m.wants("carp.transition") && !m.wants("link.changed"));
        let h = m.health.unwrap();
        assert_eq!(h.argv[0], "sh");
        assert_eq!(h.interval, Duration::from_secs(2));
        assert_eq!(h.timeout, Duration::from_secs(3));
        assert_eq!(m.sync_id.as_deref(), Some("gw"));
    }

    #[test]
    fn refusals_name_the_reason() {
        let d = dir("x");
        let cases = [
            (
                "name = \"x\"\nversion = \"1\"\ncommand = []",
                "command is empty",
            ),
            (
                "name = \"y\"\nversion = \"1\"\ncommand = [\"a\"]",
                "directory name",
            ),
            (
                "name = \"X!\"\nversion = \"1\"\ncommand = [\"a\"]",
                "want 1..64",
            ),
            (
                "name = \"x\"\nversion = \"1\"\ncommand = [\"a\"]\nbogus = 1",
                "unknown field",
            ),
            (
                "name = \"x\"\nversion = \"1\"\ncommand = [\"a\"]\n[health]\ncommand = [\"h\"]\ninterval = 0",
                "interval",
            ),
            ("name = = 1", ""),
            ("name = \"x\"\nversion = \"\"\ncommand = [\"a\"]", "version"),
        ];
        for (text, want) in cases {
            let e = parse(text, &d).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn star_wants_everything() {
        let m = parse(
            "name = \"x\"\nversion = \"1\"\ncommand = [\"/bin/cat\"]\nevents = [\"*\"]",
            &dir("x"),
        )
        .unwrap();
        assert_eq!(m.argv, vec!["/bin/cat"]);
        assert!(m.wants("link.changed"));
    }

    #[test]
    fn config_section() {
        let xml = br#"<?xml version="1.0"?>
<opnsense>
  <tandem>
    <plugins>
      <path>/tmp/extra</path>
      <path>relative/ignored</path>
      <plugin><name>a</name><enabled>1</enabled>
        <config><log>/tmp/a.log</log><to>x@y</to><to>z@y</to><n><m>1</m></n></config>
      </plugin>
      <plugin><name>b</name><enabled>0</enabled></plugin>
      <plugin><name>a</name><enabled>0</enabled></plugin>
    </plugins>
  </tandem>
</opnsense>"#;
        let cfg = Config::parse(xml).unwrap();
        let p = PluginsCfg::from_config(&cfg);
        assert_eq!(p.paths, vec![PathBuf::from("/tmp/extra")]);
        assert_eq!(p.entries.len(), 2);
        let en = p.enabled();
        assert_eq!(en.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(
            en["a"].config,
            serde_json::json!({"log": "/tmp/a.log", "to": ["x@y", "z@y"], "n": {"m": "1"}})
        );
        assert_eq!(p.entries[1].config, serde_json::json!({}));
        let el = plugin_element(&cfg, "b").unwrap();
        assert_eq!(el.child_text("enabled").as_deref(), Some("0"));
        assert!(plugin_element(&cfg, "c").is_none());
        assert_eq!(
            PluginsCfg::from_config(&Config::factory_default()),
            PluginsCfg::default()
        );
    }
}
