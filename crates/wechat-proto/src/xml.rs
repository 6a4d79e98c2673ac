//! The one hardened XML reader and the one XML writer of the crate.
//!
//! WeChat speaks a tiny dialect of XML: a `<xml>` root holding flat (sometimes nested)
//! elements whose text may or may not be wrapped in CDATA. Every byte that reaches this
//! crate from the network goes through the reader here (the `reader` submodule), and every
//! byte of XML the crate produces goes through [`XmlWriter`]. Keeping both in one place keeps the security
//! rules in one place:
//!
//! - A DOCTYPE or entity declaration anywhere in the input (outside CDATA and comments)
//!   makes the whole document fail with [`ParseError::Doctype`], whatever else is wrong
//!   with it. No DTD is processed and no entity other than the five predefined ones and
//!   character references is expanded.
//! - The size of the input and the depth of the element tree are bounded ([`Limits`]).
//! - Text is preserved exactly: CDATA, plain text and escaped text are equivalent, and
//!   nothing is trimmed.
//! - The writer wraps every string in CDATA, splits a `]]>` inside it, and drops the
//!   characters XML 1.0 forbids instead of emitting a document no parser accepts.
//!
//! This module must not know about message kinds: it reads and writes elements, and the
//! typed models in [`crate::inbound`], [`crate::reply`] and [`crate::envelope`] are built
//! on top of it.

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;

use crate::ErrorCode;

mod reader;

use reader::find_bytes;
pub(crate) use reader::Document;

/// Bounds applied to every document before and while it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest accepted input, in bytes. Real messages are a few kilobytes.
    pub max_bytes: usize,
    /// The deepest accepted element nesting, the root `<xml>` counting as 1. The deepest
    /// known WeChat message (`MASSSENDJOBFINISH`) nests 5 levels.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1024 * 1024,
            max_depth: 16,
        }
    }
}

/// Why an XML document was rejected.
///
/// Every variant maps to the official code -40002 (`ParseXml_Error`), see [`ParseError::code`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// A DOCTYPE or entity declaration was found; such documents are never parsed.
    Doctype,
    /// The input is larger than [`Limits::max_bytes`].
    TooLarge {
        /// The length of the input in bytes.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Elements are nested deeper than [`Limits::max_depth`].
    TooDeep {
        /// The configured maximum depth.
        max: usize,
    },
    /// The input is not well-formed XML.
    Malformed {
        /// What was wrong, with the byte position where it was found.
        reason: String,
    },
    /// A name or a text is not valid UTF-8.
    NotUtf8,
    /// A required element is absent.
    MissingField {
        /// The element name, e.g. `"CreateTime"`.
        field: &'static str,
    },
    /// A numeric element does not hold a number of the expected type.
    InvalidNumber {
        /// The element name, e.g. `"CreateTime"`.
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// The root element is not `<xml>`.
    WrongRoot,
    /// A reply carries a `MsgType` that is not a passive reply type.
    UnknownMsgType {
        /// The `MsgType` found.
        msg_type: String,
    },
}

impl ParseError {
    /// The official error code: always -40002 (`ParseXml_Error`).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::ParseXml
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Doctype => f.write_str("DOCTYPE or entity declarations are not accepted"),
            ParseError::TooLarge { len, max } => {
                write!(f, "XML document of {len} bytes exceeds the limit of {max}")
            }
            ParseError::TooDeep { max } => write!(f, "XML elements nested deeper than {max}"),
            ParseError::Malformed { reason } => write!(f, "malformed XML: {reason}"),
            ParseError::NotUtf8 => f.write_str("XML is not valid UTF-8"),
            ParseError::MissingField { field } => write!(f, "missing element <{field}>"),
            ParseError::InvalidNumber { field, value } => {
                write!(f, "element <{field}> is not a valid number: {value:?}")
            }
            ParseError::WrongRoot => f.write_str("the root element is not <xml>"),
            ParseError::UnknownMsgType { msg_type } => {
                write!(f, "unknown reply MsgType {msg_type:?}")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// One raw XML element, as kept for message kinds and events this crate does not model.
///
/// `text` is the character data directly inside the element, byte for byte (CDATA and
/// escapes resolved). For an element that has children, whitespace-only text is layout
/// and is dropped, so a pretty-printed document and a compact one give the same value;
/// text directly inside the root `<xml>` is always dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Element {
    /// The element name, e.g. `"ScanCodeInfo"`.
    pub name: String,
    /// The text directly inside the element.
    #[cfg_attr(feature = "serde", serde(default))]
    pub text: String,
    /// The child elements, in document order.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub children: Vec<Element>,
}

impl Element {
    /// Builds a leaf element holding `text`.
    pub fn leaf(name: impl Into<String>, text: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            text: text.into(),
            children: Vec::new(),
        }
    }

    /// Parses a whole `<xml>` document into its root element, with default [`Limits`].
    pub fn parse(xml: &[u8]) -> Result<Element, ParseError> {
        Element::parse_with_limits(xml, Limits::default())
    }

    /// Parses a whole `<xml>` document into its root element.
    pub fn parse_with_limits(xml: &[u8], limits: Limits) -> Result<Element, ParseError> {
        let document = Document::parse(xml, limits)?;
        Ok(document.to_element(Document::ROOT))
    }

    /// The first child called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The first element reached by following `path` (child names) from this element.
    pub fn find(&self, path: &[&str]) -> Option<&Element> {
        path.iter()
            .try_fold(self, |element, name| element.child(name))
    }
}

/// Removes the characters XML 1.0 does not allow in a document.
///
/// Allowed are TAB, LF, CR, U+0020–U+D7FF, U+E000–U+FFFD and U+10000–U+10FFFF (surrogates
/// cannot occur in a Rust string). Borrows when nothing has to be removed, which is the
/// common case.
pub fn sanitize_xml_text(text: &str) -> Cow<'_, str> {
    if is_clean_xml_text(text.as_bytes()) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|&c| is_xml_char(c)).collect())
    }
}

