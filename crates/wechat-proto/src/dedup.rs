//! The key WeChat's retries of one message share.
//!
//! WeChat re-sends a message up to three times when it gets no answer within 5 seconds
//! (docs/protocol.md §6.1), so the gateway must recognise a retry and not act twice. The official
//! rule is: messages by `MsgId`, events by `FromUserName` + `CreateTime`. Two different
//! events of one user can share a second (a `subscribe` and a `LOCATION`, say), so the
//! event key also carries the SHA-1 of the decrypted XML, which a retry repeats byte for
//! byte.
//!
//! This module only names keys; storing them, and for how long, is the gateway's business.
//! Build keys with [`crate::inbound::Inbound::dedup_key`].

use std::fmt;
use std::str::FromStr;

use crate::ids::{MsgId, OpenId};
use crate::signature::Signature;

/// What identifies one delivery of a message across WeChat's retries.
///
/// Its [stable text](DedupKey::stable_text) is
/// `msg:{from_user_name}:{msg_id}` or `evt:{from_user_name}:{create_time}:{40 hex digits}`,
/// and [`FromStr`] reads it back: it is the store key and the `Idempotency-Key` header
/// value. `Display` and `Debug` are for logs and mask the OpenID ([`OpenId::mask`]), so a
/// key can be logged anywhere; they are not the stable text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum DedupKey {
    /// An ordinary message, identified by its sender and `MsgId`.
    Message {
        /// The sender's OpenID.
        from_user_name: String,
        /// The message id.
        msg_id: u64,
    },
    /// An event (or a message without `MsgId`), identified by sender, time and content.
    Event {
        /// The sender's OpenID.
        from_user_name: String,
        /// `CreateTime`, in Unix seconds.
        create_time: i64,
        /// SHA-1 of the decrypted XML.
        xml_sha1: [u8; 20],
    },
}

/// Why a text is not a [`DedupKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseDedupKeyError {
    /// The text does not start with `msg:` or `evt:`.
    UnknownPrefix,
    /// A `:`-separated part is missing.
    MissingPart,
    /// The message id or the create time is not a number.
    InvalidNumber,
    /// The hash is not 40 hexadecimal digits.
    InvalidHash,
}

impl fmt::Display for ParseDedupKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseDedupKeyError::UnknownPrefix => "dedup key does not start with msg: or evt:",
            ParseDedupKeyError::MissingPart => "dedup key has too few parts",
            ParseDedupKeyError::InvalidNumber => "dedup key has an invalid number",
            ParseDedupKeyError::InvalidHash => "dedup key hash is not 40 hex digits",
        })
    }
}

impl std::error::Error for ParseDedupKeyError {}

impl DedupKey {
    /// The stable text form, with the full OpenID: the store key and the
    /// `Idempotency-Key` header value, which [`FromStr`] reads back. Not for logs.
    pub fn stable_text(&self) -> String {
        let mut out = String::with_capacity(96);
        // Writing into a String cannot fail.
        let _ = self.write_text(&mut out, self.from_user_name());
        out
    }

    /// The sender's full OpenID.
    pub fn from_user_name(&self) -> &str {
        match self {
            DedupKey::Message { from_user_name, .. } | DedupKey::Event { from_user_name, .. } => {
                from_user_name
            }
        }
    }

    /// The message id of a message key.
    pub fn msg_id(&self) -> Option<MsgId> {
        match self {
            DedupKey::Message { msg_id, .. } => Some(MsgId(*msg_id)),
            DedupKey::Event { .. } => None,
        }
    }

    /// Writes the text form with `sender` in place of the OpenID.
    fn write_text(&self, out: &mut impl fmt::Write, sender: impl fmt::Display) -> fmt::Result {
        match self {
            DedupKey::Message { msg_id, .. } => write!(out, "msg:{sender}:{msg_id}"),
            DedupKey::Event {
                create_time,
                xml_sha1,
                ..
            } => {
                write!(out, "evt:{sender}:{create_time}:")?;
                xml_sha1
                    .iter()
                    .try_for_each(|byte| write!(out, "{byte:02x}"))
            }
        }
    }
}

impl fmt::Display for DedupKey {
    /// The text form with the OpenID masked, e.g. `msg:o…f0rs:6054768590064713728`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_text(f, OpenId::mask(self.from_user_name()))
    }
}

impl fmt::Debug for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DedupKey({self})")
    }
}

impl FromStr for DedupKey {
    type Err = ParseDedupKeyError;

