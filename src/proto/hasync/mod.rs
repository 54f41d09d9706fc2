//! XML-RPC config sync, the pure part: which config paths a sync id covers, OPNsense's
//! config ↔ XML-RPC value encoding, the master's rewrite (only VHID VIPs with `advskew + 100`,
//! `nosync` records dropped, `failover_peerip` pointed at the master), the backup's merge rules,
//! per-section digests for `ha.status`, and the checks that compare two nodes.
//!
//! Facts: `reference/opnsense.md` §2.3–2.5.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::config::dom::{Document, Element, Node};
use crate::wire::xmlrpc::Value;

/// Sync id → comma list of config paths (dot notation), as the plugins declare them.
pub const SYNC_IDS: &[(&str, &str)] = &[
    ("users", "system.user,system.group"),
    ("authservers", "system.authserver"),
    ("certs", "cert,ca,crl"),
    ("virtualip", "virtualip"),
    ("staticroutes", "staticroutes,gateways,OPNsense.Gateways"),
    ("syslog-ng", "syslog,OPNsense.Syslog"),
    ("cron", "OPNsense.cron"),
    ("sysctl", "sysctl"),
    ("webgui", "system.webgui"),
    ("rules", "filter,OPNsense.Firewall.Filter.rules"),
    (
        "nat",
        "nat,OPNsense.Firewall.Filter.snatrules,OPNsense.Firewall.Filter.npt,OPNsense.Firewall.Filter.onetoone",
    ),
    ("aliases", "aliases,OPNsense.Firewall.Alias"),
    ("schedules", "schedules"),
    ("ifgroups", "ifgroups.ifgroupentry"),
    ("categories", "OPNsense.Firewall.Category"),
    ("lvtemplate", "OPNsense.Firewall.Lvtemplate"),
    ("dhcpd", "dhcpd"),
    ("dhcpdv6", "dhcpdv6"),
    ("kea", "OPNsense.Kea"),
    ("dhcrelay", "dhcrelay,dhcrelay6,OPNsense.DHCRelay"),
    ("dnsforwarder", "dnsmasq"),
    ("dnsresolver", "unbound,OPNsense.unboundplus"),
    ("ipsec", "ipsec,OPNsense.IPsec,OPNsense.Swanctl"),
    ("openvpn", "openvpn,OPNsense.OpenVPN"),
    ("wireguard", "OPNsense.wireguard"),
    ("ntpd", "ntpd,system.timeservers"),
    ("ssh", "system.ssh"),
    ("monit", "OPNsense.monit"),
    ("shaper", "OPNsense.TrafficShaper"),
    ("captiveportal", "OPNsense.captiveportal"),
    ("radvd", "OPNsense.radvd"),
];

/// Paths a backup never takes from a sync, whatever the client sends.
pub const NEVER_SYNCED: &[&str] = &[
    "hasync",
    "interfaces",
    "virtualip_carp_maintenancemode",
    "system.hostname",
    "system.domain",
];

/// Lists whose order matters: the backup's own `nosync` records are not kept in them.
const ORDERED_LISTS: &[&str] = &["filter.rule", "nat.rule", "nat.outbound.rule"];

/// Tags that are always lists (OPNsense `listtags()`), even with one element.
const LIST_TAGS: &[&str] = &[
    "acls",
    "alias",
    "aliasurl",
    "allowedip",
    "authserver",
    "bridged",
    "ca",
    "cert",
    "clone",
    "columnitem",
    "crl",
    "dnsserver",
    "dnsupdate",
    "domainoverrides",
    "dyndns",
    "gateway_group",
    "gateway_item",
    "gif",
    "gre",
    "group",
    "hosts",
    "ifgroupentry",
    "igmpentry",
    "item",
    "key",
    "lagg",
    "member",
    "mobilekey",
    "monitor_type",
    "npt",
    "onetoone",
    "openvpn-server",
    "openvpn-client",
    "openvpn-csc",
    "option",
    "phase1",
    "phase2",
    "ppp",
    "pppoe",
    "priv",
    "proxyarpnet",
    "queue",
    "pipe",
    "route",
    "rule",
    "schedule",
    "servernat",
    "staticmap",
    "timerange",
    "tunnel",
    "user",
    "vip",
    "virtual_server",
    "vlan",
    "winsserver",
    "wolentry",
    "widget",
];

