//! XML-RPC (<http://xmlrpc.com/spec.md>) requests and responses, parsed on [`crate::config::dom`]
//! and emitted as text. Hardened for untrusted bodies:
//!
//! - a DTD (`<!DOCTYPE`, `<!ENTITY`) is refused before anything is parsed, so no entity can be
//!   declared or expanded (the billion-laughs bomb fails in microseconds);
//! - entity references other than the five predefined ones and numeric ones are refused;
//! - the body is at most [`MAX_BODY`] bytes and values nest at most [`MAX_DEPTH`] deep;
//! - every malformed input is a typed [`Error`], never a panic.
//!
//! Values: `string` (and untyped text), `int`/`i4`/`i8`, `boolean`, `double`, `base64`,
//! `dateTime.iso8601` (kept as text), `array`, `struct`, `nil` (the common extension).

use std::fmt;

use base64::Engine;

use crate::config::dom::{self, Element, Node};

/// Largest request or response body accepted (16 MiB).
pub const MAX_BODY: usize = 16 << 20;
/// Deepest nesting of arrays and structs accepted.
pub const MAX_DEPTH: usize = 20;

/// One XML-RPC value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    Base64(Vec<u8>),
    /// `dateTime.iso8601`, as written (e.g. `19980717T14:08:55`).
    DateTime(String),
    Array(Vec<Value>),
    /// Members in wire order (names may repeat on the wire; lookups take the first).
    Struct(Vec<(String, Value)>),
    Nil,
}

impl Value {
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// The first member called `name` of a struct.
    pub fn member(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(m) => m.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::DateTime(s) => Some(s),
            _ => None,
        }
    }

    /// The kind name as written on the wire, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Int(_) => "int",
            Value::Bool(_) => "boolean",
            Value::Double(_) => "double",
            Value::Base64(_) => "base64",
            Value::DateTime(_) => "dateTime.iso8601",
            Value::Array(_) => "array",
            Value::Struct(_) => "struct",
            Value::Nil => "nil",
        }
    }
}

/// `<methodCall>`.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodCall {
    pub method: String,
    pub params: Vec<Value>,
}

/// `<methodResponse>`: one value, or a fault.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Success(Value),
    Fault { code: i64, message: String },
}

/// Why a body was refused. Each variant is one drop reason (one counter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Larger than [`MAX_BODY`].
    TooLarge { len: usize },
    /// A `<!DOCTYPE` or `<!ENTITY` declaration.
    Dtd,
    /// An entity reference other than the predefined and numeric ones.
    Entity(String),
    /// Values nested deeper than [`MAX_DEPTH`] (or the DOM's own limit).
    TooDeep,
    /// Not well-formed XML.
    Xml(String),
    /// Well-formed, but not the XML-RPC structure (`what` was expected).
    Structure(String),
    /// A scalar whose text does not fit its type.
    BadValue { kind: &'static str, text: String },
}

impl Error {
    /// A short stable name, for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::TooLarge { .. } => "too_large",
            Error::Dtd => "dtd",
            Error::Entity(_) => "entity",
            Error::TooDeep => "too_deep",
            Error::Xml(_) => "xml",
            Error::Structure(_) => "structure",
            Error::BadValue { .. } => "bad_value",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLarge { len } => write!(f, "body of {len} bytes exceeds {MAX_BODY}"),
            Error::Dtd => f.write_str("DTD/entity declarations are not accepted"),
            Error::Entity(e) => write!(f, "unknown entity reference &{e};"),
            Error::TooDeep => write!(f, "values nested deeper than {MAX_DEPTH}"),
            Error::Xml(m) => write!(f, "malformed XML: {m}"),
            Error::Structure(m) => write!(f, "not an XML-RPC document: {m}"),
            Error::BadValue { kind, text } => {
                let shown: String = text.chars().take(40).collect();
                write!(f, "bad {kind} value {shown:?}")
            }
        }
    }
}

impl std::error::Error for Error {}

fn structure(m: impl Into<String>) -> Error {
    Error::Structure(m.into())
}

