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
    sanitize_scanned(text, scan(text.as_bytes()))
}

/// [`sanitize_xml_text`] for a text whose [`scan`] is known.
fn sanitize_scanned(text: &str, flags: u8) -> Cow<'_, str> {
    if is_clean_scanned(text.as_bytes(), flags) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|&c| is_xml_char(c)).collect())
    }
}

/// [`scan`] flag: a C0 control other than TAB, LF and CR, which XML forbids.
const FORBIDDEN_CONTROL: u8 = 1;
/// [`scan`] flag: a `0xEF` byte, the lead byte of U+FFFE and U+FFFF (and of many allowed
/// characters, such as full-width punctuation).
const LEAD_EF: u8 = 2;
/// [`scan`] flag: a `]`, without which a text cannot contain `]]>`.
const BRACKET: u8 = 4;

/// One pass over `bytes`, reporting which of [`FORBIDDEN_CONTROL`], [`LEAD_EF`] and
/// [`BRACKET`] occur.
///
/// This runs over every string the writer emits, so it avoids a byte-at-a-time loop:
/// short texts (names, ids, a chat message) are read eight bytes at a time as words,
/// long ones (an `Encrypt`) get a chunked check the compiler vectorises and `memchr`.
fn scan(bytes: &[u8]) -> u8 {
    if bytes.len() >= LONG_TEXT {
        return scan_long(bytes);
    }
    let mut words = bytes.chunks_exact(8);
    let mut flags = 0u8;
    for chunk in &mut words {
        flags |= word_flags(load_word(chunk));
    }
    let tail = words.remainder();
    if tail.is_empty() {
        return flags;
    }
    let last = match bytes.len().checked_sub(8) {
        // The last eight bytes, overlapping words already read: flags only accumulate.
        Some(start) => load_word(bytes.get(start..).unwrap_or_default()),
        // A text under eight bytes, padded with spaces (which raise no flag). Built in a
        // register: a copy into a stack word and a reload would stall.
        None => tail.iter().rev().fold(ONES * u64::from(b' '), |word, &b| {
            (word << 8) | u64::from(b)
        }),
    };
    flags | word_flags(last)
}

/// Eight bytes as a little-endian word; `chunk` is always exactly eight bytes long.
#[inline(always)]
fn load_word(chunk: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    if let Some(bytes) = chunk.get(..8) {
        word.copy_from_slice(bytes);
    }
    u64::from_le_bytes(word)
}

/// From this length on, [`scan`] uses vector code rather than words.
const LONG_TEXT: usize = 64;

/// [`scan`] of a long text: the control characters in branch-free 32-byte chunks, which
/// the compiler vectorises, the two single bytes with `memchr`.
fn scan_long(bytes: &[u8]) -> u8 {
    let controls = bytes
        .chunks(32)
        .any(|chunk| !chunk.iter().fold(true, |ok, &b| ok & is_allowed_byte(b)));
    u8::from(controls)
        | (u8::from(memchr::memchr(0xEF, bytes).is_some()) << 1)
        | (u8::from(memchr::memchr(b']', bytes).is_some()) << 2)
}

/// Whether byte `b` of UTF-8 text is not a C0 control XML forbids: every byte from
/// 0x20 up (non-ASCII bytes included), TAB, LF and CR. Written without branches.
#[inline(always)]
fn is_allowed_byte(b: u8) -> bool {
    (b >= 0x20) | (b == b'\t') | (b == b'\n') | (b == b'\r')
}

/// `0x01` in every byte of a word.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
/// `0x80` in every byte of a word.
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether a byte of `word` is below `n` (at most 0x80). Exact as a yes/no answer: a
/// borrow can only start at a byte that is below `n`.
#[inline(always)]
fn has_byte_below(word: u64, n: u8) -> bool {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS != 0
}

