//! The outer XML of safe and compatible mode: the request body around `Encrypt`, and the
//! encrypted reply body.
//!
//! In safe mode WeChat posts `<xml><ToUserName/><Encrypt/></xml>`; in compatible mode the
//! clear message fields come along with `Encrypt`, unauthenticated, and must be ignored
//! (docs/protocol.md §3.2). Either way this module only extracts `Encrypt`, exactly as sent (no
//! trimming: `msg_signature` is computed over those bytes), and the optional outer
//! `ToUserName`. It runs on every request, before the signature check, so it goes through
//! the same hardened reader as everything else and skips unknown elements.
//!
//! The encrypted reply is written with the one writer in the exact shape of docs/protocol.md §4.6.
//! [`EncryptedReply`] holds the results of encryption and signing as owned strings; the
//! hot path is [`EncryptedReply::seal_reply`] (or [`EncryptedReply::seal`] for a rendered
//! body), which renders, encrypts, signs and writes in one buffer, byte for byte the same
//! body. [`RequestEnvelope::parse_borrowed`] is the request side's copy-free reader.

use std::borrow::Cow;
use std::fmt;

use crate::crypto::{MessageCipher, RANDOM_LEN};
use crate::key::Token;
use crate::reply::{Reply, ReplyError, ReplyTarget};
use crate::signature::Signature;
use crate::xml::{Document, Limits, ParseError, XmlWriter};
use crate::ErrorCode;

/// A safe- or compatible-mode request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestEnvelope {
    /// The outer `ToUserName`, if present. Not covered by any signature: for routing
    /// hints only, never for decisions.
    pub to_user_name: Option<String>,
    /// The base64 ciphertext, exactly as sent.
    pub encrypt: String,
}

/// A safe- or compatible-mode request body read without copying: the texts borrow from
/// the body unless they had to be unescaped or joined (an `Encrypt` never does in
/// practice, being base64 in one CDATA section).
///
/// What [`RequestEnvelope::parse_borrowed`] returns, for the per-request hot path;
/// [`RequestEnvelopeRef::into_owned`] gives the owned [`RequestEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestEnvelopeRef<'a> {
    /// The outer `ToUserName`, if present. Not covered by any signature.
    pub to_user_name: Option<Cow<'a, str>>,
    /// The base64 ciphertext, exactly as sent.
    pub encrypt: Cow<'a, str>,
}

impl RequestEnvelopeRef<'_> {
    /// The owned form.
    pub fn into_owned(self) -> RequestEnvelope {
        RequestEnvelope {
            to_user_name: self.to_user_name.map(Cow::into_owned),
            encrypt: self.encrypt.into_owned(),
        }
    }
}

/// An encrypted reply body (docs/protocol.md §4.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedReply {
    /// The base64 ciphertext of the plaintext reply.
    pub encrypt: String,
    /// `msg_signature` over token, `timestamp`, `nonce` and `encrypt`.
    pub msg_signature: String,
    /// The `TimeStamp` written into the reply, in Unix seconds.
    pub timestamp: String,
    /// The `Nonce` written into the reply.
    pub nonce: String,
}

/// Why an envelope was rejected.
///
/// Every variant maps to the official code -40002 (`ParseXml_Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The body is not acceptable XML.
    Xml(ParseError),
    /// The body has no `Encrypt` element.
    MissingEncrypt,
    /// An encrypted reply lacks `MsgSignature`, `TimeStamp` or `Nonce`.
    MissingField {
        /// The element name.
        field: &'static str,
    },
}

impl EnvelopeError {
    /// The official error code: always -40002 (`ParseXml_Error`).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::ParseXml
    }
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Xml(error) => write!(f, "envelope: {error}"),
            EnvelopeError::MissingEncrypt => f.write_str("envelope has no <Encrypt> element"),
            EnvelopeError::MissingField { field } => {
                write!(f, "encrypted reply has no <{field}> element")
            }
        }
    }
}

impl std::error::Error for EnvelopeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnvelopeError::Xml(error) => Some(error),
            _ => None,
        }
    }
}

impl From<ParseError> for EnvelopeError {
    fn from(error: ParseError) -> Self {
        EnvelopeError::Xml(error)
    }
}