/// Refuse oversized bodies and DTDs, then parse the document.
fn parse_doc(input: &[u8]) -> Result<dom::Document, Error> {
    if input.len() > MAX_BODY {
        return Err(Error::TooLarge { len: input.len() });
    }
    if contains_ci(input, b"<!doctype") || contains_ci(input, b"<!entity") {
        return Err(Error::Dtd);
    }
    // XML 1.0 allows no C0 control characters but tab, CR and LF (raw or as character references).
    if let Some(b) = input
        .iter()
        .find(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
    {
        return Err(Error::Xml(format!(
            "control character 0x{b:02x} is not allowed in XML"
        )));
    }
    let doc = dom::Document::parse(input).map_err(|e| {
        if e.reason.contains("nesting deeper") {
            Error::TooDeep
        } else {
            Error::Xml(e.to_string())
        }
    })?;
    if doc.has_doctype() {
        return Err(Error::Dtd);
    }
    Ok(doc)
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Child elements, refusing any non-whitespace text or CDATA between them.
fn element_children<'a>(e: &'a Element, ctx: &str) -> Result<Vec<&'a Element>, Error> {
    let mut out = Vec::new();
    for n in &e.children {
        match n {
            Node::Element(c) => out.push(c),
            Node::Text(t) if t.trim().is_empty() => {}
            Node::Comment(_) | Node::Pi(_) => {}
            _ => return Err(structure(format!("unexpected text in <{ctx}>"))),
        }
    }
    Ok(out)
}

/// The text of a scalar element: text and CDATA, entities decoded, untrimmed.
fn raw_text(e: &Element) -> Result<String, Error> {
    let mut s = String::new();
    for n in &e.children {
        match n {
            Node::Text(t) => decode_text(t, &mut s)?,
            Node::CData(t) => s.push_str(t),
            Node::Comment(_) | Node::Pi(_) => {}
            Node::Element(c) => {
                return Err(structure(format!(
                    "element <{}> inside scalar <{}>",
                    c.name(),
                    e.name()
                )));
            }
            Node::DocType(_) => return Err(Error::Dtd),
        }
    }
    Ok(s)
}

/// Decode `&amp;`-style references; refuse any other named entity.
fn decode_text(t: &str, out: &mut String) -> Result<(), Error> {
    let mut rest = t;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        let semi = tail
            .find(';')
            .filter(|&n| n <= 10)
            .ok_or_else(|| Error::Xml("unterminated entity reference".into()))?;
        let name = &tail[..semi];
        let c = match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let num = if let Some(h) = name.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = name.strip_prefix('#') {
                    d.parse::<u32>().ok()
                } else {
                    None
                };
                match num.and_then(char::from_u32) {
                    Some(c) => c,
                    None => return Err(Error::Entity(name.to_string())),
                }
            }
        };
        out.push(c);
        rest = &tail[semi + 1..];
    }
    out.push_str(rest);
    Ok(())
}

fn parse_value(v: &Element, depth: usize) -> Result<Value, Error> {
    if depth > MAX_DEPTH {
        return Err(Error::TooDeep);
    }
    if v.name() != "value" {
        return Err(structure(format!("<{}> where <value> belongs", v.name())));
    }
    if v.elements().next().is_none() {
        return Ok(Value::Str(raw_text(v)?));
    }
    let kids =
        element_children(v, "value").map_err(|_| structure("text mixed with a typed value"))?;
    let [typed] = kids.as_slice() else {
        return Err(structure("more than one element in <value>"));
    };
    let typed = *typed;
    let bad = |kind: &'static str, text: &str| Error::BadValue {
        kind,
        text: text.to_string(),
    };
    let name = typed.name();
    Ok(match name {
        "string" => Value::Str(raw_text(typed)?),
        "int" | "i4" | "i8" => {
            let t = raw_text(typed)?;
            let n: i64 = t.trim().parse().map_err(|_| bad("int", &t))?;
            if name != "i8" && i32::try_from(n).is_err() {
                return Err(bad("int", &t));
            }
            Value::Int(n)
        }
        "boolean" => {
            let t = raw_text(typed)?;
            match t.trim() {
                "1" | "true" => Value::Bool(true),
                "0" | "false" => Value::Bool(false),
                _ => return Err(bad("boolean", &t)),
            }
        }
        "double" => {
            let t = raw_text(typed)?;
            let d: f64 = t.trim().parse().map_err(|_| bad("double", &t))?;
            if !d.is_finite() {
                return Err(bad("double", &t));
            }
            Value::Double(d)
        }
        "base64" => {
            let t = raw_text(typed)?;
            let clean: String = t.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let b = base64::engine::general_purpose::STANDARD
                .decode(clean.as_bytes())
                .map_err(|_| bad("base64", &t))?;
            Value::Base64(b)
        }
        "dateTime.iso8601" => {
            let t = raw_text(typed)?;
            let t = t.trim();
            if t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_digit() || "-:+.TZ".contains(c))
            {
                return Err(bad("dateTime.iso8601", t));
            }
            Value::DateTime(t.to_string())
        }
        "array" => {
            let parts = element_children(typed, "array")?;
            let [data] = parts.as_slice() else {
                return Err(structure("<array> needs exactly one <data>"));
            };
            if data.name() != "data" {
                return Err(structure("<array> needs <data>"));
            }
            let mut items = Vec::new();
            for item in element_children(data, "data")? {
                items.push(parse_value(item, depth + 1)?);
            }
            Value::Array(items)
        }
        "struct" => {
            let mut members = Vec::new();
            for m in element_children(typed, "struct")? {
                if m.name() != "member" {
                    return Err(structure(format!("<{}> in <struct>", m.name())));
                }
                let parts = element_children(m, "member")?;
                let name = parts
                    .iter()
                    .find(|e| e.name() == "name")
                    .ok_or_else(|| structure("<member> without <name>"))?;
                let value = parts
                    .iter()
                    .find(|e| e.name() == "value")
                    .ok_or_else(|| structure("<member> without <value>"))?;
                if parts.len() != 2 {
                    return Err(structure("<member> needs exactly <name> and <value>"));
                }
                members.push((raw_text(name)?, parse_value(value, depth + 1)?));
            }
            Value::Struct(members)
        }
        n if n == "nil" || n.ends_with(":nil") => Value::Nil,
        other => return Err(structure(format!("unknown value type <{other}>"))),
    })
}