/// The [`scan`] flags of eight bytes.
#[inline(always)]
fn word_flags(word: u64) -> u8 {
    let mut flags = 0u8;
    // Bytes below 0x20 are rare (layout newlines); only then are the bytes looked at.
    if has_byte_below(word, 0x20) {
        for b in word.to_le_bytes() {
            flags |= u8::from(!is_allowed_byte(b));
        }
    }
    let lead_ef = has_byte_below(word ^ (ONES * 0xEF), 1);
    let bracket = has_byte_below(word ^ (ONES * u64::from(b']')), 1);
    flags | (u8::from(lead_ef) << 1) | (u8::from(bracket) << 2)
}

/// Whether UTF-8 `bytes`, whose [`scan`] gave `flags`, hold only characters XML allows,
/// checked on bytes: the forbidden characters are the C0 controls other than TAB, LF and
/// CR (single bytes) and U+FFFE and U+FFFF (`EF BF BE` and `EF BF BF`), searched for only
/// when a `0xEF` byte was seen.
fn is_clean_scanned(bytes: &[u8], flags: u8) -> bool {
    flags & FORBIDDEN_CONTROL == 0
        && (flags & LEAD_EF == 0
            || memchr::memchr_iter(0xEF, bytes)
                .all(|at| !matches!(bytes.get(at + 1..at + 3), Some([0xBF, 0xBE | 0xBF]))))
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

/// [`NAME_BYTES`] entry: the byte may appear in an element name.
const NAME: u8 = 1;
/// [`NAME_BYTES`] entry: the byte may start an element name.
const NAME_START: u8 = 2;

/// The class of every byte, so that a name is scanned with one load per byte.
static NAME_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        let start = byte.is_ascii_alphabetic() || byte == b'_' || byte == b':' || byte >= 0x80;
        let rest = start || byte.is_ascii_digit() || byte == b'-' || byte == b'.';
        table[b] = (if start { NAME_START } else { 0 }) | (if rest { NAME } else { 0 });
        b += 1;
    }
    table
};

/// Whether `b` may appear in an element name: an ASCII name character, or any byte of a
/// non-ASCII character.
#[inline]
fn is_name_byte(b: u8) -> bool {
    NAME_BYTES[usize::from(b)] & NAME != 0
}

/// Whether `b` may start an element name.
#[inline]
fn is_name_start_byte(b: u8) -> bool {
    NAME_BYTES[usize::from(b)] & NAME_START != 0
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
        let flags = scan(text.as_bytes());
        if flags & (FORBIDDEN_CONTROL | BRACKET) == 0 && is_clean_scanned(text.as_bytes(), flags) {
            // The common case, decided by the one scan: nothing to drop or split.
            self.out.reserve(text.len() + 12);
            self.out.push_str("<![CDATA[");
            self.out.push_str(text);
            self.out.push_str("]]>");
            return;
        }
        let text = sanitize_scanned(text, flags);
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
        let mut rest: &str = &text;
        // Runs without a special character are copied whole.
        while let Some(at) = rest.bytes().position(|b| matches!(b, b'&' | b'<' | b'>')) {
            let (run, tail) = rest.split_at(at);
            self.out.push_str(run);
            self.out.push_str(match tail.as_bytes().first() {
                Some(b'&') => "&amp;",
                Some(b'<') => "&lt;",
                _ => "&gt;",
            });
            rest = tail.get(1..).unwrap_or_default();
        }
        self.out.push_str(rest);
    }

    /// Writes `<name><![CDATA[text]]></name>`.
    pub fn cdata_element(&mut self, name: &'static str, text: &str) {
        self.start(name);
        self.cdata(text);
        self.end(name);
    }

    /// Writes `<name><![CDATA[text]]></name>` for a `text` that is one of the crate's own
    /// literals (a `MsgType`), which needs no check: it has no forbidden character and no
    /// `]]>`.
    pub(crate) fn literal_cdata_element(&mut self, name: &'static str, text: &'static str) {
        debug_assert_eq!(scan(text.as_bytes()) & (FORBIDDEN_CONTROL | BRACKET), 0);
        self.start(name);
        self.out.push_str("<![CDATA[");
        self.out.push_str(text);
        self.out.push_str("]]>");
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
        if value < 0 {
            self.out.push('-');
        }
        push_decimal(self.out, value.unsigned_abs());
        self.end(name);
    }

    /// Writes `<name>value</name>` for an unsigned integer.
    pub fn uint_element(&mut self, name: &'static str, value: u64) {
        self.start(name);
        push_decimal(self.out, value);
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

/// Appends `value` in decimal: what `write!(out, "{value}")` does, without the
/// formatting machinery (every reply carries a `CreateTime`).
fn push_decimal(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // ASCII digits: this never fails.
    if let Ok(text) = std::str::from_utf8(digits.get(start..).unwrap_or_default()) {
        out.push_str(text);
    }
}

/// Parses a number field, ignoring surrounding whitespace: numbers are sometimes wrapped
/// in CDATA and nothing guarantees the sender did not pad them.
///
/// Every message carries a `CreateTime` and most a `MsgId`: plain runs of at most 19
/// digits (which always fit a `u64`) are read directly; anything else, and any value the
/// target type does not take that way, goes through its `FromStr`, so the result is
/// always exactly `FromStr`'s.
pub(crate) fn parse_number<T: Number>(text: &str) -> Option<T> {
    let text = text.trim_ascii();
    let digits = text.as_bytes();
    if (1..=19).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) {
        let value = digits
            .iter()
            .fold(0u64, |value, &digit| value * 10 + u64::from(digit - b'0'));
        if let Some(number) = T::from_decimal(value) {
            return Some(number);
        }
    }
    text.parse().ok()
}

