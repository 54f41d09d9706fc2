//! OPNsense `config.xml`: a byte-exact DOM, the typed model tandem uses, validation and diff.
//!
//! [`Config`] keeps the parsed [`dom::Document`] as the source of truth (so unknown sections and
//! attributes survive every edit, and an unchanged document writes back its exact bytes) and a
//! typed view of the sections tandem acts on. Edit the document, then call [`Config::reparse`].
//!
//! Only malformed XML or a root other than `<opnsense>` make [`Config::parse`] fail. Bad values in
//! typed fields become [`Finding`]s that name the element path; [`Config::validate`] adds the
//! semantic checks (see `validate.rs`).

pub mod dom;
pub mod model;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use model::{
    AddrKind, AddrSpec, Dhcpd, Direction, FilterRule, Gateway, Hasync, Interface, IpProtocol,
    NatMode, NatOutbound, NatRule, RuleAction, StaticMap, System, User, Vip, VipMode,
};

/// The factory default configuration (`etc/config.xml`).
pub const FACTORY_DEFAULT: &str = include_str!("../../etc/config.xml");

/// The root element name of every OPNsense config.
pub const ROOT: &str = "opnsense";

/// The root-level flag of persistent CARP maintenance mode.
pub const MAINTENANCE_ELEMENT: &str = "virtualip_carp_maintenancemode";

/// How bad a finding is. Errors make a config unusable (`config.apply` refuses it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem, pinned to an element path such as `virtualip/vip[2]` or `interfaces/lan/subnet`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a config could not be read at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Xml(#[from] dom::XmlError),
    #[error("root element is <{0}>, expected <opnsense>")]
    WrongRoot(String),
}

/// A parsed `config.xml`: the document plus its typed view.
#[derive(Clone, Debug)]
pub struct Config {
    /// The document; the typed fields below are derived from it.
    pub doc: dom::Document,
    pub system: System,
    pub interfaces: Vec<Interface>,
    pub gateways: Vec<Gateway>,
    pub vips: Vec<Vip>,
    /// Legacy `filter/rule` first, then MVC `OPNsense/Firewall/Filter/rules/rule`.
    pub filter_rules: Vec<FilterRule>,
    pub nat: NatOutbound,
    /// MVC source NAT rules (`OPNsense/Firewall/Filter/snatrules/rule`), applied whatever the
    /// outbound mode; synced with id `nat` like `nat/outbound`.
    pub snat_rules: Vec<NatRule>,
    pub dhcpd: Vec<Dhcpd>,
    pub hasync: Hasync,
    /// `<virtualip_carp_maintenancemode>` present at root level.
    pub maintenance: bool,
    /// Problems found while reading typed fields.
    findings: Vec<Finding>,
}

impl Config {
    /// Parse a config. Only malformed XML or a wrong root element is an error.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let doc = dom::Document::parse(bytes)?;
        let root = doc.root().name();
        if root != ROOT {
            return Err(ConfigError::WrongRoot(root.to_string()));
        }
        let mut cfg = Config {
            doc,
            system: System::default(),
            interfaces: Vec::new(),
            gateways: Vec::new(),
            vips: Vec::new(),
            filter_rules: Vec::new(),
            nat: NatOutbound::default(),
            snat_rules: Vec::new(),
            dhcpd: Vec::new(),
            hasync: Hasync::default(),
            maintenance: false,
            findings: Vec::new(),
        };
        cfg.reparse();
        Ok(cfg)
    }

    /// The factory default configuration.
    pub fn factory_default() -> Config {
        Config::parse(FACTORY_DEFAULT.as_bytes()).expect("etc/config.xml is valid (tested)")
    }

    /// Rebuild the typed fields (and parse findings) from `doc`, after editing it.
    pub fn reparse(&mut self) {
        let mut r = model::Reader {
            findings: Vec::new(),
        };
        let root = self.doc.root();
        self.system = model::parse_system(root, &mut r);
        self.interfaces = model::parse_interfaces(root, &mut r);
        let keys: Vec<String> = self.interfaces.iter().map(|i| i.key.clone()).collect();
        self.gateways = model::parse_gateways(root, &mut r);
        self.vips = model::parse_vips(root, &mut r);
        self.filter_rules = model::parse_filter(root, &keys, &mut r);
        self.nat = model::parse_nat(root, &keys, &mut r);
        self.snat_rules = model::parse_snat(root, &keys);
        self.dhcpd = model::parse_dhcpd(root, &mut r);
        self.hasync = model::parse_hasync(root, &mut r);
        self.maintenance = root.child(MAINTENANCE_ELEMENT).is_some();
        self.findings = r.findings;
    }

    /// The document's bytes; identical to the input if nothing was edited.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.doc.to_bytes()
    }

    /// Every finding: reading problems first, then semantic checks, in a stable order.
    pub fn validate(&self) -> Vec<Finding> {
        let mut out = self.findings.clone();
        validate::check(self, &mut out);
        out
    }

    /// Only the findings of severity [`Severity::Error`].
    pub fn errors(&self) -> Vec<Finding> {
        self.validate()
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .collect()
    }

    /// Top-level element name → sha256 (hex) of its bytes. Repeated names hash all their elements
    /// in order.
    pub fn section_digests(&self) -> BTreeMap<String, String> {
        let mut hashers: BTreeMap<String, Sha256> = BTreeMap::new();
        for e in self.doc.root().elements() {
            hashers
                .entry(e.name().to_string())
                .or_default()
                .update(e.to_string_raw().as_bytes());
        }
        hashers
            .into_iter()
            .map(|(k, h)| (k, hex::encode(h.finalize())))
            .collect()
    }

    /// Names of top-level sections that differ between `self` and `newer`, were added or removed.
    pub fn changed_sections(&self, newer: &Config) -> BTreeSet<String> {
        let a = self.section_digests();
        let b = newer.section_digests();
        a.keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect()
    }

    /// Enter (`<virtualip_carp_maintenancemode>1</...>` at root level) or leave (element removed)
    /// persistent CARP maintenance mode, in the document and the typed field.
    pub fn set_maintenance(&mut self, on: bool) {
        let root = self.doc.root_mut();
        if on {
            if root.child(MAINTENANCE_ELEMENT).is_none() {
                root.append(dom::Element::with_text(MAINTENANCE_ELEMENT, "1"));
            }
        } else {
            root.remove_children(MAINTENANCE_ELEMENT);
        }
        self.maintenance = on;
    }

    /// The interface with this key (`lan`, `opt1`).
    pub fn interface(&self, key: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.key == key)
    }

    /// The interface assigned to this kernel device (`em0`).
    pub fn interface_by_device(&self, dev: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.device == dev)
    }

    /// CARP VIPs (mode carp with a vhid).
    pub fn carp_vips(&self) -> impl Iterator<Item = &Vip> {
        self.vips
            .iter()
            .filter(|v| v.mode == VipMode::Carp && v.vhid.is_some())
    }
}

/// `tandem config check FILE`: print each finding as `error: <path>: <message>` or
/// `warning: ...`, then `N errors, M warnings`. Exit 1 on any error or an unreadable/malformed file.
pub fn check_command(file: &Path) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}: cannot read: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let cfg = match Config::parse(&bytes) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let findings = cfg.validate();
    let mut errors = 0usize;
    let mut warnings = 0usize;
    for f in &findings {
        match f.severity {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
        }
        println!("{}: {f}", f.severity);
    }
    println!("{errors} errors, {warnings} warnings");
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
