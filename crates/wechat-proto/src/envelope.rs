//! The outer XML of safe and compatible mode: the request body around `Encrypt`, and the
//! encrypted reply body.
//!
//! In safe mode WeChat posts `<xml><ToUserName/><Encrypt/></xml>`; in compatible mode the
//! clear message fields come along with `Encrypt`, unauthenticated, and must be ignored
//! (PROTOCOL §3.2). Either way this module only extracts `Encrypt`, exactly as sent (no
//! trimming: `msg_signature` is computed over those bytes), and the optional outer
//! `ToUserName`. It runs on every request, before the signature check, so it goes through
//! the same hardened reader as everything else and skips unknown elements.
//!
//! The encrypted reply is written with the one writer in the exact shape of PROTOCOL §4.6.
//! Signing and encryption are not done here: [`EncryptedReply`] takes their results.

use std::fmt;

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

/// An encrypted reply body (PROTOCOL §4.6).
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
        let mut doc = Document::parse(body, limits)?;
        let root = Document::ROOT;
        let encrypt = doc
            .child(root, "Encrypt")
            .ok_or(EnvelopeError::MissingEncrypt)?;
        let to_user_name = doc.child(root, "ToUserName");
        Ok(RequestEnvelope {
            to_user_name: to_user_name.map(|index| doc.take_text(index)),
            encrypt: doc.take_text(encrypt),
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
        w.raw("\n");
        // The official example writes the timestamp bare; escaping keeps a bad value from
        // producing markup.
        w.escaped_element("TimeStamp", &self.timestamp);
        w.raw("\n");
        w.cdata_element("Nonce", &self.nonce);
        w.raw("\n");
        w.end("xml");
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