pub fn is_list_tag(name: &str) -> bool {
    LIST_TAGS.contains(&name)
}

/// The config paths of a set of sync ids, in the order of [`SYNC_IDS`], without duplicates.
/// Unknown ids are returned in the second list.
pub fn sections_for(items: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let mut out: Vec<String> = Vec::new();
    for (id, paths) in SYNC_IDS {
        if items.contains(*id) {
            for p in paths.split(',') {
                if !out.iter().any(|o| o == p) {
                    out.push(p.to_string());
                }
            }
        }
    }
    let unknown = items
        .iter()
        .filter(|i| !SYNC_IDS.iter().any(|(id, _)| id == i))
        .cloned()
        .collect();
    (out, unknown)
}

/// OPNsense's `toArray()`: leaves are strings, repeated or list-tagged children arrays, other
/// containers structs; attributes go into an `@attributes` struct member.
pub fn element_to_value(e: &Element) -> Value {
    let attrs = e.attrs();
    let kids: Vec<&Element> = e.elements().collect();
    if kids.is_empty() && attrs.is_empty() {
        return Value::Str(e.text());
    }
    let mut members: Vec<(String, Value)> = Vec::new();
    if !attrs.is_empty() {
        members.push((
            "@attributes".into(),
            Value::Struct(attrs.into_iter().map(|(k, v)| (k, Value::Str(v))).collect()),
        ));
    }
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for k in &kids {
        if !seen.insert(k.name()) {
            continue;
        }
        let same: Vec<&Element> = kids
            .iter()
            .copied()
            .filter(|c| c.name() == k.name())
            .collect();
        let v = if same.len() > 1 || is_list_tag(k.name()) {
            Value::Array(same.into_iter().map(element_to_value).collect())
        } else {
            element_to_value(k)
        };
        members.push((k.name().to_string(), v));
    }
    Value::Struct(members)
}

/// The value at a dot path (`OPNsense.Firewall.Filter.rules`, `system.user`); `None` if absent.
pub fn value_at(root: &Element, path: &str) -> Option<Value> {
    let parts: Vec<&str> = path.split('.').collect();
    let (last, parents) = parts.split_last()?;
    let mut cur = root;
    for p in parents {
        cur = cur.child(p)?;
    }
    let same: Vec<&Element> = cur.children_named(last).collect();
    match same.as_slice() {
        [] => None,
        [one] if !is_list_tag(last) => Some(element_to_value(one)),
        many => Some(Value::Array(
            many.iter().map(|e| element_to_value(e)).collect(),
        )),
    }
}

/// PHP's `!empty()` on a config value: set and neither `""` nor `"0"`.
fn php_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Nil) => false,
        Some(Value::Str(s)) => !s.is_empty() && s != "0",
        Some(Value::Bool(b)) => *b,
        Some(Value::Int(n)) => *n != 0,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Struct(m)) => !m.is_empty(),
        Some(_) => true,
    }
}

/// `remove_nosync()`: drop every list item whose `nosync` is set, at any depth.
pub fn remove_nosync(v: &mut Value) {
    match v {
        Value::Array(items) => {
            items.retain(|i| !php_set(i.member("nosync")));
            items.iter_mut().for_each(remove_nosync);
        }
        Value::Struct(m) => m.iter_mut().for_each(|(_, v)| remove_nosync(v)),
        _ => {}
    }
}

fn struct_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    match v {
        Value::Struct(m) => m.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
        _ => None,
    }
}

fn as_items(v: Option<Value>) -> Vec<Value> {
    match v {
        Some(Value::Array(a)) => a,
        Some(s @ Value::Struct(_)) => vec![s],
        _ => Vec::new(),
    }
}

/// `get_vip_config_section()`: only VIPs with a VHID, `advskew = min(advskew + 100, 254)` on
/// the master's side.
fn vip_section(root: &Element, master: bool) -> Value {
    let vips = as_items(value_at(root, "virtualip.vip"));
    let mut out = Vec::new();
    for mut v in vips {
        if !php_set(v.member("vhid")) {
            continue;
        }
        if master
            && let Some(Value::Str(s)) = struct_mut(&mut v, "advskew")
            && !s.is_empty()
        {
            let n = s.trim().parse::<i64>().unwrap_or(0);
            *s = n.saturating_add(100).clamp(0, 254).to_string();
        }
        out.push(v);
    }
    Value::Struct(vec![("vip".into(), Value::Array(out))])
}