impl RequestEnvelope {
    /// Parses a safe- or compatible-mode body with the default [`Limits`].
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        RequestEnvelope::parse_with_limits(body, Limits::default())
    }

    /// Parses a safe- or compatible-mode body.
    pub fn parse_with_limits(body: &[u8], limits: Limits) -> Result<Self, EnvelopeError> {
        RequestEnvelope::parse_borrowed_with_limits(body, limits)
            .map(RequestEnvelopeRef::into_owned)
    }

    /// Parses a safe- or compatible-mode body with the default [`Limits`], borrowing the
    /// texts from `body`: [`RequestEnvelope::parse`] without copying `Encrypt`.
    pub fn parse_borrowed(body: &[u8]) -> Result<RequestEnvelopeRef<'_>, EnvelopeError> {
        RequestEnvelope::parse_borrowed_with_limits(body, Limits::default())
    }

    /// Parses a safe- or compatible-mode body, borrowing the texts from `body`.
    pub fn parse_borrowed_with_limits(
        body: &[u8],
        limits: Limits,
    ) -> Result<RequestEnvelopeRef<'_>, EnvelopeError> {
        let mut doc = Document::parse(body, limits)?;
        let root = Document::ROOT;
        let mut encrypt = None;
        let mut to_user_name = None;
        // One pass over the root's children; the first occurrence of each wins.
        for child in doc.children(root) {
            match doc.name(child) {
                "Encrypt" if encrypt.is_none() => encrypt = Some(child),
                "ToUserName" if to_user_name.is_none() => to_user_name = Some(child),
                _ => {}
            }
        }
        let encrypt = encrypt.ok_or(EnvelopeError::MissingEncrypt)?;
        Ok(RequestEnvelopeRef {
            to_user_name: to_user_name.map(|index| doc.take_text_cow(index)),
            encrypt: doc.take_text_cow(encrypt),
        })
    }

    /// The safe-mode body: `ToUserName` (when present) and `Encrypt`.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(self.encrypt.len() + 128);
        let mut w = XmlWriter::new(&mut out);
        w.start("xml");
        if let Some(to_user_name) = &self.to_user_name {
            w.cdata_element("ToUserName", to_user_name);
        }
        w.cdata_element("Encrypt", &self.encrypt);
        w.end("xml");
        out
    }

    /// The compatible-mode body: the clear message XML with `<Encrypt>` added before its
    /// closing `</xml>`.
    ///
    /// `clear_xml` should be a message as [`crate::inbound::Inbound::to_xml`] writes it.
    /// If it has no `</xml>`, the `Encrypt` element is appended at its end.
    pub fn compatible_body(clear_xml: &str, encrypt: &str) -> String {
        let (head, tail) = match clear_xml.rfind("</xml>") {
            Some(position) => clear_xml.split_at(position),
            None => (clear_xml, ""),
        };
        let mut out = String::with_capacity(clear_xml.len() + encrypt.len() + 32);
        out.push_str(head);
        XmlWriter::new(&mut out).cdata_element("Encrypt", encrypt);
        out.push_str(tail);
        out
    }
}

