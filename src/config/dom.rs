//! A small XML DOM that writes back exactly the bytes it read.
//!
//! OPNsense's `config.xml` carries sections we do not model (plugins, certificates, ...). They must
//! survive every edit untouched, and an unchanged file must round-trip byte for byte. So every node
//! keeps its raw (still escaped) source text; typed accessors unescape on demand and edits escape
//! what they write. Reading is done with quick-xml's event reader.
//!
//! Limits for untrusted input: nesting depth is capped (`MAX_DEPTH`), DTDs are kept as opaque text and
//! never expanded, entity references other than the five XML ones and numeric ones are left verbatim.

use std::fmt;

use quick_xml::Reader;
use quick_xml::events::Event;

/// The UTF-8 byte order mark.
const BOM: &str = "\u{feff}";

/// Deeper nesting than this is refused: config.xml is about 6 deep, XML-RPC about 10.
pub const MAX_DEPTH: usize = 64;

/// One node of the tree, holding its raw source text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    /// Character data, raw (escaped) as in the source.
    Text(String),
    /// `<!--...-->`: the inner text.
    Comment(String),
    /// `<![CDATA[...]]>`: the inner text.
    CData(String),
    /// `<?...?>`: the inner text (the XML declaration too).
    Pi(String),
    /// `<!DOCTYPE ...>`: the inner text.
    DocType(String),
}

/// An element: its raw start-tag content (name and attributes, as written) and its children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// Everything between `<` and `>` (or `/>`) of the start tag.
    raw_start: String,
    name_len: usize,
    /// `<x/>` in the source (and no children).
    pub self_closing: bool,
    /// The end tag's content as written (`a` in `</a>`, `a ` in `</a >`); `None` means the plain name.
    raw_end: Option<String>,
    pub children: Vec<Node>,
}

/// A whole document: the nodes around and including the root element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub nodes: Vec<Node>,
}

/// Why a document could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XmlError {
    /// Byte offset where the reader stopped.
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "xml error at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for XmlError {}

impl Document {
    /// Parse a document. Exactly one root element is required.
    pub fn parse(input: &[u8]) -> Result<Document, XmlError> {
        // quick-xml skips a UTF-8 byte order mark without counting it in its positions, which
        // would shift the raw end-tag spans below. Parse what follows it and keep the BOM as a
        // leading text node so it is written back.
        let (bom, input) = match input.strip_prefix(BOM.as_bytes()) {
            Some(rest) => (true, rest),
            None => (false, input),
        };
        if input.starts_with(BOM.as_bytes()) {
            return Err(XmlError {
                offset: 3,
                reason: "text outside the root element (a second byte order mark)".into(),
            });
        }
        let mut doc = Document::parse_body(input)?;
        if bom {
            doc.nodes.insert(0, Node::Text(BOM.to_string()));
        }
        Ok(doc)
    }