/// The master's own IPv4 address on the interface whose subnet holds `peer` (longest prefix).
pub fn own_ip_towards(cfg: &Config, peer: Ipv4Addr) -> Option<Ipv4Addr> {
    cfg.interfaces
        .iter()
        .filter(|i| i.enabled)
        .filter_map(|i| i.ipv4)
        .filter(|(a, p)| {
            let mask = u32::MAX
                .checked_shl(32 - u32::from((*p).min(32)))
                .unwrap_or(0);
            (u32::from(*a) & mask) == (u32::from(peer) & mask)
        })
        .max_by_key(|(_, p)| *p)
        .map(|(a, _)| a)
}

/// `failover_peerip` of every `dhcpd/<if>` rewritten to our own address towards that peer.
fn rewrite_failover(cfg: &Config, v: &mut Value) {
    let Value::Struct(ifs) = v else { return };
    for (_, iface) in ifs.iter_mut() {
        if let Some(Value::Str(s)) = struct_mut(iface, "failover_peerip")
            && let Ok(peer) = s.trim().parse::<Ipv4Addr>()
            && let Some(own) = own_ip_towards(cfg, peer)
        {
            *s = own.to_string();
        }
    }
}

/// One section as it travels (master) or as the backup holds it (not master): the value that
/// both sides must agree on. A section missing locally is an empty array (OPNsense sends that
/// so the backup learns it was removed).
pub fn section_view(cfg: &Config, section: &str, master: bool) -> Value {
    let root = cfg.doc.root();
    let mut v = if section == "virtualip" {
        vip_section(root, master)
    } else {
        value_at(root, section).unwrap_or(Value::Array(Vec::new()))
    };
    remove_nosync(&mut v);
    if master && section == "dhcpd" {
        rewrite_failover(cfg, &mut v);
    }
    v
}

/// Insert `v` at a dot path into a nested struct.
fn insert_path(tree: &mut Vec<(String, Value)>, path: &str, v: Value) {
    match path.split_once('.') {
        None => {
            tree.retain(|(k, _)| k != path);
            tree.push((path.to_string(), v));
        }
        Some((head, rest)) => {
            let pos = match tree.iter().position(|(k, _)| k == head) {
                Some(p) if matches!(tree[p].1, Value::Struct(_)) => p,
                other => {
                    if let Some(p) = other {
                        tree.remove(p);
                    }
                    tree.push((head.to_string(), Value::Struct(Vec::new())));
                    tree.len() - 1
                }
            };
            if let Value::Struct(sub) = &mut tree[pos].1 {
                insert_path(sub, rest, v);
            }
        }
    }
}

/// `carp_sync_xml()`: the struct sent with `opnsense.restore_config_section`.
pub fn build_payload(cfg: &Config, sections: &[String]) -> Value {
    let mut tree = Vec::new();
    for s in sections {
        if NEVER_SYNCED.iter().any(|n| n == s) {
            continue;
        }
        insert_path(&mut tree, s, section_view(cfg, s, true));
    }
    Value::Struct(tree)
}