impl EncryptedReply {
    /// The reply body, in the shape of the official example (one element per line).
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(self.encrypt.len() + 192);
        self.write_into(&mut out);
        out
    }

    /// Appends the body of [`EncryptedReply::to_xml`] to `out`.
    pub fn write_into(&self, out: &mut String) {
        let mut w = XmlWriter::new(out);
        w.start("xml");
        w.raw("\n");
        w.cdata_element("Encrypt", &self.encrypt);
        w.raw("\n");
        w.cdata_element("MsgSignature", &self.msg_signature);
        write_tail(out, &self.timestamp, &self.nonce);
    }

    /// Appends the reply body to `out` from borrowed parts: the same bytes as
    /// [`EncryptedReply::to_xml`] of an `EncryptedReply` holding `encrypt`,
    /// `msg_signature.to_hex()`, `timestamp` and `nonce`, without building one.
    pub fn write_parts(
        encrypt: &str,
        msg_signature: &Signature,
        timestamp: &str,
        nonce: &str,
        out: &mut String,
    ) {
        out.reserve(encrypt.len() + timestamp.len() + nonce.len() + TEMPLATE_LEN);
        let mut w = XmlWriter::new(out);
        w.start("xml");
        w.raw("\n");
        w.cdata_element("Encrypt", encrypt);
        write_signature(out, msg_signature);
        write_tail(out, timestamp, nonce);
    }

    /// Encrypts `plaintext` (a rendered reply), signs it and writes the whole reply body:
    /// the hot path of a safe-mode answer, in one buffer.
    ///
    /// The result is byte for byte what
    /// `EncryptedReply { encrypt, msg_signature, timestamp, nonce }.to_xml()` gives with
    /// `encrypt = cipher.encrypt(plaintext, random)` and
    /// `msg_signature = Signature::message(token, timestamp, nonce, &encrypt).to_hex()`;
    /// the base64 text goes straight into the body, where it is signed.
    pub fn seal(
        cipher: &MessageCipher,
        token: &Token,
        timestamp: &str,
        nonce: &str,
        plaintext: &[u8],
        random: [u8; RANDOM_LEN],
    ) -> String {
        let mut out = String::new();
        EncryptedReply::seal_into(cipher, token, timestamp, nonce, plaintext, random, &mut out);
        out
    }

    /// Like [`EncryptedReply::seal`], appending the body to `out`.
    pub fn seal_into(
        cipher: &MessageCipher,
        token: &Token,
        timestamp: &str,
        nonce: &str,
        plaintext: &[u8],
        random: [u8; RANDOM_LEN],
        out: &mut String,
    ) {
        out.reserve(
            cipher.encrypted_len(plaintext.len()) + timestamp.len() + nonce.len() + TEMPLATE_LEN,
        );
        let start = start_sealed(out);
        cipher.encrypt_into(plaintext, random, out);
        finish_sealed(out, start, token, timestamp, nonce);
    }

    /// Renders `reply` for `target`, encrypts, signs and writes the whole reply body: what
    /// [`EncryptedReply::seal`] gives for `reply.render(target)?`, with the reply written
    /// straight into the buffer that is encrypted rather than into a string of its own.
    ///
    /// [`Reply::Success`] needs no encryption: answer `success` instead of sealing it.
    pub fn seal_reply(
        cipher: &MessageCipher,
        token: &Token,
        timestamp: &str,
        nonce: &str,
        reply: &Reply,
        target: &ReplyTarget<'_>,
        random: [u8; RANDOM_LEN],
    ) -> Result<String, ReplyError> {
        let hint = reply.size_hint(target);
        let mut out = String::with_capacity(
            cipher.encrypted_len(hint) + timestamp.len() + nonce.len() + TEMPLATE_LEN,
        );
        let start = start_sealed(&mut out);
        cipher.encrypt_written(
            random,
            hint,
            |plaintext| reply.write_into(target, plaintext),
            &mut out,
        )?;
        finish_sealed(&mut out, start, token, timestamp, nonce);
        Ok(out)
    }

    /// Parses an encrypted reply body (for the simulator and tests).
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        let mut doc = Document::parse(body, Limits::default())?;
        let root = Document::ROOT;
        let encrypt = doc
            .child(root, "Encrypt")
            .ok_or(EnvelopeError::MissingEncrypt)?;
        let required = |field: &'static str| {
            doc.child(root, field)
                .ok_or(EnvelopeError::MissingField { field })
        };
        let msg_signature = required("MsgSignature")?;
        let timestamp = required("TimeStamp")?;
        let nonce = required("Nonce")?;
        Ok(EncryptedReply {
            encrypt: doc.take_text(encrypt),
            msg_signature: doc.take_text(msg_signature),
            timestamp: doc.take_text(timestamp),
            nonce: doc.take_text(nonce),
        })
    }
}

/// The bytes of the encrypted reply's markup around `Encrypt`, `TimeStamp` and `Nonce`,
/// the 40 hexadecimal digits of the signature included (178), rounded up.
const TEMPLATE_LEN: usize = 192;

/// Writes the start of a sealed reply, up to where the base64 `Encrypt` goes; returns
/// where it starts.
fn start_sealed(out: &mut String) -> usize {
    out.push_str("<xml>\n<Encrypt><![CDATA[");
    out.len()
}

/// Signs the `Encrypt` text written at `start..` and writes the rest of the reply body.
///
/// Base64 is plain ASCII without `]` or forbidden characters: it needs neither
/// sanitizing nor splitting, and was written into the CDATA section as it was made.
fn finish_sealed(out: &mut String, start: usize, token: &Token, timestamp: &str, nonce: &str) {
    let encrypt = out.get(start..).unwrap_or_default();
    let msg_signature = Signature::message(token, timestamp, nonce, encrypt);
    out.push_str("]]></Encrypt>");
    write_signature(out, &msg_signature);
    write_tail(out, timestamp, nonce);
}

/// Writes `\n<MsgSignature>` with `msg_signature` in hex; hex needs no sanitizing.
fn write_signature(out: &mut String, msg_signature: &Signature) {
    out.push_str("\n<MsgSignature><![CDATA[");
    msg_signature.write_hex(out);
    out.push_str("]]></MsgSignature>");
}

/// Writes the end of the encrypted reply: `TimeStamp`, `Nonce` and `</xml>`.
fn write_tail(out: &mut String, timestamp: &str, nonce: &str) {
    let mut w = XmlWriter::new(out);
    w.raw("\n");
    // The official example writes the timestamp bare; escaping keeps a bad value from
    // producing markup.
    w.escaped_element("TimeStamp", timestamp);
    w.raw("\n");
    w.cdata_element("Nonce", nonce);
    w.raw("\n");
    w.end("xml");
}
