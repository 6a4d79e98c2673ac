//! Identifiers of followers and messages, typed so that logging one is safe by default.
//!
//! An OpenID identifies a person to the account: it must not reach logs in full. An
//! [`OpenId`]'s `Debug` and `Display` show only a masked form (`o…f0rs`), so keeping
//! OpenIDs out of logs does not depend on every call site remembering to; the full value
//! is only available through [`OpenId::as_str`], which names what it does. A [`MsgId`] is
//! not personal and shows in full.

use std::fmt;
use std::str::FromStr;

/// A follower's OpenID (the `FromUserName` of an inbound message).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct OpenId(String);

/// The masked form of an OpenID, for logs: see [`OpenId::mask`].
#[derive(Clone, Copy)]
pub struct MaskedOpenId<'a>(&'a str);

impl OpenId {
    /// Wraps an OpenID.
    pub fn new(open_id: impl Into<String>) -> OpenId {
        OpenId(open_id.into())
    }

    /// The full OpenID, for storage, addressing and comparison; never for logs.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full OpenID, owned.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The masked form of any OpenID text: its first character, `…`, and its last four
    /// characters, or `…` alone for a text of eight characters or fewer. Enough to tell
    /// followers apart in a log, not enough to address one.
    pub fn mask(open_id: &str) -> MaskedOpenId<'_> {
        MaskedOpenId(open_id)
    }
}

impl fmt::Display for MaskedOpenId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chars = self.0.chars().count();
        if chars <= 8 {
            return f.write_str("…");
        }
        let first = self.0.chars().next().unwrap_or('…');
        let last: String = self.0.chars().skip(chars - 4).collect();
        write!(f, "{first}…{last}")
    }
}

impl fmt::Debug for MaskedOpenId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl fmt::Display for OpenId {
    /// The masked form ([`OpenId::mask`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        OpenId::mask(&self.0).fmt(f)
    }
}

impl fmt::Debug for OpenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpenId({:?})", OpenId::mask(&self.0))
    }
}

impl From<String> for OpenId {
    fn from(open_id: String) -> OpenId {
        OpenId(open_id)
    }
}

impl From<&str> for OpenId {
    fn from(open_id: &str) -> OpenId {
        OpenId(open_id.to_owned())
    }
}

impl PartialEq<str> for OpenId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// The id of an ordinary message (`MsgId`), a 64-bit number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId(pub u64);

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MsgId {
    type Err = std::num::ParseIntError;

    fn from_str(text: &str) -> Result<MsgId, Self::Err> {
        text.parse().map(MsgId)
    }
}

impl From<u64> for MsgId {
    fn from(id: u64) -> MsgId {
        MsgId(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_ids_are_masked_in_debug_and_display() {
        let id = OpenId::new("oyORnuP8q7ou2gfYjqLzSIWZf0rs");
        assert_eq!(id.to_string(), "o…f0rs");
        assert_eq!(format!("{id:?}"), "OpenId(\"o…f0rs\")");
        assert_eq!(id.as_str(), "oyORnuP8q7ou2gfYjqLzSIWZf0rs");
        assert_eq!(OpenId::mask("oUser").to_string(), "…");
        assert_eq!(OpenId::mask("").to_string(), "…");
        // Characters, not bytes: a multi-byte id is cut on character boundaries.
        assert_eq!(
            OpenId::mask("用户用户用户用户用户").to_string(),
            "用…用户用户"
        );
        assert!(id == *"oyORnuP8q7ou2gfYjqLzSIWZf0rs");
    }

    #[test]
    fn msg_ids_show_in_full() {
        let id: MsgId = "6054768590064713728".parse().unwrap();
        assert_eq!(id, MsgId(6054768590064713728));
        assert_eq!(id.to_string(), "6054768590064713728");
    }
}