/// Canonical text of a value (struct members sorted), for digests.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Str(s) | Value::DateTime(s) => {
            out.push_str(&format!("s{}:{s}", s.len()));
        }
        Value::Int(n) => out.push_str(&format!("s{}:{n}", n.to_string().len())),
        Value::Bool(b) => out.push_str(if *b { "s1:1" } else { "s1:0" }),
        Value::Double(d) => {
            let t = d.to_string();
            out.push_str(&format!("s{}:{t}", t.len()));
        }
        Value::Base64(b) => out.push_str(&format!("b{}:{}", b.len(), hex::encode(b))),
        Value::Nil => out.push_str("s0:"),
        Value::Array(a) => {
            out.push('[');
            for i in a {
                canonical(i, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Struct(m) => {
            let mut sorted: Vec<&(String, Value)> = m.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (k, v) in sorted {
                out.push_str(&format!("{}:{k}=", k.len()));
                canonical(v, out);
                out.push(',');
            }
            out.push('}');
        }
    }
}

/// sha256 (hex) of a value's canonical form.
pub fn digest(v: &Value) -> String {
    let mut s = String::new();
    canonical(v, &mut s);
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Section → digest of [`section_view`].
pub fn section_digests(
    cfg: &Config,
    sections: &[String],
    master: bool,
) -> BTreeMap<String, String> {
    sections
        .iter()
        .map(|s| (s.clone(), digest(&section_view(cfg, s, master))))
        .collect()
}

/// Why a received struct could not be merged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("restore_config_section expects a struct of sections, got {0}")]
    NotAStruct(&'static str),
    #[error("invalid element name {0:?}")]
    BadName(String),
    #[error("nothing to merge: every section sent is one a backup never takes")]
    Nothing,
}

fn valid_name(n: &str) -> bool {
    let mut cs = n.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && n.len() <= 64
        && cs.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn leaf_text(v: &Value) -> String {
    match v {
        Value::Str(s) | Value::DateTime(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Base64(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Nil | Value::Array(_) | Value::Struct(_) => String::new(),
    }
}

fn indent(depth: usize) -> String {
    format!("\n{}", "  ".repeat(depth))
}

/// An element with attributes (the DOM has no constructor for them: parse a tiny document).
fn element_with_attrs(name: &str, attrs: &[(String, Value)]) -> Result<Element, MergeError> {
    let mut s = format!("<{name}");
    for (k, v) in attrs {
        if !valid_name(k) {
            return Err(MergeError::BadName(k.clone()));
        }
        s.push_str(&format!(
            " {k}=\"{}\"",
            crate::config::dom::escape(&leaf_text(v))
        ));
    }
    s.push_str("/>");
    let doc = Document::parse(s.as_bytes()).map_err(|_| MergeError::BadName(name.into()))?;
    let mut e = doc.root().clone();
    e.self_closing = false;
    Ok(e)
}

/// Config elements called `name` for a received value (an array gives one element per item).
pub fn elements_from_value(
    name: &str,
    v: &Value,
    depth: usize,
) -> Result<Vec<Element>, MergeError> {
    if !valid_name(name) {
        return Err(MergeError::BadName(name.into()));
    }
    match v {
        Value::Array(items) => {
            let mut out = Vec::new();
            for i in items {
                out.extend(elements_from_value(name, i, depth)?);
            }
            Ok(out)
        }
        Value::Struct(m) => {
            let attrs = match m.iter().find(|(k, _)| k == "@attributes") {
                Some((_, Value::Struct(a))) => a.as_slice(),
                _ => &[],
            };
            let mut e = element_with_attrs(name, attrs)?;
            let mut any = false;
            for (k, cv) in m.iter().filter(|(k, _)| k != "@attributes") {
                for c in elements_from_value(k, cv, depth + 1)? {
                    e.children.push(Node::Text(indent(depth + 1)));
                    e.children.push(Node::Element(c));
                    any = true;
                }
            }
            if any {
                e.children.push(Node::Text(indent(depth)));
            } else if attrs.is_empty() {
                e.self_closing = true;
            }
            Ok(vec![e])
        }
        leaf => {
            let mut e = Element::with_text(name, &leaf_text(leaf));
            if e.children.is_empty() {
                e.self_closing = true;
            }
            Ok(vec![e])
        }
    }
}

/// Replace every child called `name` by `new`, at the position of the first one (or at the end).
fn replace_children(parent: &mut Element, name: &str, new: Vec<Element>, depth: usize) {
    let ind = indent(depth);
    let mut new = Some(new);
    let mut out: Vec<Node> = Vec::new();
    for n in std::mem::take(&mut parent.children) {
        if matches!(&n, Node::Element(e) if e.name() == name) {
            if matches!(out.last(), Some(Node::Text(t)) if t.trim().is_empty()) {
                out.pop();
            }
            for e in new.take().into_iter().flatten() {
                out.push(Node::Text(ind.clone()));
                out.push(Node::Element(e));
            }
            continue;
        }
        out.push(n);
    }
    if let Some(new) = new.filter(|n| !n.is_empty()) {
        let closing = match out.last() {
            Some(Node::Text(t)) if t.trim().is_empty() => out.pop(),
            _ => None,
        };
        for e in new {
            out.push(Node::Text(ind.clone()));
            out.push(Node::Element(e));
        }
        out.push(closing.unwrap_or_else(|| Node::Text(indent(depth.saturating_sub(1)))));
    }
    if !out.is_empty() {
        parent.self_closing = false;
    }
    parent.children = out;
}

/// A value made only of empty arrays (how a master says "this section is empty").
fn is_void(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Struct(m) => m.iter().all(|(k, v)| k != "@attributes" && is_void(v)),
        _ => false,
    }
}

fn element_nosync(e: &Element) -> bool {
    e.child_value("nosync").is_some_and(|v| v != "0")
}

/// `merge_config_attributes()` for one member `key` of `parent` at `path`.
fn merge_member(
    parent: &mut Element,
    key: &str,
    v: &Value,
    path: &str,
    depth: usize,
) -> Result<(), MergeError> {
    if key == "@attributes" || NEVER_SYNCED.contains(&path) {
        return Ok(());
    }
    if !valid_name(key) {
        return Err(MergeError::BadName(key.into()));
    }
    let count = parent.children_named(key).count();
    match v {
        Value::Array(items) => {
            // An empty array leaves an associative container alone (OPNsense quirk).
            if items.is_empty()
                && count == 1
                && !is_list_tag(key)
                && parent
                    .child(key)
                    .is_some_and(|c| c.elements().next().is_some())
            {
                return Ok(());
            }
            let mut new: Vec<Element> = if ORDERED_LISTS.contains(&path) {
                Vec::new()
            } else {
                parent
                    .children_named(key)
                    .filter(|e| element_nosync(e))
                    .cloned()
                    .collect()
            };
            new.extend(elements_from_value(key, v, depth)?);
            replace_children(parent, key, new, depth);
        }
        Value::Struct(m) => {
            let record = v
                .member("@attributes")
                .is_some_and(|a| a.member("uuid").is_some());
            match parent.child_mut(key) {
                Some(child) if count == 1 && !record => {
                    for (k, cv) in m {
                        merge_member(child, k, cv, &format!("{path}.{k}"), depth + 1)?;
                    }
                    if child.elements().next().is_some()
                        && !matches!(child.children.last(), Some(Node::Text(t)) if t.trim().is_empty())
                    {
                        child.children.push(Node::Text(indent(depth)));
                    }
                }
                // Nothing but empty lists for a container we do not have: nothing to remove.
                None if is_void(v) => {}
                _ => {
                    let new = elements_from_value(key, v, depth)?;
                    replace_children(parent, key, new, depth);
                }
            }
        }
        leaf => {
            let new = elements_from_value(key, leaf, depth)?;
            replace_children(parent, key, new, depth);
        }
    }
    Ok(())
}

/// The VIP rules of `restore_config_section_xmlrpc()`: the backup keeps its VIPs without a VHID
/// (first) and its `nosync` ones; every other VIP is replaced by what the master sent, so VIPs
/// the master dropped are gone.
fn merge_vips(root: &mut Element, v: &Value) -> Result<(), MergeError> {
    let incoming = match v.member("vip") {
        Some(x) => x.clone(),
        None => Value::Array(Vec::new()),
    };
    if root.child("virtualip").is_none() {
        replace_children(root, "virtualip", vec![Element::new("virtualip")], 1);
    }
    let Some(section) = root.child_mut("virtualip") else {
        return Ok(());
    };
    let local: Vec<Element> = section.children_named("vip").cloned().collect();
    let no_vhid: Vec<Element> = local
        .iter()
        .filter(|e| e.child_value("vhid").is_none())
        .cloned()
        .collect();
    let nosync: Vec<Element> = local
        .iter()
        .filter(|e| e.child_value("vhid").is_some() && element_nosync(e))
        .cloned()
        .collect();
    let mut new = no_vhid;
    new.extend(nosync);
    new.extend(elements_from_value("vip", &incoming, 2)?);
    replace_children(section, "vip", new, 2);
    for (k, cv) in v_members(v) {
        if k != "vip" {
            merge_member(section, k, cv, &format!("virtualip.{k}"), 2)?;
        }
    }
    Ok(())
}

fn v_members(v: &Value) -> &[(String, Value)] {
    match v {
        Value::Struct(m) => m,
        _ => &[],
    }
}

/// Merge a received `restore_config_section` struct into the document. Returns the top-level
/// keys merged (for the revision description), in the order received.
pub fn merge(doc: &mut Document, payload: &Value) -> Result<Vec<String>, MergeError> {
    let Value::Struct(members) = payload else {
        return Err(MergeError::NotAStruct(payload.kind()));
    };
    let root = doc.root_mut();
    let mut keys = Vec::new();
    for (k, v) in members {
        if NEVER_SYNCED.contains(&k.as_str()) {
            continue;
        }
        if k == "virtualip" {
            merge_vips(root, v)?;
        } else {
            merge_member(root, k, v, k, 1)?;
        }
        keys.push(k.clone());
    }
    if keys.is_empty() && !members.is_empty() {
        return Err(MergeError::Nothing);
    }
    Ok(keys)
}

/// The revision description OPNsense writes for a merge.
pub fn merge_description(keys: &[String]) -> String {
    format!(
        "Merged {} config sections from XMLRPC client",
        keys.join(", ")
    )
}

/// True if a revision description is one [`merge_description`] wrote.
pub fn is_merge_description(d: &str) -> bool {
    d.starts_with("Merged ") && d.ends_with("config sections from XMLRPC client")
}

/// The XML-RPC URL for `synchronizetoip` (an address or a base URL), using the local webgui
/// protocol and port, as `rc.filter_synchronize` builds it.
pub fn sync_url(target: &str, protocol: &str, port: Option<u16>) -> Result<String, String> {
    let t = target.trim();
    if t.is_empty() {
        return Err("hasync/synchronizetoip is empty".into());
    }
    if t.starts_with("http://") || t.starts_with("https://") {
        let mut u = t.to_string();
        if !u.ends_with('/') {
            u.push('/');
        }
        u.push_str("xmlrpc.php");
        return Ok(u);
    }
    let host = match t.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => format!("[{a}]"),
        Ok(IpAddr::V4(a)) => a.to_string(),
        Err(_)
            if t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c)) =>
        {
            t.to_string()
        }
        Err(_) => return Err(format!("hasync/synchronizetoip {t:?} is no address or URL")),
    };
    let proto = if protocol == "http" { "http" } else { "https" };
    Ok(match port {
        Some(p) => format!("{proto}://{host}:{p}/xmlrpc.php"),
        None => format!("{proto}://{host}/xmlrpc.php"),
    })
}

/// Interface key → IPv4 network (`192.168.1.0/24`) or `""` when it has no static address.
pub fn interface_networks(cfg: &Config) -> BTreeMap<String, String> {
    cfg.interfaces
        .iter()
        .map(|i| {
            let net = i
                .ipv4
                .map(|(a, p)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(p.min(32))).unwrap_or(0);
                    format!("{}/{p}", Ipv4Addr::from(u32::from(a) & mask))
                })
                .unwrap_or_default();
            (i.key.clone(), net)
        })
        .collect()
}