/// Whether UTF-8 `bytes` hold only characters XML allows, checked on bytes: the
/// forbidden characters are the C0 controls other than TAB, LF and CR (single bytes) and
/// U+FFFE and U+FFFF (`EF BF BE` and `EF BF BF`).
fn is_clean_xml_text(bytes: &[u8]) -> bool {
    let no_controls = bytes
        .iter()
        .all(|&b| b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\r'));
    no_controls
        && memchr::memchr_iter(0xEF, bytes)
            .all(|at| !matches!(bytes.get(at + 1..at + 3), Some([0xBF, 0xBE | 0xBF])))
}

/// Whether XML 1.0 allows `c` in a document.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Whether `name` is usable as an element name.
///
/// This is the ASCII part of the XML `Name` production; every non-ASCII character is
/// accepted, which is looser than the specification but can never produce markup. The
/// reader accepts exactly the same names, so whatever it reads can be written back.
pub fn is_valid_element_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.first().is_some_and(|&b| is_name_start_byte(b)) && bytes.iter().all(|&b| is_name_byte(b))
}

/// Whether `b` may appear in an element name: an ASCII name character, or any byte of a
/// non-ASCII character.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'.') || b >= 0x80
}

/// Whether `b` may start an element name.
fn is_name_start_byte(b: u8) -> bool {
    b.is_ascii_alphabetic() || matches!(b, b'_' | b':') || b >= 0x80
}

/// The one XML writer: appends elements to a `String`.
///
/// Strings are always written as CDATA sections (split around `]]>`), numbers bare, and
/// characters XML forbids are dropped. Element names are `&'static str`: they are the
/// crate's literals, never data. The one way to write names that come from data, the
/// raw [`Element`]s of unknown messages, is [`XmlWriter::element`], which checks them.
#[derive(Debug)]
pub struct XmlWriter<'a> {
    out: &'a mut String,
}