/// A number type of the models, which [`parse_number`] can build from plain digits.
pub(crate) trait Number: std::str::FromStr {
    /// `value`, if this type represents it exactly; `None` sends [`parse_number`] to the
    /// type's `FromStr`.
    fn from_decimal(value: u64) -> Option<Self>;
}

impl Number for u64 {
    fn from_decimal(value: u64) -> Option<Self> {
        Some(value)
    }
}

impl Number for i64 {
    fn from_decimal(value: u64) -> Option<Self> {
        i64::try_from(value).ok()
    }
}

impl Number for u32 {
    fn from_decimal(value: u64) -> Option<Self> {
        u32::try_from(value).ok()
    }
}

impl Number for usize {
    fn from_decimal(value: u64) -> Option<Self> {
        usize::try_from(value).ok()
    }
}

impl Number for f64 {
    fn from_decimal(_: u64) -> Option<Self> {
        // Floats always take `FromStr`, whose rounding is the reference.
        None
    }
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

    /// The flags [`scan`] must report, one character at a time.
    fn reference_flags(text: &str) -> u8 {
        text.bytes().fold(0, |flags, b| {
            let control = b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r');
            flags
                | (u8::from(control) * FORBIDDEN_CONTROL)
                | (u8::from(b == 0xEF) * LEAD_EF)
                | (u8::from(b == b']') * BRACKET)
        })
    }

    #[test]
    fn scan_finds_each_special_byte_at_every_position_and_length() {
        let specials = [
            "\u{0}", "\u{1F}", "\u{B}", "]", "\u{FFFE}", "\u{FFFF}", "！", "\n", "\t", "\r",
        ];
        for len in 0..140 {
            let plain = "a".repeat(len);
            assert_eq!(scan(plain.as_bytes()), 0, "{len}");
            assert!(is_clean_scanned(plain.as_bytes(), 0));
            for special in specials {
                for at in [0, len / 3, len / 2, len.saturating_sub(1), len] {
                    let text = format!(
                        "{}{special}{}",
                        &plain[..at.min(len)],
                        &plain[at.min(len)..]
                    );
                    let flags = scan(text.as_bytes());
                    assert_eq!(flags, reference_flags(&text), "{text:?}");
                    let clean = text.chars().all(is_xml_char);
                    assert_eq!(is_clean_scanned(text.as_bytes(), flags), clean, "{text:?}");
                }
            }
        }
    }