    fn parse_body(input: &[u8]) -> Result<Document, XmlError> {
        let mut reader = Reader::from_reader(input);
        let cfg = reader.config_mut();
        cfg.trim_text(false);
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        let mut stack: Vec<Element> = Vec::new();
        let mut top: Vec<Node> = Vec::new();
        let mut roots = 0usize;
        let mut buf = Vec::new();
        loop {
            let pos = reader.buffer_position();
            let ev = reader.read_event_into(&mut buf).map_err(|e| XmlError {
                offset: pos,
                reason: e.to_string(),
            })?;
            let node = match ev {
                Event::Eof => break,
                Event::Start(e) => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(XmlError {
                            offset: pos,
                            reason: format!("nesting deeper than {MAX_DEPTH}"),
                        });
                    }
                    let name_len = e.name().as_ref().len();
                    stack.push(Element {
                        raw_start: e.to_string(),
                        name_len,
                        self_closing: false,
                        raw_end: None,
                        children: Vec::new(),
                    });
                    buf.clear();
                    continue;
                }
                Event::End(end) => {
                    let Some(mut done) = stack.pop() else {
                        return Err(XmlError {
                            offset: pos,
                            reason: "unexpected end tag".into(),
                        });
                    };
                    // quick-xml trims the end tag's name; take the raw source span instead.
                    let after = reader.buffer_position();
                    let raw = input
                        .get(pos as usize + 2..(after as usize).saturating_sub(1))
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .unwrap_or(&end);
                    if raw != done.name() {
                        done.raw_end = Some(raw.to_string());
                    }
                    Node::Element(done)
                }
                Event::Empty(e) => Node::Element(Element {
                    name_len: e.name().as_ref().len(),
                    raw_start: e.to_string(),
                    self_closing: true,
                    raw_end: None,
                    children: Vec::new(),
                }),
                Event::Text(t) => Node::Text(t.to_string()),
                Event::GeneralRef(r) => Node::Text(format!("&{};", &*r)),
                Event::CData(t) => Node::CData(t.to_string()),
                Event::Comment(t) => Node::Comment(t.to_string()),
                Event::Decl(t) => Node::Pi(t.to_string()),
                Event::PI(t) => Node::Pi(t.to_string()),
                Event::DocType(t) => Node::DocType(t.to_string()),
            };
            buf.clear();
            match stack.last_mut() {
                Some(parent) => {
                    // Merge adjacent text (quick-xml splits text around entity references).
                    if let (Node::Text(new), Some(Node::Text(prev))) =
                        (&node, parent.children.last_mut())
                    {
                        prev.push_str(new);
                        continue;
                    }
                    parent.children.push(node);
                }
                None => {
                    match &node {
                        Node::Element(_) => roots += 1,
                        Node::Text(t) if !t.trim().is_empty() => {
                            return Err(XmlError {
                                offset: pos,
                                reason: "text outside the root element".into(),
                            });
                        }
                        _ => {}
                    }
                    if let (Node::Text(new), Some(Node::Text(prev))) = (&node, top.last_mut()) {
                        prev.push_str(new);
                        continue;
                    }
                    top.push(node);
                }
            }
        }
        if !stack.is_empty() {
            return Err(XmlError {
                offset: reader.buffer_position(),
                reason: format!(
                    "unclosed element <{}>",
                    stack.last().map_or("", |e| e.name())
                ),
            });
        }
        if roots != 1 {
            return Err(XmlError {
                offset: reader.buffer_position(),
                reason: format!("expected exactly one root element, found {roots}"),
            });
        }
        Ok(Document { nodes: top })
    }

    /// Serialise back to bytes. An unchanged document gives the bytes it was parsed from.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        for n in &self.nodes {
            write_node(n, &mut out);
        }
        out.into_bytes()
    }

    pub fn root(&self) -> &Element {
        self.nodes
            .iter()
            .find_map(|n| match n {
                Node::Element(e) => Some(e),
                _ => None,
            })
            .expect("a parsed document has a root element")
    }

    pub fn root_mut(&mut self) -> &mut Element {
        self.nodes
            .iter_mut()
            .find_map(|n| match n {
                Node::Element(e) => Some(e),
                _ => None,
            })
            .expect("a parsed document has a root element")
    }

    /// True if the document declares a DTD (`<!DOCTYPE`).
    pub fn has_doctype(&self) -> bool {
        self.nodes.iter().any(|n| matches!(n, Node::DocType(_)))
    }
}

fn write_node(n: &Node, out: &mut String) {
    match n {
        Node::Element(e) => e.write(out),
        Node::Text(t) => out.push_str(t),
        Node::Comment(t) => {
            out.push_str("<!--");
            out.push_str(t);
            out.push_str("-->");
        }
        Node::CData(t) => {
            out.push_str("<![CDATA[");
            out.push_str(t);
            out.push_str("]]>");
        }
        Node::Pi(t) => {
            out.push_str("<?");
            out.push_str(t);
            out.push_str("?>");
        }
        Node::DocType(t) => {
            out.push_str("<!DOCTYPE");
            out.push_str(t);
            out.push('>');
        }
    }
}

impl Element {
    /// A new empty element `<name/>` (written `<name></name>` once it has children or text).
    pub fn new(name: &str) -> Element {
        Element {
            raw_start: name.to_string(),
            name_len: name.len(),
            self_closing: false,
            raw_end: None,
            children: Vec::new(),
        }
    }

    /// A new element holding one text value.
    pub fn with_text(name: &str, text: &str) -> Element {
        let mut e = Element::new(name);
        if !text.is_empty() {
            e.children.push(Node::Text(escape(text)));
        }
        e
    }

    pub fn name(&self) -> &str {
        &self.raw_start[..self.name_len]
    }