/// Warnings about two nodes' interface assignments (same key, different subnet, or missing).
pub fn interface_warnings(
    local: &BTreeMap<String, String>,
    remote: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for k in local.keys().chain(remote.keys()).collect::<BTreeSet<_>>() {
        match (local.get(k), remote.get(k)) {
            (Some(_), None) => out.push(format!(
                "interface {k} is assigned here but not on the peer: interface assignments must be identical"
            )),
            (None, Some(_)) => out.push(format!(
                "interface {k} is assigned on the peer but not here: interface assignments must be identical"
            )),
            (Some(a), Some(b)) if a != b => out.push(format!(
                "interface {k} is {a} here but {b} on the peer: interface assignments must be identical"
            )),
            _ => {}
        }
    }
    out
}

/// Warnings for VHIDs that both nodes claim as MASTER: (vhid, interface, state) per node.
pub fn split_brain_warnings(
    local: &[(u64, String, String)],
    remote: &[(u64, String, String)],
) -> Vec<String> {
    let mut out = Vec::new();
    for (vhid, iface, st) in local {
        if st == "MASTER"
            && remote
                .iter()
                .any(|(v, i, s)| v == vhid && i == iface && s == "MASTER")
        {
            out.push(format!(
                "both nodes claim MASTER for VHID {vhid} on {iface} (split brain)"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
