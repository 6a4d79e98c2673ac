//! The hardened reader: WeChat's XML dialect into a flat, borrowed element tree.
//!
//! This is a small tokenizer written for the job rather than a general XML library,
//! because it runs on every request and the dialect is tiny: elements (attributes are
//! skipped), text with the five predefined entities and character references, CDATA,
//! comments and processing instructions. Everything else is an error, and in particular
//! there is no DTD support at all: the tokenizer rejects a DOCTYPE or ENTITY declaration
//! where it meets one, and a document rejected for any other reason is scanned for
//! declarations first, so a declaration anywhere is reported as [`ParseError::Doctype`].
//! A general parser (quick-xml 0.37) spent about twice as many instructions on a text
//! message; it is kept as a dev-dependency to check this reader against
//! (`tests/proptest_xml.rs`).
//!
//! The input is validated as UTF-8 once, so every name and text is a `&str` slice of it
//! and the common message parses with one allocation (the element vector).

use std::borrow::Cow;

use super::{is_name_byte, is_name_start_byte, Element, Limits, ParseError};

/// A parsed document: the elements in document order, borrowing from the input.
///
/// This is deliberately not a pointer tree: one vector holds every element, each knowing
/// its parent and where its subtree ends, so parsing a message costs one allocation plus
/// one for any text that had to be unescaped or joined.
#[derive(Debug)]
pub(crate) struct Document<'a> {
    nodes: Vec<Node<'a>>,
}

/// The largest input the reader takes, whatever the [`Limits`]: positions are `u32`.
const MAX_INPUT: usize = u32::MAX as usize;

/// One element of a [`Document`].
#[derive(Debug)]
struct Node<'a> {
    /// The element name, borrowed from the input.
    name: &'a str,
    /// Where the name starts in the input (after any byte-order mark), so that an end tag
    /// can be compared with it word by word. A `u32` (inputs are capped below 4 GiB) so
    /// that a node, `used` included, stays 64 bytes: the usual message's 16 nodes then
    /// fit one allocation the allocator serves from its fast per-thread cache.
    name_at: u32,
    /// The text directly inside the element, borrowed unless it had to be built.
    text: Cow<'a, str>,
    /// The index of the parent element; the root is its own parent.
    parent: usize,
    /// One past the index of the last element of this subtree.
    end: usize,
    /// Whether a model took this element (its text, its number, or it as a container), so
    /// that what no model took can be kept as raw extra elements.
    used: bool,
}

impl<'a> Document<'a> {
    /// The index of the root element.
    pub(crate) const ROOT: usize = 0;

    /// Parses `input`, which must be a single `<xml>` element.
    pub(crate) fn parse(input: &'a [u8], limits: Limits) -> Result<Document<'a>, ParseError> {
        // The size check is O(1) and bounds the work of everything after it, including
        // the declaration scan.
        if input.len() > limits.max_bytes.min(MAX_INPUT) {
            return Err(ParseError::TooLarge {
                len: input.len(),
                max: limits.max_bytes.min(MAX_INPUT),
            });
        }
        // The tokenizer rejects a declaration as soon as it reaches one. A document that
        // fails for another reason first is scanned for declarations before the error is
        // reported, so a declaration anywhere is always reported as such: the same result
        // as scanning first, without making every valid message pay for the scan.
        Document::tokenize(input, limits).map_err(|error| match error {
            ParseError::Doctype => error,
            other => reject_declarations(input).err().unwrap_or(other),
        })
    }

    /// Parses `input` without the declaration scan.
    fn tokenize(input: &'a [u8], limits: Limits) -> Result<Document<'a>, ParseError> {
        let text = std::str::from_utf8(input).map_err(|_| ParseError::NotUtf8)?;
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        let offset = input.len() - text.len();

        let mut builder = TreeBuilder {
            nodes: Vec::with_capacity(16),
            current: None,
            depth: 0,
            root_done: false,
            max_depth: limits.max_depth,
        };
        Tokenizer {
            input: text,
            position: 0,
            offset,
        }
        .run(&mut builder)?;

        let TreeBuilder { nodes, current, .. } = builder;
        if let Some(index) = current {
            let name = nodes.get(index).map_or("", |node| node.name);
            return Err(ParseError::Malformed {
                reason: format!("element <{name}> is not closed at the end of the input"),
            });
        }
        match nodes.first() {
            None => Err(ParseError::Malformed {
                reason: "no root element".to_owned(),
            }),
            Some(root) if root.name != "xml" => Err(ParseError::WrongRoot),
            Some(_) => Ok(Document { nodes }),
        }
    }

    /// The name of element `index`.
    pub(crate) fn name(&self, index: usize) -> &'a str {
        self.nodes.get(index).map_or("", |node| node.name)
    }

    /// The text of element `index`.
    pub(crate) fn text(&self, index: usize) -> &str {
        self.nodes.get(index).map_or("", |node| &node.text)
    }

    /// Moves the text of element `index` out as an owned string.
    ///
    /// The text is left empty: each field is taken once while building a model.
    pub(crate) fn take_text(&mut self, index: usize) -> String {
        self.nodes
            .get_mut(index)
            .map(|node| {
                node.used = true;
                std::mem::take(&mut node.text).into_owned()
            })
            .unwrap_or_default()
    }

    /// Records that a model took element `index` (a number, or a container).
    pub(crate) fn mark_used(&mut self, index: usize) {
        if let Some(node) = self.nodes.get_mut(index) {
            node.used = true;
        }
    }

    /// Whether a model took element `index`: [`Document::take_text`] or
    /// [`Document::mark_used`] was called for it.
    pub(crate) fn is_used(&self, index: usize) -> bool {
        self.nodes.get(index).is_some_and(|node| node.used)
    }

    /// Whether element `index` has child elements.
    pub(crate) fn has_children(&self, index: usize) -> bool {
        self.nodes
            .get(index)
            .is_some_and(|node| node.end > index + 1)
    }

    /// Moves the text of element `index` out, borrowed from the input when it was not
    /// unescaped or joined: what [`Document::take_text`] does without the copy.
    pub(crate) fn take_text_cow(&mut self, index: usize) -> Cow<'a, str> {
        self.nodes
            .get_mut(index)
            .map(|node| {
                node.used = true;
                std::mem::take(&mut node.text)
            })
            .unwrap_or_default()
    }