    /// The attributes, unescaped, in source order. Malformed attributes are skipped.
    pub fn attrs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = &self.raw_start[self.name_len..];
        loop {
            rest = rest.trim_start();
            let Some(eq) = rest.find('=') else { break };
            let key = rest[..eq].trim().to_string();
            let after = rest[eq + 1..].trim_start();
            let Some(q) = after.chars().next() else { break };
            if q != '"' && q != '\'' {
                break;
            }
            let Some(end) = after[1..].find(q) else { break };
            out.push((key, unescape(&after[1..1 + end])));
            rest = &after[1 + end + 1..];
        }
        out
    }

    pub fn attr(&self, key: &str) -> Option<String> {
        self.attrs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Child elements, in order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    pub fn elements_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// The first child element called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.name() == name)
    }

    pub fn child_mut(&mut self, name: &str) -> Option<&mut Element> {
        self.elements_mut().find(|e| e.name() == name)
    }

    /// All child elements called `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements().filter(move |e| e.name() == name)
    }

    /// Follow a `/`-separated path of child names.
    pub fn at(&self, path: &str) -> Option<&Element> {
        let mut cur = self;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = cur.child(part)?;
        }
        Some(cur)
    }

    /// The element's own text (text and CDATA children), unescaped and trimmed.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            match n {
                Node::Text(t) => s.push_str(&unescape(t)),
                Node::CData(t) => s.push_str(t),
                _ => {}
            }
        }
        s.trim().to_string()
    }

    /// Text of child `name`, if that child exists.
    pub fn child_text(&self, name: &str) -> Option<String> {
        self.child(name).map(|e| e.text())
    }

    /// Text of child `name` if it exists and is not empty.
    pub fn child_value(&self, name: &str) -> Option<String> {
        self.child_text(name).filter(|t| !t.is_empty())
    }

    /// Replace this element's content with one text value (children elements are dropped).
    pub fn set_text(&mut self, text: &str) {
        self.children.clear();
        if !text.is_empty() {
            self.children.push(Node::Text(escape(text)));
            self.self_closing = false;
        }
    }

    /// Set the text of child `name`, creating it (at the end, indented like its siblings) if missing.
    pub fn set_child_text(&mut self, name: &str, text: &str) {
        if let Some(c) = self.child_mut(name) {
            c.set_text(text);
        } else {
            self.append(Element::with_text(name, text));
        }
    }

    /// Remove every child element called `name`, with the whitespace that indented it.
    pub fn remove_children(&mut self, name: &str) -> usize {
        self.remove_where(|e| e.name() == name)
    }

    /// Remove child elements matching `pred`, with the whitespace that indented each one.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&Element) -> bool) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.children.len() {
            let hit = matches!(&self.children[i], Node::Element(e) if pred(e));
            if hit {
                self.children.remove(i);
                removed += 1;
                if i > 0 && matches!(&self.children[i - 1], Node::Text(t) if t.trim().is_empty()) {
                    self.children.remove(i - 1);
                    i -= 1;
                }
            } else {
                i += 1;
            }
        }
        removed
    }

    /// Append a child element, copying the indentation used by the existing children.
    pub fn append(&mut self, child: Element) {
        self.self_closing = false;
        let indent = self.children.iter().rev().find_map(|n| match n {
            Node::Text(t) if t.trim().is_empty() && t.contains('\n') => Some(t.clone()),
            _ => None,
        });
        let has_elements = self.elements().next().is_some();
        match (indent, has_elements) {
            (Some(ind), true) => {
                // Children are laid out as: ind child ind child closing-ind.
                // The last whitespace node is the indentation of the closing tag; keep it last.
                let closing = match self.children.last() {
                    Some(Node::Text(t)) if t.trim().is_empty() => self.children.pop(),
                    _ => None,
                };
                let child_ind = self
                    .children
                    .iter()
                    .rev()
                    .find_map(|n| match n {
                        Node::Text(t) if t.trim().is_empty() && t.contains('\n') => Some(t.clone()),
                        _ => None,
                    })
                    .unwrap_or(ind);
                self.children.push(Node::Text(child_ind));
                self.children.push(Node::Element(child));
                if let Some(c) = closing {
                    self.children.push(c);
                }
            }
            _ => self.children.push(Node::Element(child)),
        }
    }

    /// Serialise this element alone.
    pub fn to_string_raw(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }

    fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.raw_start);
        if self.self_closing && self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for c in &self.children {
            write_node(c, out);
        }
        out.push_str("</");
        out.push_str(self.raw_end.as_deref().unwrap_or(self.name()));
        out.push('>');
    }
}