    /// Reads the [stable text](DedupKey::stable_text) back. The parts are split from the right,
    /// so an OpenID containing `:` still round-trips.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = text.strip_prefix("msg:") {
            let (from_user_name, msg_id) = rest
                .rsplit_once(':')
                .ok_or(ParseDedupKeyError::MissingPart)?;
            Ok(DedupKey::Message {
                from_user_name: from_user_name.to_owned(),
                msg_id: parse_decimal(msg_id)?,
            })
        } else if let Some(rest) = text.strip_prefix("evt:") {
            let (rest, hash) = rest
                .rsplit_once(':')
                .ok_or(ParseDedupKeyError::MissingPart)?;
            let (from_user_name, create_time) = rest
                .rsplit_once(':')
                .ok_or(ParseDedupKeyError::MissingPart)?;
            Ok(DedupKey::Event {
                from_user_name: from_user_name.to_owned(),
                create_time: parse_decimal(create_time)?,
                xml_sha1: parse_sha1_hex(hash)?,
            })
        } else {
            Err(ParseDedupKeyError::UnknownPrefix)
        }
    }
}

/// A decimal number exactly as `Display` writes it (no `+`, no spaces).
fn parse_decimal<T: FromStr>(text: &str) -> Result<T, ParseDedupKeyError> {
    if text.starts_with('+') {
        return Err(ParseDedupKeyError::InvalidNumber);
    }
    text.parse().map_err(|_| ParseDedupKeyError::InvalidNumber)
}

/// 40 lower- or upper-case hex digits: the same syntax as a signature's, so the same
/// decoder.
fn parse_sha1_hex(text: &str) -> Result<[u8; 20], ParseDedupKeyError> {
    Signature::from_hex(text)
        .map(|digest| *digest.as_bytes())
        .map_err(|_| ParseDedupKeyError::InvalidHash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: DedupKey, text: &str) {
        assert_eq!(key.stable_text(), text);
        assert_eq!(text.parse::<DedupKey>(), Ok(key));
    }

    #[test]
    fn display_and_debug_mask_the_open_id() {
        let key = DedupKey::Message {
            from_user_name: "oyORnuP8q7ou2gfYjqLzSIWZf0rs".into(),
            msg_id: 6054768590064713728,
        };
        assert_eq!(key.to_string(), "msg:o…f0rs:6054768590064713728");
        assert_eq!(
            format!("{key:?}"),
            "DedupKey(msg:o…f0rs:6054768590064713728)"
        );
        assert_eq!(
            key.stable_text(),
            "msg:oyORnuP8q7ou2gfYjqLzSIWZf0rs:6054768590064713728"
        );
        assert_eq!(key.msg_id(), Some(MsgId(6054768590064713728)));
        let event = DedupKey::Event {
            from_user_name: "oyORnuP8q7ou2gfYjqLzSIWZf0rs".into(),
            create_time: 7,
            xml_sha1: [0xee; 20],
        };
        assert!(!format!("{event} {event:?}").contains("oyORnuP8q7ou2gfYjqLzSIWZf0rs"));
        assert_eq!(event.from_user_name(), "oyORnuP8q7ou2gfYjqLzSIWZf0rs");
        assert_eq!(event.msg_id(), None);
    }

    #[test]
    fn stable_text_and_from_str_round_trip() {
        check(
            DedupKey::Message {
                from_user_name: "oUser".into(),
                msg_id: 6054768590064713728,
            },
            "msg:oUser:6054768590064713728",
        );
        let mut xml_sha1 = [0u8; 20];
        xml_sha1[0] = 0xab;
        xml_sha1[19] = 0x01;
        check(
            DedupKey::Event {
                from_user_name: "a:b".into(),
                create_time: -5,
                xml_sha1,
            },
            "evt:a:b:-5:ab00000000000000000000000000000000000001",
        );
    }

    #[test]
    fn bad_keys_are_rejected() {
        for (text, error) in [
            ("", ParseDedupKeyError::UnknownPrefix),
            ("key:x:1", ParseDedupKeyError::UnknownPrefix),
            ("msg:x", ParseDedupKeyError::MissingPart),
            ("msg:x:+1", ParseDedupKeyError::InvalidNumber),
            ("msg:x:-1", ParseDedupKeyError::InvalidNumber),
            ("evt:x:1", ParseDedupKeyError::MissingPart),
            ("evt:x:y:00", ParseDedupKeyError::InvalidNumber),
            ("evt:x:1:00", ParseDedupKeyError::InvalidHash),
            (
                "evt:x:1:zz00000000000000000000000000000000000001",
                ParseDedupKeyError::InvalidHash,
            ),
            (
                "evt:x:1:é0000000000000000000000000000000000000",
                ParseDedupKeyError::InvalidHash,
            ),
        ] {
            assert_eq!(text.parse::<DedupKey>(), Err(error), "{text}");
        }
    }
}