    /// The children of element `index`, in document order.
    pub(crate) fn children(&self, index: usize) -> Children<'_, 'a> {
        let end = self.nodes.get(index).map_or(index, |node| node.end);
        Children {
            document: self,
            next: index + 1,
            end,
        }
    }

    /// The first child of element `index` called `name`.
    pub(crate) fn child(&self, index: usize, name: &str) -> Option<usize> {
        self.children(index).find(|&child| self.name(child) == name)
    }

    /// A copy of element `index` and its subtree as a raw [`Element`].
    pub(crate) fn to_element(&self, index: usize) -> Element {
        Element {
            name: self.name(index).to_owned(),
            text: self.text(index).to_owned(),
            children: self
                .children(index)
                .map(|child| self.to_element(child))
                .collect(),
        }
    }
}

/// Iterator over the children of one element of a [`Document`].
#[derive(Debug)]
pub(crate) struct Children<'d, 'a> {
    document: &'d Document<'a>,
    next: usize,
    end: usize,
}

impl Iterator for Children<'_, '_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.next >= self.end {
            return None;
        }
        let child = self.next;
        // The next sibling starts where this child's subtree ends; a malformed `end` can
        // only stop the iteration, never loop, because it is always greater than `child`.
        self.next = self
            .document
            .nodes
            .get(child)
            .map_or(self.end, |node| node.end.max(child + 1));
        Some(child)
    }
}

/// The tokenizer: walks the input once, feeding a [`TreeBuilder`].
#[derive(Debug)]
struct Tokenizer<'a> {
    /// The input after any byte-order mark.
    input: &'a str,
    /// The next byte to read.
    position: usize,
    /// The length of the skipped byte-order mark, so errors report input positions.
    offset: usize,
}

impl<'a> Tokenizer<'a> {
    /// Reads everything.
    fn run(&mut self, builder: &mut TreeBuilder<'a>) -> Result<(), ParseError> {
        let bytes = self.input.as_bytes();
        loop {
            // Markup usually follows markup directly (`<A><![CDATA[…]]></A>`): only real
            // text needs a search.
            let markup = if bytes.get(self.position) == Some(&b'<') {
                Some(self.position)
            } else {
                let rest = bytes.get(self.position..).unwrap_or_default();
                find_byte(b'<', rest).map(|found| self.position + found)
            };
            let text_end = markup.unwrap_or(bytes.len());
            if text_end > self.position {
                let text = self.slice(self.position, text_end)?;
                self.text(text, builder)?;
            }
            let Some(start) = markup else {
                return Ok(());
            };
            self.position = start;
            match bytes.get(start + 1) {
                Some(b'/') => self.end_tag(builder)?,
                Some(b'!') => self.bang(builder)?,
                Some(b'?') => {
                    // A processing instruction or the XML declaration: nothing to keep.
                    let end = self.find(start + 2, "?>", "processing instruction")?;
                    self.position = end + 2;
                }
                Some(_) => self.start_tag(builder)?,
                None => return Err(self.error("'<' at the end of the input")),
            }
        }
    }