/// `<params><param><value>..` → the values.
fn parse_params(params: Option<&Element>) -> Result<Vec<Value>, Error> {
    let Some(params) = params else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for p in element_children(params, "params")? {
        if p.name() != "param" {
            return Err(structure(format!("<{}> in <params>", p.name())));
        }
        let kids = element_children(p, "param")?;
        let [v] = kids.as_slice() else {
            return Err(structure("<param> needs exactly one <value>"));
        };
        out.push(parse_value(v, 0)?);
    }
    Ok(out)
}

/// Parse a request body.
pub fn parse_call(input: &[u8]) -> Result<MethodCall, Error> {
    let doc = parse_doc(input)?;
    let root = doc.root();
    if root.name() != "methodCall" {
        return Err(structure(format!(
            "root <{}>, expected <methodCall>",
            root.name()
        )));
    }
    let kids = element_children(root, "methodCall")?;
    let name = kids
        .iter()
        .find(|e| e.name() == "methodName")
        .ok_or_else(|| structure("no <methodName>"))?;
    let method = raw_text(name)?.trim().to_string();
    if method.is_empty()
        || method.len() > 128
        || !method
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:/".contains(c))
    {
        return Err(structure("bad <methodName>"));
    }
    if kids
        .iter()
        .any(|e| e.name() != "methodName" && e.name() != "params")
    {
        return Err(structure("unexpected element in <methodCall>"));
    }
    let params = parse_params(kids.iter().copied().find(|e| e.name() == "params"))?;
    Ok(MethodCall { method, params })
}

/// Parse a response body.
pub fn parse_response(input: &[u8]) -> Result<Response, Error> {
    let doc = parse_doc(input)?;
    let root = doc.root();
    if root.name() != "methodResponse" {
        return Err(structure(format!(
            "root <{}>, expected <methodResponse>",
            root.name()
        )));
    }
    let kids = element_children(root, "methodResponse")?;
    let [body] = kids.as_slice() else {
        return Err(structure("<methodResponse> needs <params> or <fault>"));
    };
    match body.name() {
        "params" => {
            let mut vals = parse_params(Some(body))?;
            if vals.len() != 1 {
                return Err(structure("a response carries exactly one param"));
            }
            Ok(Response::Success(vals.remove(0)))
        }
        "fault" => {
            let fk = element_children(body, "fault")?;
            let [v] = fk.as_slice() else {
                return Err(structure("<fault> needs one <value>"));
            };
            let v = parse_value(v, 0)?;
            let code = match v.member("faultCode") {
                Some(Value::Int(n)) => *n,
                _ => return Err(structure("fault without an int faultCode")),
            };
            let message = v
                .member("faultString")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Ok(Response::Fault { code, message })
        }
        other => Err(structure(format!("<{other}> in <methodResponse>"))),
    }
}