impl<'a> XmlWriter<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut String) -> Self {
        XmlWriter { out }
    }

    /// Writes `<name>`.
    pub fn start(&mut self, name: &'static str) {
        self.open_tag(name);
    }

    /// Writes `</name>`.
    pub fn end(&mut self, name: &'static str) {
        self.close_tag(name);
    }

    /// Writes `<name>` for a name already known to be valid.
    fn open_tag(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
    }

    /// Writes `</name>` for a name already known to be valid.
    fn close_tag(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    /// Writes raw markup, such as the newline between elements of the encrypted reply.
    ///
    /// Only for literals of this crate: the text is not escaped.
    pub(crate) fn raw(&mut self, markup: &str) {
        self.out.push_str(markup);
    }

    /// Writes `text` as one CDATA section, or several if it contains `]]>`.
    pub fn cdata(&mut self, text: &str) {
        let text = sanitize_xml_text(text);
        self.out.push_str("<![CDATA[");
        let mut rest: &str = &text;
        // Every `]]>` would close the section early, so each one is cut between `]]` and
        // `>`: the first section ends with `]]`, the next starts with `>`.
        while let Some(position) = find_bytes(rest.as_bytes(), b"]]>") {
            let (head, tail) = rest.split_at(position + 2);
            self.out.push_str(head);
            self.out.push_str("]]><![CDATA[");
            rest = tail;
        }
        self.out.push_str(rest);
        self.out.push_str("]]>");
    }

    /// Writes `text` escaped (`&`, `<`, `>`), for values written without CDATA.
    pub fn escaped_text(&mut self, text: &str) {
        let text = sanitize_xml_text(text);
        for c in text.chars() {
            match c {
                '&' => self.out.push_str("&amp;"),
                '<' => self.out.push_str("&lt;"),
                '>' => self.out.push_str("&gt;"),
                _ => self.out.push(c),
            }
        }
    }

    /// Writes `<name><![CDATA[text]]></name>`.
    pub fn cdata_element(&mut self, name: &'static str, text: &str) {
        self.start(name);
        self.cdata(text);
        self.end(name);
    }

    /// Writes `<name>text</name>` with `text` escaped rather than in CDATA.
    pub fn escaped_element(&mut self, name: &'static str, text: &str) {
        self.start(name);
        self.escaped_text(text);
        self.end(name);
    }

    /// Writes `<name>value</name>` for a signed integer.
    pub fn int_element(&mut self, name: &'static str, value: i64) {
        self.start(name);
        // Writing into a `String` cannot fail.
        let _ = write!(self.out, "{value}");
        self.end(name);
    }

    /// Writes `<name>value</name>` for an unsigned integer.
    pub fn uint_element(&mut self, name: &'static str, value: u64) {
        self.start(name);
        let _ = write!(self.out, "{value}");
        self.end(name);
    }

    /// Writes `<name>value</name>` for a float, in the shortest form that parses back to
    /// the same value (`20` for 20.0).
    pub fn float_element(&mut self, name: &'static str, value: f64) {
        self.start(name);
        let _ = write!(self.out, "{value}");
        self.end(name);
    }

    /// Writes `<name><![CDATA[value]]></name>` for a float, the way `SendLocationInfo`
    /// carries its numbers.
    pub fn float_cdata_element(&mut self, name: &'static str, value: f64) {
        self.start(name);
        let _ = write!(self.out, "<![CDATA[{value}]]>");
        self.end(name);
    }

    /// Writes a raw element and its children.
    ///
    /// An element whose name is not a valid XML name (see [`is_valid_element_name`]) is
    /// skipped with its children: it cannot be written without producing broken or
    /// injected markup, and the reader never produces one.
    pub fn element(&mut self, element: &Element) {
        if !is_valid_element_name(&element.name) {
            return;
        }
        self.open_tag(&element.name);
        if !element.text.is_empty() || element.children.is_empty() {
            self.cdata(&element.text);
        }
        for child in &element.children {
            self.element(child);
        }
        self.close_tag(&element.name);
    }
}

/// Parses a number field, ignoring surrounding whitespace: numbers are sometimes wrapped
/// in CDATA and nothing guarantees the sender did not pad them.
pub(crate) fn parse_number<T: std::str::FromStr>(text: &str) -> Option<T> {
    text.trim_matches(|c: char| c.is_ascii_whitespace())
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_text(xml: &str, expected: &str) {
        let root = Element::parse(xml.as_bytes()).unwrap();
        assert_eq!(root.child("A").unwrap().text, expected, "{xml}");
    }

    #[test]
    fn cdata_terminator_is_split() {
        let mut out = String::new();
        XmlWriter::new(&mut out).cdata_element("A", "x]]>y]]>");
        assert_eq!(out, "<A><![CDATA[x]]]]><![CDATA[>y]]]]><![CDATA[>]]></A>");
        check_text(&format!("<xml>{out}</xml>"), "x]]>y]]>");
    }

    #[test]
    fn forbidden_characters_are_dropped() {
        assert_eq!(
            sanitize_xml_text("a\u{0}b\u{8}\u{B}\u{C}\u{1F}c\u{FFFE}\u{FFFF}"),
            "abc"
        );
        assert_eq!(
            sanitize_xml_text("\t\n\r ok 😀\u{FFFD}"),
            "\t\n\r ok 😀\u{FFFD}"
        );
        assert!(matches!(sanitize_xml_text("plain"), Cow::Borrowed(_)));
        let mut out = String::new();
        XmlWriter::new(&mut out).cdata_element("A", "x\u{1}y");
        assert_eq!(out, "<A><![CDATA[xy]]></A>");
        out.clear();
        XmlWriter::new(&mut out).escaped_element("A", "<&\u{2}>");
        assert_eq!(out, "<A>&lt;&amp;&gt;</A>");
    }

    #[test]
    fn invalid_element_names_are_not_written() {
        let mut out = String::new();
        let element = Element {
            name: "Ok".into(),
            text: String::new(),
            children: vec![
                Element::leaf("a><b", "x"),
                Element::leaf("1a", "x"),
                Element::leaf("b", "y"),
            ],
        };
        XmlWriter::new(&mut out).element(&element);
        assert_eq!(out, "<Ok><b><![CDATA[y]]></b></Ok>");
    }
}