    /// Handles character data between markup.
    fn text(&self, raw: &'a str, builder: &mut TreeBuilder<'a>) -> Result<(), ParseError> {
        if builder.current.is_none() {
            if raw.bytes().all(is_xml_space) {
                return Ok(());
            }
            return Err(self.error("text outside the root element"));
        }
        let has_reference = find_byte(b'&', raw.as_bytes()).is_some();
        if builder.current == Some(Document::ROOT) && !has_reference {
            // Layout between the root's children, which is not kept (see `append_text`).
            return Ok(());
        }
        // Most text has no reference to resolve and is borrowed as it is.
        let text = if has_reference {
            Cow::Owned(unescape(raw).map_err(|reason| self.error(reason))?)
        } else {
            Cow::Borrowed(raw)
        };
        builder.append_text(text);
        Ok(())
    }

    /// Handles `<name …>` and `<name …/>`.
    fn start_tag(&mut self, builder: &mut TreeBuilder<'a>) -> Result<(), ParseError> {
        let bytes = self.input.as_bytes();
        let name_start = self.position + 1;
        // The name runs up to the first byte that cannot be part of one, which must then
        // end it: whitespace, `/` or `>`.
        let name_end = name_start + name_len(bytes.get(name_start..).unwrap_or_default());
        let name = self.slice(name_start, name_end)?;
        let terminated =
            matches!(bytes.get(name_end), Some(&b) if is_xml_space(b) || b == b'/' || b == b'>');
        if !terminated
            || !name
                .as_bytes()
                .first()
                .is_some_and(|&b| is_name_start_byte(b))
        {
            return Err(self.error("invalid element name"));
        }
        if bytes.get(name_end) == Some(&b'>') {
            // `<name>`, the usual case: no attribute to skip, not empty.
            let position = self.offset + self.position;
            // Most elements under the root hold one text and nothing else: read those in
            // one step (the root itself, whose text is not kept, takes the general path).
            if builder.current.is_some() {
                if let Some((text, after)) = self.leaf_text(name_end + 1, name_start, name.len()) {
                    builder.leaf(name, name_start, text, position)?;
                    self.position = after;
                    return Ok(());
                }
            }
            builder.open(name, name_start, false, position)?;
            self.position = name_end + 1;
            return Ok(());
        }
        // Attributes are skipped; quoted values may contain `>` and `/`.
        let mut cursor = name_end;
        let close = loop {
            match bytes.get(cursor) {
                None => return Err(self.error("unterminated start tag")),
                Some(b'>') => break cursor,
                Some(&quote @ (b'"' | b'\'')) => {
                    let value = bytes.get(cursor + 1..).unwrap_or_default();
                    let Some(found) = memchr::memchr(quote, value) else {
                        return Err(self.error("unterminated attribute value"));
                    };
                    cursor += found + 2;
                }
                Some(b'<') => return Err(self.error("'<' inside a start tag")),
                Some(_) => cursor += 1,
            }
        };
        let empty = close > name_end && bytes.get(close - 1) == Some(&b'/');
        builder.open(name, name_start, empty, self.offset + self.position)?;
        self.position = close + 1;
        Ok(())
    }

    /// The text of a leaf element whose content starts at `content`, if the input there
    /// is one CDATA section or one run of text without references, directly followed by
    /// the end tag of the element named at `name_at`; with the position after that tag.
    ///
    /// Anything else (children, comments, references, mixed text and CDATA, an error) is
    /// `None` and left to the general path, which reads it token by token. Where this
    /// answers, the general path would have produced the same text and no error.
    fn leaf_text(
        &self,
        content: usize,
        name_at: usize,
        name_len: usize,
    ) -> Option<(&'a str, usize)> {
        let bytes = self.input.as_bytes();
        let (text_start, text_end, close) = if bytes.get(content..content + 9) == Some(b"<![CDATA[")
        {
            let body = content + 9;
            let end = cdata_end(bytes, body)?;
            (body, end, end + 3)
        } else {
            let end = content + find_byte(b'<', bytes.get(content..)?)?;
            if find_byte(b'&', bytes.get(content..end)?).is_some() {
                return None;
            }
            (content, end, end)
        };
        let after = close + 2 + name_len;
        let closes = bytes.get(close..close + 2) == Some(b"</")
            && same_name(bytes, close + 2, name_at, name_len)
            && bytes.get(after) == Some(&b'>');
        if !closes {
            return None;
        }
        Some((self.input.get(text_start..text_end)?, after + 1))
    }