fn emit_value(v: &Value, out: &mut String) {
    out.push_str("<value>");
    match v {
        Value::Str(s) => {
            out.push_str("<string>");
            out.push_str(&escape_text(s));
            out.push_str("</string>");
        }
        Value::Int(n) => {
            if i32::try_from(*n).is_ok() {
                out.push_str(&format!("<int>{n}</int>"));
            } else {
                out.push_str(&format!("<i8>{n}</i8>"));
            }
        }
        Value::Bool(b) => out.push_str(if *b {
            "<boolean>1</boolean>"
        } else {
            "<boolean>0</boolean>"
        }),
        Value::Double(d) => {
            let d = if d.is_finite() { *d } else { 0.0 };
            out.push_str(&format!("<double>{d:?}</double>"));
        }
        Value::Base64(b) => {
            out.push_str("<base64>");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
            out.push_str("</base64>");
        }
        Value::DateTime(s) => {
            out.push_str("<dateTime.iso8601>");
            out.push_str(&escape_text(s));
            out.push_str("</dateTime.iso8601>");
        }
        Value::Array(items) => {
            out.push_str("<array><data>");
            for i in items {
                emit_value(i, out);
            }
            out.push_str("</data></array>");
        }
        Value::Struct(members) => {
            out.push_str("<struct>");
            for (k, v) in members {
                out.push_str("<member><name>");
                out.push_str(&escape_text(k));
                out.push_str("</name>");
                emit_value(v, out);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
        Value::Nil => out.push_str("<nil/>"),
    }
    out.push_str("</value>");
}

/// Escape for element text; characters XML 1.0 cannot carry become U+FFFD.
fn escape_text(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => '\u{fffd}',
            c => c,
        })
        .collect();
    // `'` and `"` need no escaping in element text; keep the output close to other encoders.
    dom::escape(&cleaned)
        .replace("&apos;", "'")
        .replace("&quot;", "\"")
}

/// A request body.
pub fn emit_call(call: &MethodCall) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?>\n<methodCall><methodName>");
    out.push_str(&escape_text(&call.method));
    out.push_str("</methodName><params>");
    for p in &call.params {
        out.push_str("<param>");
        emit_value(p, &mut out);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>\n");
    out
}

/// A successful response body.
pub fn emit_response(v: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?>\n<methodResponse><params><param>");
    emit_value(v, &mut out);
    out.push_str("</param></params></methodResponse>\n");
    out
}