/// Escape text for element content or attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// Unescape the five predefined entities and numeric references; anything else is kept verbatim.
pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut o = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        o.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(semi) = tail.find(';').filter(|&n| n <= 12) else {
            o.push('&');
            rest = &tail[1..];
            continue;
        };
        let ent = &tail[1..semi];
        let rep = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => {
                let num = if let Some(h) = ent.strip_prefix("#x").or(ent.strip_prefix("#X")) {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = ent.strip_prefix('#') {
                    d.parse::<u32>().ok()
                } else {
                    None
                };
                // Only characters XML allows: no C0 controls except tab, LF, CR.
                num.and_then(char::from_u32)
                    .filter(|c| *c >= ' ' || matches!(c, '\t' | '\n' | '\r'))
            }
        };
        match rep {
            Some(c) => {
                o.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                o.push('&');
                rest = &tail[1..];
            }
        }
    }
    o.push_str(rest);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "<?xml version=\"1.0\"?>\n<!-- top -->\n<opnsense>\n  <a x=\"1\" y='t&amp;u'>v &amp; w</a>\n  <b />\n  <d  k=\"1\" ></d>\n  <c ><![CDATA[<raw>]]></c >\n  <unknown><deep k=\"v\"><deeper/></deep></unknown>\n</opnsense>\n";

    #[test]
    fn round_trip_is_byte_exact() {
        let d = Document::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(d.to_bytes()).unwrap(), SAMPLE);
    }

    #[test]
    fn accessors() {
        let d = Document::parse(SAMPLE.as_bytes()).unwrap();
        let r = d.root();
        assert_eq!(r.name(), "opnsense");
        let a = r.child("a").unwrap();
        assert_eq!(a.text(), "v & w");
        assert_eq!(a.attr("y").as_deref(), Some("t&u"));
        assert_eq!(a.attrs().len(), 2);
        assert_eq!(r.child_text("c").as_deref(), Some("<raw>"));
        assert_eq!(
            r.at("unknown/deep").unwrap().attr("k").as_deref(),
            Some("v")
        );
        assert!(r.child_value("b").is_none());
    }

    #[test]
    fn edit_keeps_unknown_and_indents() {
        let mut d = Document::parse(SAMPLE.as_bytes()).unwrap();
        d.root_mut().set_child_text("new", "x<y");
        d.root_mut().child_mut("b").unwrap().set_text("filled");
        let out = String::from_utf8(d.to_bytes()).unwrap();
        assert!(out.contains("<unknown><deep k=\"v\"><deeper/></deep></unknown>"));
        assert!(out.contains("\n  <new>x&lt;y</new>\n</opnsense>"), "{out}");
        assert!(out.contains("<b >filled</b>"), "{out}");
        let again = Document::parse(out.as_bytes()).unwrap();
        assert_eq!(again.root().child_text("new").as_deref(), Some("x<y"));
    }

    #[test]
    fn remove_takes_indentation() {
        let mut d = Document::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(d.root_mut().remove_children("b"), 1);
        let out = String::from_utf8(d.to_bytes()).unwrap();
        assert!(out.contains("</a>\n  <d  k="), "{out}");
    }

    #[test]
    fn malformed_inputs_are_errors() {
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "</a>",
            "<a/><b/>",
            "text",
            "<a><b></a>",
            "<a x=\"1></a>",
            "<a>\u{0}</a",
        ] {
            assert!(Document::parse(bad.as_bytes()).is_err(), "{bad:?} parsed");
        }
        assert!(Document::parse(&[0x3c, 0x61, 0x3e, 0xff, 0x3c, 0x2f, 0x61, 0x3e]).is_err());
    }

    #[test]
    fn byte_order_mark_round_trips() {
        let with_bom = format!("\u{feff}{SAMPLE}");
        let d = Document::parse(with_bom.as_bytes()).unwrap();
        assert_eq!(d.root().name(), "opnsense");
        assert_eq!(d.root().child_text("a").as_deref(), Some("v & w"));
        assert_eq!(d.to_bytes(), with_bom.as_bytes());
        let mut d = d;
        d.root_mut().set_child_text("new", "1");
        assert!(d.to_bytes().starts_with(BOM.as_bytes()));
        // A BOM anywhere but at the very start is text outside the root element.
        assert!(Document::parse(format!("\u{feff}\u{feff}{SAMPLE}").as_bytes()).is_err());
        assert!(Document::parse("<a>\u{feff}</a>\u{feff}".as_bytes()).is_err());
    }

    #[test]
    fn depth_is_limited() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(Document::parse(deep.as_bytes()).is_err());
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(Document::parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn unescape_cases() {
        assert_eq!(unescape("a&lt;b&#65;&#x42;&bogus;&"), "a<bAB&bogus;&");
        assert_eq!(escape("<&>\"'"), "&lt;&amp;&gt;&quot;&apos;");
    }
}