    /// Handles `</name>`.
    fn end_tag(&mut self, builder: &mut TreeBuilder<'a>) -> Result<(), ParseError> {
        // The expected `</name>` is checked directly; anything else takes the general path
        // (trailing spaces, or an error).
        let (open, open_at) = builder.current_name_at().unwrap_or_default();
        let bytes = self.input.as_bytes();
        let name_end = self.position + 2 + open.len();
        if !open.is_empty()
            && same_name(bytes, self.position + 2, open_at, open.len())
            && bytes.get(name_end) == Some(&b'>')
        {
            builder.close_current();
            self.position = name_end + 1;
            return Ok(());
        }
        let close = self.find(self.position + 2, ">", "end tag")?;
        let name = self.slice(self.position + 2, close)?;
        let name = name.trim_end_matches([' ', '\t', '\n', '\r']);
        builder.close(name, self.offset + self.position)?;
        self.position = close + 1;
        Ok(())
    }

    /// Handles `<!…`: CDATA, a comment, or a forbidden declaration.
    fn bang(&mut self, builder: &mut TreeBuilder<'a>) -> Result<(), ParseError> {
        let rest = self.input.get(self.position..).unwrap_or_default();
        if rest.as_bytes().get(..9) == Some(b"<![CDATA[") {
            let body = self.position + 9;
            let end = cdata_end(self.input.as_bytes(), body)
                .ok_or_else(|| self.error("unterminated CDATA section"))?;
            if builder.current.is_none() {
                return Err(self.error("CDATA outside the root element"));
            }
            builder.append_text(Cow::Borrowed(self.slice(body, end)?));
            self.position = end + 3;
        } else if rest.starts_with("<!--") {
            let end = self.find(self.position + 4, "-->", "comment")?;
            self.position = end + 3;
        } else if starts_with_ignore_case(rest.as_bytes(), 2, b"DOCTYPE")
            || starts_with_ignore_case(rest.as_bytes(), 2, b"ENTITY")
        {
            return Err(ParseError::Doctype);
        } else {
            return Err(self.error("unsupported markup declaration"));
        }
        Ok(())
    }

    /// The position of the next `needle` at or after `from`.
    fn find(&self, from: usize, needle: &str, what: &str) -> Result<usize, ParseError> {
        self.input
            .as_bytes()
            .get(from..)
            .and_then(|rest| find_bytes(rest, needle.as_bytes()))
            .map(|found| from + found)
            .ok_or_else(|| self.error(&format!("unterminated {what}")))
    }

    /// `input[start..end]`; the bounds are always ASCII delimiters, so this only fails
    /// on a bug, which is then reported rather than a panic.
    fn slice(&self, start: usize, end: usize) -> Result<&'a str, ParseError> {
        self.input
            .get(start..end)
            .ok_or_else(|| self.error("internal: slice off a character boundary"))
    }

    /// A [`ParseError::Malformed`] at the current position.
    fn error(&self, what: &str) -> ParseError {
        malformed_at(what, self.offset + self.position)
    }
}

/// The state of [`Document::parse`] between two tokens.
#[derive(Debug)]
struct TreeBuilder<'a> {
    /// The elements seen so far, in document order.
    nodes: Vec<Node<'a>>,
    /// The innermost open element.
    current: Option<usize>,
    /// How many elements are open.
    depth: usize,
    /// Whether the root element has been closed; a second one is an error.
    root_done: bool,
    /// The configured depth bound.
    max_depth: usize,
}

impl<'a> TreeBuilder<'a> {
    /// Handles `<name>` (or `<name/>` when `empty`).
    fn open(
        &mut self,
        name: &'a str,
        name_at: usize,
        empty: bool,
        position: usize,
    ) -> Result<(), ParseError> {
        let index = self.push_node(name, name_at, "", position)?;
        if !empty {
            self.depth += 1;
            self.current = Some(index);
        } else if self.current.is_none() {
            self.root_done = true;
        }
        Ok(())
    }

    /// Handles `<name>text</name>` (or CDATA) read in one step by [`Tokenizer::leaf_text`]
    /// inside an open element: exactly what `open`, `append_text` and `close_current`
    /// do for it, the same checks first.
    fn leaf(
        &mut self,
        name: &'a str,
        name_at: usize,
        text: &'a str,
        position: usize,
    ) -> Result<(), ParseError> {
        self.push_node(name, name_at, text, position).map(|_| ())
    }