    #[test]
    fn numbers_parse_exactly_as_from_str() {
        fn check<T: Number + PartialEq + std::fmt::Debug>(text: &str) {
            let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
            assert_eq!(
                parse_number::<T>(text),
                trimmed.parse::<T>().ok(),
                "{text:?}"
            );
        }
        let texts = [
            "",
            " ",
            "0",
            "00",
            "7",
            " 42 ",
            "\t1409735668\n",
            "+5",
            "-5",
            "-0",
            "1e3",
            "2.5",
            "6054768590064713728",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "4294967295",
            "4294967296",
            "9223372036854775807",
            "9223372036854775808",
            "0000000000000000001",
            "00000000000000000001",
            "1 2",
            "abc",
            "\u{3000}1",
            "１２",
        ];
        for text in texts {
            check::<u64>(text);
            check::<i64>(text);
            check::<u32>(text);
            check::<usize>(text);
            let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
            let expected = trimmed.parse::<f64>().ok();
            let parsed = parse_number::<f64>(text);
            assert_eq!(
                parsed.map(f64::to_bits),
                expected.map(f64::to_bits),
                "{text:?}"
            );
        }
    }

    #[test]
    fn numbers_are_written_in_full() {
        let mut out = String::new();
        let mut w = XmlWriter::new(&mut out);
        for value in [0, 7, -7, 10, 1_409_735_670, i64::MIN, i64::MAX] {
            w.int_element("N", value);
        }
        w.uint_element("U", u64::MAX);
        w.uint_element("U", 0);
        assert_eq!(
            out,
            format!(
                "<N>0</N><N>7</N><N>-7</N><N>10</N><N>1409735670</N><N>{}</N><N>{}</N><U>{}</U><U>0</U>",
                i64::MIN,
                i64::MAX,
                u64::MAX
            )
        );
    }

    #[test]
    fn escaped_text_escapes_every_special_character() {
        let mut out = String::new();
        XmlWriter::new(&mut out).escaped_text("&<>a&&b<<c>>d\u{1}é&");
        assert_eq!(out, "&amp;&lt;&gt;a&amp;&amp;b&lt;&lt;c&gt;&gt;dé&amp;");
    }

    #[test]
    fn long_and_odd_element_names_read_back() {
        for name in [
            "A",
            "Ab",
            "ScanCodeInfo",
            "SixteenBytesName",
            "SeventeenBytesNam",
            "ns:a.b-c_d",
            "微信名字很长很长很长",
        ] {
            let xml = format!("<xml><{name}>x</{name}><{name} a='1'/></xml>");
            let root = Element::parse(xml.as_bytes()).unwrap();
            assert_eq!(root.children.len(), 2, "{name}");
            assert_eq!(root.child(name).unwrap().text, "x");
            // An end tag that differs anywhere, or only in length, is an error.
            for at in 0..name.len() {
                if !name.is_char_boundary(at) || !name.is_char_boundary(at + 1) {
                    continue;
                }
                let mut wrong = name.to_owned();
                wrong.replace_range(at..at + 1, "Z");
                if wrong == name {
                    continue;
                }
                let xml = format!("<xml><{name}>x</{wrong}></xml>");
                assert!(Element::parse(xml.as_bytes()).is_err(), "{xml}");
            }
            let mut shorter = name.chars();
            shorter.next_back();
            for wrong in [format!("{name}Z"), shorter.as_str().to_owned()] {
                let xml = format!("<xml><{name}>x</{wrong}></xml>");
                assert!(Element::parse(xml.as_bytes()).is_err(), "{xml}");
            }
        }
        // End tags at the very end of short inputs take the slice comparison.
        assert!(Element::parse(b"<xml></xml>").is_ok());
        assert!(Element::parse(b"<xml></xmk>").is_err());
        assert!(Element::parse(b"<xml><a></a></xml>").is_ok());
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