/// A fault response body.
pub fn emit_fault(code: i64, message: &str) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?>\n<methodResponse><fault>");
    emit_value(
        &Value::Struct(vec![
            ("faultCode".into(), Value::Int(code)),
            ("faultString".into(), Value::str(message)),
        ]),
        &mut out,
    );
    out.push_str("</fault></methodResponse>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(body: &str) -> Result<MethodCall, Error> {
        parse_call(body.as_bytes())
    }

    #[test]
    fn parses_every_value_type() {
        let c = call(
            "<?xml version=\"1.0\"?><methodCall><methodName>x.y</methodName><params>\
             <param><value>plain &amp; text </value></param>\
             <param><value><string>s&lt;</string></value></param>\
             <param><value><i4>-5</i4></value></param>\
             <param><value><int> 7 </int></value></param>\
             <param><value><boolean>1</boolean></value></param>\
             <param><value><double>-1.5</double></value></param>\
             <param><value><base64>aGk=</base64></value></param>\
             <param><value><dateTime.iso8601>19980717T14:08:55</dateTime.iso8601></value></param>\
             <param><value><array><data><value><int>1</int></value><value>a</value></data></array></value></param>\
             <param><value><struct><member><name>k</name><value><nil/></value></member></struct></value></param>\
             <param><value><string><![CDATA[<raw>]]></string></value></param>\
             </params></methodCall>",
        )
        .unwrap();
        assert_eq!(c.method, "x.y");
        assert_eq!(
            c.params,
            vec![
                Value::str("plain & text "),
                Value::str("s<"),
                Value::Int(-5),
                Value::Int(7),
                Value::Bool(true),
                Value::Double(-1.5),
                Value::Base64(b"hi".to_vec()),
                Value::DateTime("19980717T14:08:55".into()),
                Value::Array(vec![Value::Int(1), Value::str("a")]),
                Value::Struct(vec![("k".into(), Value::Nil)]),
                Value::str("<raw>"),
            ]
        );
    }

    #[test]
    fn round_trips_through_emit() {
        let v = Value::Struct(vec![
            (
                "a".into(),
                Value::Array(vec![Value::str("x<&>'\""), Value::Int(1 << 40)]),
            ),
            ("b".into(), Value::Bool(false)),
            ("c".into(), Value::Double(0.25)),
            ("d".into(), Value::Base64(vec![0, 255, 7])),
            ("e".into(), Value::Nil),
            ("f".into(), Value::Struct(vec![])),
            ("g".into(), Value::str("")),
        ]);
        let c = MethodCall {
            method: "opnsense.restore_config_section".into(),
            params: vec![v.clone()],
        };
        assert_eq!(parse_call(emit_call(&c).as_bytes()).unwrap(), c);
        assert_eq!(
            parse_response(emit_response(&v).as_bytes()).unwrap(),
            Response::Success(v)
        );
        assert_eq!(
            parse_response(emit_fault(4, "no such method").as_bytes()).unwrap(),
            Response::Fault {
                code: 4,
                message: "no such method".into()
            }
        );
    }

    #[test]
    fn refuses_dtds_and_entities() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">\
            <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>\
            <methodCall><methodName>a</methodName><params><param><value>&lol2;</value></param></params></methodCall>";
        assert_eq!(call(bomb), Err(Error::Dtd));
        assert_eq!(call("<!doctype x><x/>"), Err(Error::Dtd));
        let undeclared = "<methodCall><methodName>a</methodName><params><param><value>&lol;</value>\
            </param></params></methodCall>";
        assert_eq!(call(undeclared), Err(Error::Entity("lol".into())));
    }

    #[test]
    fn refuses_malformed_input() {
        for bad in [
            "",
            "<methodCall>",
            "<methodCall><methodName>a</methodName></methodCall><x/>",
            "<methodResponse/>",
            "<methodCall><params/></methodCall>",
            "<methodCall><methodName></methodName></methodCall>",
            "<methodCall><methodName>a b</methodName></methodCall>",
            "<methodCall><methodName>a</methodName><params><param/></params></methodCall>",
            "<methodCall><methodName>a</methodName><params><param><value><int>x</int></value></param></params></methodCall>",
            "<methodCall><methodName>a</methodName><params><param><value><int>99999999999</int></value></param></params></methodCall>",
            "<methodCall><methodName>a</methodName><params><param><value><boolean>2</boolean></value></param></params></methodCall>",
            "<methodCall><methodName>a</methodName><params><param><value><double>nan</double></value></param></params></methodCall>",
            "<methodCall><methodName>a</methodName><params><param><value><base64>!!</base64></value></param></params></methodCall>",
            "<methodCall><methodName>a</methodName><params><param><value><foo/></value></param></params></methodCall>",
            "<methodCall><methodName>a</methodName><params><param><value><array/></value></param></params></methodCall>",
            "<methodCall><methodName>a</methodName><params><param><value><struct><member><name>a</name></member></struct></value></param></params></methodCall>",
            "<methodCall><methodName>a</methodName><params><param><value>x<int>1</int></value></param></params></methodCall>",
            "<methodCall><methodName>a</methodName><params><param><value><string>a<b/></string></value></param></params></methodCall>",
        ] {
            assert!(call(bad).is_err(), "accepted {bad:?}");
        }
    }

    proptest::proptest! {
        /// Random bytes and byte-level mutations of a valid call never panic; whatever parses
        /// re-emits to a call that parses back the same.
        #[test]
        fn never_panics(noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
                        at in 0usize..2000, cut in 0usize..2000) {
            let _ = parse_call(&noise);
            let _ = parse_response(&noise);
            let valid = emit_call(&MethodCall {
                method: "opnsense.restore_config_section".into(),
                params: vec![Value::Struct(vec![
                    ("filter".into(), Value::Array(vec![Value::str("a&b"), Value::Int(3)])),
                    ("x".into(), Value::Bool(true)),
                ])],
            })
            .into_bytes();
            let mut m = valid.clone();
            let i = at % m.len();
            m.splice(i..i, noise.iter().copied());
            m.truncate(cut.max(1).min(m.len()));
            if let Ok(c) = parse_call(&m) {
                proptest::prop_assert_eq!(parse_call(emit_call(&c).as_bytes()), Ok(c));
            }
        }
    }

    #[test]
    fn limits_depth_and_size() {
        let mut s = String::new();
        for _ in 0..(MAX_DEPTH + 2) {
            s.push_str("<value><array><data>");
        }
        s.push_str("<value>x</value>");
        for _ in 0..(MAX_DEPTH + 2) {
            s.push_str("</data></array></value>");
        }
        let body = format!(
            "<methodCall><methodName>a</methodName><params><param>{s}</param></params></methodCall>"
        );
        assert_eq!(call(&body), Err(Error::TooDeep));
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(parse_call(&big), Err(Error::TooLarge { len: MAX_BODY + 1 }));
    }
}