    /// Checks that another element may start here and appends it as a child of the
    /// current element (or as the root); returns its index.
    fn push_node(
        &mut self,
        name: &'a str,
        name_at: usize,
        text: &'a str,
        position: usize,
    ) -> Result<usize, ParseError> {
        if self.root_done {
            return Err(malformed_at("a second root element", position));
        }
        if self.depth >= self.max_depth {
            return Err(ParseError::TooDeep {
                max: self.max_depth,
            });
        }
        let index = self.nodes.len();
        // `Document::parse` caps the input at `MAX_INPUT`, so every position fits.
        let name_at =
            u32::try_from(name_at).map_err(|_| malformed_at("an input over 4 GiB", position))?;
        self.nodes.push(Node {
            name,
            name_at,
            text: Cow::Borrowed(text),
            parent: self.current.unwrap_or(index),
            end: index + 1,
            used: false,
        });
        Ok(index)
    }

    /// Handles `</name>`.
    fn close(&mut self, name: &str, position: usize) -> Result<(), ParseError> {
        match self.current_name() {
            None => Err(malformed_at(
                "a closing tag without an open element",
                position,
            )),
            Some(open) if open != name => {
                let reason = format!("</{name}> closes <{open}>");
                Err(malformed_at(&reason, position))
            }
            Some(_) => {
                self.close_current();
                Ok(())
            }
        }
    }

    /// Closes the innermost open element, whose end tag has been checked.
    fn close_current(&mut self) {
        let subtree_end = self.nodes.len();
        let open = self
            .current
            .and_then(|index| self.nodes.get_mut(index).map(|node| (index, node)));
        let Some((index, node)) = open else {
            return;
        };
        node.end = subtree_end;
        // Whitespace between child elements is layout, not content.
        if subtree_end > index + 1 && node.text.bytes().all(is_xml_space) {
            node.text = Cow::Borrowed("");
        }
        self.depth = self.depth.saturating_sub(1);
        if node.parent == index {
            self.current = None;
            self.root_done = true;
        } else {
            self.current = Some(node.parent);
        }
    }

    /// The name of the innermost open element.
    fn current_name_at(&self) -> Option<(&'a str, usize)> {
        self.current
            .and_then(|index| self.nodes.get(index))
            .map(|node| (node.name, node.name_at as usize))
    }

    /// The name of the innermost open element.
    fn current_name(&self) -> Option<&'a str> {
        self.current
            .and_then(|index| self.nodes.get(index))
            .map(|node| node.name)
    }

    /// Appends one text piece (a text run or a CDATA section) to the open element.
    ///
    /// Text directly inside the root is never content in WeChat's dialect, only the
    /// layout of pretty-printed bodies, so it is not kept: joining those pieces would
    /// cost an allocation per request for nothing.
    fn append_text(&mut self, piece: Cow<'a, str>) {
        let open = self.current.filter(|&index| index != Document::ROOT);
        let Some(node) = open.and_then(|index| self.nodes.get_mut(index)) else {
            return;
        };
        if piece.is_empty() {
            return;
        }
        if node.text.is_empty() {
            node.text = piece;
        } else {
            node.text.to_mut().push_str(&piece);
        }
    }
}

/// Resolves the predefined entities and character references of `raw`.
///
/// Any other entity is an error: without a DTD none can be declared.
fn unescape(raw: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = memchr::memchr(b'&', rest.as_bytes()) {
        let (before, reference) = rest.split_at(amp);
        out.push_str(before);
        let reference = reference.get(1..).unwrap_or_default();
        // Valid references are short; looking further only wastes time on garbage.
        let semicolon = reference
            .bytes()
            .take(32)
            .position(|b| b == b';')
            .ok_or("unterminated entity reference")?;
        let (name, after) = reference.split_at(semicolon);
        let resolved = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "apos" => '\'',
            "quot" => '"',
            _ => {
                character_reference(name).ok_or("unknown entity or invalid character reference")?
            }
        };
        out.push(resolved);
        rest = after.get(1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

/// `#123` or `#x7B` as a character.
fn character_reference(name: &str) -> Option<char> {
    let (digits, radix) = match name.strip_prefix("#x") {
        Some(hex) => (hex, 16),
        None => (name.strip_prefix('#')?, 10),
    };
    // `from_str_radix` would also accept a sign.
    if digits.is_empty() || !digits.bytes().all(|b| char::from(b).is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix)
        .ok()
        .and_then(char::from_u32)
}

/// Finds a DOCTYPE or ENTITY declaration anywhere in the input, however broken it is.
///
/// The scan knows just enough XML to skip CDATA sections and comments, so a user who
/// types `<!DOCTYPE` into a chat message (which WeChat wraps in CDATA) is not rejected.
fn reject_declarations(input: &[u8]) -> Result<(), ParseError> {
    let mut position = 0;
    while let Some(found) = input
        .get(position..)
        .and_then(|rest| find_bytes(rest, b"<!"))
    {
        let start = position + found;
        let rest = input.get(start..).unwrap_or_default();
        let skip_to = |opening: usize, closing: &[u8]| {
            rest.get(opening..)
                .and_then(|body| find_bytes(body, closing))
                .map(|end| start + opening + end + closing.len())
        };
        position = if rest.starts_with(b"<![CDATA[") {
            match skip_to(9, b"]]>") {
                Some(next) => next,
                // An unterminated section is the tokenizer's error to report.
                None => return Ok(()),
            }
        } else if rest.starts_with(b"<!--") {
            match skip_to(4, b"-->") {
                Some(next) => next,
                None => return Ok(()),
            }
        } else if starts_with_ignore_case(rest, 2, b"DOCTYPE")
            || starts_with_ignore_case(rest, 2, b"ENTITY")
        {
            return Err(ParseError::Doctype);
        } else {
            start + 2
        };
    }
    Ok(())
}

/// The length of the element name at the start of `bytes`: up to the first byte that
/// cannot be part of one.
///
/// Names are short, and a loop that stops at a different length at every tag mispredicts
/// its exit every time; so the first sixteen bytes are classified at once, without
/// branches, and the length read from the resulting bit mask.
#[inline]
fn name_len(bytes: &[u8]) -> usize {
    const WINDOW: usize = 16;
    if let Some(window) = bytes.get(..WINDOW) {
        let mask = window.iter().enumerate().fold(0u32, |mask, (i, &b)| {
            mask | (u32::from(is_name_byte(b)) << i)
        });
        let len = (!mask).trailing_zeros() as usize;
        if len < WINDOW {
            return len;
        }
    }
    bytes
        .iter()
        .position(|&b| !is_name_byte(b))
        .unwrap_or(bytes.len())
}

/// The position of the first `byte` in `haystack`.
///
/// Most texts between markup are short (a newline of layout, a number), where a plain loop
/// beats setting up `memchr`'s vector search; longer ones go to `memchr`.
#[inline]
fn find_byte(byte: u8, haystack: &[u8]) -> Option<usize> {
    const SHORT: usize = 16;
    match haystack.get(..SHORT) {
        None => haystack.iter().position(|&b| b == byte),
        Some(head) => head.iter().position(|&b| b == byte).or_else(|| {
            memchr::memchr(byte, haystack.get(SHORT..).unwrap_or_default()).map(|at| at + SHORT)
        }),
    }
}

/// The position of the `]]>` that ends the CDATA section whose text starts at `body`.
///
/// [`find_bytes`] for the one needle every message has several of, with the two bytes
/// before each `>` compared one by one.
fn cdata_end(bytes: &[u8], body: usize) -> Option<usize> {
    let mut from = body + 2;
    loop {
        let end = from + memchr::memchr(b'>', bytes.get(from..)?)?;
        if bytes.get(end - 2..end) == Some(b"]]") {
            return Some(end - 2);
        }
        from = end + 1;
    }
}

/// The position of the first `needle` in `haystack`.
///
/// The needles of this module are short and end in a byte that is rare where they are
/// looked for (`!`, `>` inside CDATA or comments), so finding that byte with `memchr` and
/// checking the bytes before it beats building a general substring searcher per call.
pub(super) fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&last, head) = needle.split_last()?;
    let mut from = head.len();
    while let Some(found) = haystack
        .get(from..)
        .and_then(|rest| memchr::memchr(last, rest))
    {
        let end = from + found;
        let start = end - head.len();
        if haystack.get(start..end) == Some(head) {
            return Some(start);
        }
        from = end + 1;
    }
    None
}

/// Whether the `len` bytes at `at` equal those at `name_at` (an open element's name).
///
/// For names of up to sixteen bytes (all of WeChat's) this compares two 16-byte words of
/// the input under a mask, without a loop whose exit would be mispredicted at every end
/// tag and without a call to `memcmp`; near the end of the input it compares slices.
#[inline]
fn same_name(bytes: &[u8], at: usize, name_at: usize, len: usize) -> bool {
    const WORD: usize = 16;
    let load = |from: usize| {
        bytes.get(from..from + WORD).map(|slice| {
            let mut word = [0u8; WORD];
            word.copy_from_slice(slice);
            u128::from_le_bytes(word)
        })
    };
    if len < WORD {
        if let (Some(found), Some(expected)) = (load(at), load(name_at)) {
            let mask = (1u128 << (8 * len)) - 1;
            return (found ^ expected) & mask == 0;
        }
    }
    match (bytes.get(at..at + len), bytes.get(name_at..name_at + len)) {
        (Some(found), Some(expected)) => found == expected,
        _ => false,
    }
}

/// Whether `haystack[offset..]` starts with `needle`, ignoring ASCII case.
fn starts_with_ignore_case(haystack: &[u8], offset: usize, needle: &[u8]) -> bool {
    haystack
        .get(offset..offset + needle.len())
        .is_some_and(|candidate| candidate.eq_ignore_ascii_case(needle))
}

/// XML's four whitespace characters.
fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A [`ParseError::Malformed`] at a byte position.
fn malformed_at(what: &str, position: usize) -> ParseError {
    ParseError::Malformed {
        reason: format!("{what} at byte {position}"),
    }
}

// The size [`Node::name_at`] is chosen for, on 64-bit targets.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Node<'static>>() == 64);

#[cfg(test)]
mod tests {
    use crate::xml::{Element, Limits, ParseError};

    fn check_text(xml: &str, expected: &str) {
        let root = Element::parse(xml.as_bytes()).unwrap();
        assert_eq!(root.child("A").unwrap().text, expected, "{xml}");
    }

    #[test]
    fn cdata_plain_escaped_and_mixed_text_are_equal() {
        check_text("<xml><A><![CDATA[a<b & c]]></A></xml>", "a<b & c");
        check_text("<xml><A>a&lt;b &amp; c</A></xml>", "a<b & c");
        check_text("<xml><A>a&lt;<![CDATA[b & ]]>c</A></xml>", "a<b & c");
        check_text("<xml><A>a&#60;b &#x26; c</A></xml>", "a<b & c");
    }

    #[test]
    fn text_is_not_trimmed() {
        check_text("<xml><A>  two\n lines \t</A></xml>", "  two\n lines \t");
        check_text("<xml><A><![CDATA[ 😀 ]]></A></xml>", " 😀 ");
        check_text("<xml><A></A></xml>", "");
        check_text("<xml><A/></xml>", "");
    }

    #[test]
    fn doctype_and_entities_are_rejected_first() {
        for xml in [
            "<!DOCTYPE xml [<!ENTITY x \"y\">]><xml><A>&x;</A></xml>",
            "<?xml version=\"1.0\"?><!doctype xml><xml/>",
            "<!-- c --><![CDATA[x]]><!DOCTYPE xml><xml/>",
            "<xml><A><![CDATA[]]></A><!-- <![CDATA[ --><!DocType a></xml>",
            "<xml><!ENTITY x \"y\"></xml>",
            // Malformed and non-UTF-8 input with a declaration still reports the declaration.
            "<xml><A>\u{0}</B><!DOCTYPE a></xml>",
        ] {
            assert_eq!(
                Element::parse(xml.as_bytes()),
                Err(ParseError::Doctype),
                "{xml}"
            );
        }
        let mut bytes = b"<xml><A>\xff</A>".to_vec();
        bytes.extend_from_slice(b"<!DOCTYPE a></xml>");
        assert_eq!(Element::parse(&bytes), Err(ParseError::Doctype));
    }

    #[test]
    fn doctype_inside_cdata_or_comment_is_text() {
        check_text(
            "<xml><A><![CDATA[<!DOCTYPE html>]]></A></xml>",
            "<!DOCTYPE html>",
        );
        check_text(
            "<xml><!-- <!DOCTYPE x> --><A>&lt;!DOCTYPE</A></xml>",
            "<!DOCTYPE",
        );
    }

    #[test]
    fn depth_is_bounded() {
        let limits = Limits {
            max_bytes: 1024,
            max_depth: 3,
        };
        assert!(Element::parse_with_limits(b"<xml><a><b>x</b></a></xml>", limits).is_ok());
        assert_eq!(
            Element::parse_with_limits(b"<xml><a><b><c>x</c></b></a></xml>", limits),
            Err(ParseError::TooDeep { max: 3 })
        );
        assert_eq!(
            Element::parse_with_limits(b"<xml><a><b><c/></b></a></xml>", limits),
            Err(ParseError::TooDeep { max: 3 })
        );
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(100), "</a>".repeat(100));
        assert_eq!(
            Element::parse(deep.as_bytes()),
            Err(ParseError::TooDeep { max: 16 })
        );
    }

    #[test]
    fn size_is_bounded() {
        let limits = Limits {
            max_bytes: 20,
            max_depth: 16,
        };
        assert!(Element::parse_with_limits(b"<xml><A>x</A></xml>", limits).is_ok());
        assert_eq!(
            Element::parse_with_limits(b"<xml><A>xy</A></xml> ", limits),
            Err(ParseError::TooLarge { len: 21, max: 20 })
        );
    }

    #[test]
    fn malformed_documents_are_rejected() {
        for xml in [
            "",
            "  ",
            "<xml>",
            "<xml><A></B></xml>",
            "<xml></xml><xml></xml>",
            "<xml></xml>text",
            "text<xml></xml>",
            "</xml>",
            "<xml><A>&unknown;</A></xml>",
            "<xml><a\"b>x</a\"b></xml>",
        ] {
            assert!(
                matches!(
                    Element::parse(xml.as_bytes()),
                    Err(ParseError::Malformed { .. })
                ),
                "{xml}: {:?}",
                Element::parse(xml.as_bytes())
            );
        }
        assert_eq!(Element::parse(b"<root/>"), Err(ParseError::WrongRoot));
        assert_eq!(
            Element::parse(b"<xml><A>\xff</A></xml>"),
            Err(ParseError::NotUtf8)
        );
        assert_eq!(
            Element::parse(b"<xml><A><![CDATA[\xff]]></A></xml>"),
            Err(ParseError::NotUtf8)
        );
    }

    #[test]
    fn leaves_read_in_one_step_match_the_general_path() {
        // An attribute sends a start tag down the general path; the result must not change.
        for inner in [
            "",
            "x",
            " padded ",
            "\n",
            "<![CDATA[]]>",
            "<![CDATA[a<b>&]]>",
            "<![CDATA[x]]><![CDATA[y]]>",
            "<![CDATA[x]]>tail",
            "head<![CDATA[x]]>",
            "a&amp;b",
            "<!-- c -->x",
            "x<!-- c -->",
            "<B>1</B>",
            "<B/>",
            " <B>1</B> ",
            "<![CDATA[]]]]><![CDATA[>]]>",
        ] {
            let fast = format!("<xml><A>{inner}</A><C>2</C></xml>");
            let general = format!("<xml><A k='v'>{inner}</A ><C x=\"\">2</C></xml>");
            assert_eq!(
                Element::parse(fast.as_bytes()),
                Element::parse(general.as_bytes()),
                "{fast}"
            );
        }
        for broken in [
            "<xml><A><![CDATA[x]]></B></xml>",
            "<xml><A>x</AB></xml>",
            "<xml><A>x</A",
            "<xml><A><![CDATA[x]]></A",
            "<xml><A><![CDATA[x</A></xml>",
        ] {
            assert!(
                matches!(
                    Element::parse(broken.as_bytes()),
                    Err(ParseError::Malformed { .. })
                ),
                "{broken}"
            );
        }
        let limits = Limits {
            max_bytes: 1024,
            max_depth: 2,
        };
        assert!(Element::parse_with_limits(b"<xml><a>x</a></xml>", limits).is_ok());
        assert_eq!(
            Element::parse_with_limits(b"<xml><a><b>x</b></a></xml>", limits),
            Err(ParseError::TooDeep { max: 2 })
        );
        assert_eq!(
            Element::parse_with_limits(b"<xml><a><b><![CDATA[x]]></b></a></xml>", limits),
            Err(ParseError::TooDeep { max: 2 })
        );
        // The byte-order mark shifts positions; errors still report input positions.
        let with_bom = "\u{FEFF}<xml><A>x</A><A>y</B></xml>";
        let without = "<xml><A>x</A><A>y</B></xml>";
        let (Err(ParseError::Malformed { reason: a }), Err(ParseError::Malformed { reason: b })) = (
            Element::parse(with_bom.as_bytes()),
            Element::parse(without.as_bytes()),
        ) else {
            panic!("both must be malformed");
        };
        assert_ne!(a, b);
    }

    #[test]
    fn nested_elements_keep_order_and_drop_layout_whitespace() {
        let root =
            Element::parse(b"<xml>\n <A>\n  <B>1</B>\n  <C> 2 </C>\n </A>\n <D/>\n</xml>").unwrap();
        assert_eq!(
            root,
            Element {
                name: "xml".into(),
                text: String::new(),
                children: vec![
                    Element {
                        name: "A".into(),
                        text: String::new(),
                        children: vec![Element::leaf("B", "1"), Element::leaf("C", " 2 ")],
                    },
                    Element::leaf("D", ""),
                ],
            }
        );
        assert_eq!(root.find(&["A", "C"]).unwrap().text, " 2 ");
    }
}
