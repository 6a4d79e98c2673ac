//! Secrets and identities built once at the edge: [`AesKey`], [`Token`], [`AppId`].
//!
//! Parse, don't validate: a configured EncodingAESKey becomes an [`AesKey`] exactly once,
//! and everything downstream takes the typed value. Secrets never print in clear: their
//! `Debug` is redacted and they have no `Display`.

use std::fmt;
use std::str::FromStr;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::ErrorCode;

/// Decodes the 43 characters of an EncodingAESKey.
///
/// WeChat draws keys from all 62 alphanumerics, so the last character usually carries
/// non-zero discarded bits ("non-canonical" base64). The default strict engine rejects
/// those keys; real keys must be accepted, so trailing bits are allowed here.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// The length of an EncodingAESKey in characters.
pub const ENCODING_AES_KEY_LEN: usize = 43;

/// Why a key, token or AppID was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The EncodingAESKey is not 43 characters long.
    AesKeyLength {
        /// The length found, in characters.
        len: usize,
    },
    /// The EncodingAESKey is not base64 of 32 bytes.
    AesKeyEncoding,
    /// The token is empty or holds characters WeChat's console does not allow.
    InvalidToken,
    /// The AppID is empty or not plain ASCII.
    InvalidAppId,
}

impl KeyError {
    /// The official code: -40004 for key problems, -40005 for the AppID.
    pub fn code(&self) -> ErrorCode {
        match self {
            KeyError::InvalidAppId => ErrorCode::ValidateAppid,
            KeyError::InvalidToken => ErrorCode::ComputeSignature,
            _ => ErrorCode::IllegalAesKey,
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::AesKeyLength { len } => write!(
                f,
                "EncodingAESKey must be {ENCODING_AES_KEY_LEN} characters, found {len}"
            ),
            KeyError::AesKeyEncoding => {
                f.write_str("EncodingAESKey is not base64 of a 32-byte key")
            }
            KeyError::InvalidToken => {
                f.write_str("token must be 1 to 128 ASCII letters, digits or symbols")
            }
            KeyError::InvalidAppId => {
                f.write_str("AppID must be 1 to 64 printable ASCII characters")
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// The 32-byte AES key behind an EncodingAESKey. The IV is its first 16 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct AesKey {
    bytes: [u8; 32],
}

impl AesKey {
    /// Parses a 43-character EncodingAESKey (`base64(key)` without the trailing `=`).
    pub fn parse(encoding_aes_key: &str) -> Result<AesKey, KeyError> {
        let len = encoding_aes_key.chars().count();
        if len != ENCODING_AES_KEY_LEN {
            return Err(KeyError::AesKeyLength { len });
        }
        let mut bytes = [0u8; 32];
        match KEY_ENGINE.decode_slice(encoding_aes_key.as_bytes(), &mut bytes) {
            Ok(32) => Ok(AesKey { bytes }),
            _ => Err(KeyError::AesKeyEncoding),
        }
    }

    /// Wraps 32 raw key bytes (e.g. freshly drawn by `wxgate keygen`).
    pub const fn from_bytes(bytes: [u8; 32]) -> AesKey {
        AesKey { bytes }
    }

    /// The raw key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The CBC initialisation vector: the first 16 bytes of the key.
    pub fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.bytes[..16]);
        iv
    }

    /// The canonical 43-character EncodingAESKey for this key.
    pub fn to_encoding_aes_key(&self) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.bytes)
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

impl FromStr for AesKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AesKey::parse(s)
    }
}

/// The shared secret used only inside SHA1 signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Accepts 1 to 128 printable ASCII characters without spaces.
    ///
    /// WeChat's console allows 3 to 32 letters and digits; the bound here is looser so that
    /// WeCom tokens and test tokens also fit, but still refuses anything that could not be
    /// typed into a console field.
    pub fn new(token: impl Into<String>) -> Result<Token, KeyError> {
        let token = token.into();
        let printable = token.bytes().all(|b| b.is_ascii_graphic());
        if token.is_empty() || token.len() > 128 || !printable {
            return Err(KeyError::InvalidToken);
        }
        Ok(Token(token))
    }

    /// The token text, for signing. Keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl FromStr for Token {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Token::new(s)
    }
}

/// The receive id inside every ciphertext: the Official Account's AppID (or a WeCom CorpID,
/// or a third-party platform's component AppID). Not a secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AppId(String);

impl AppId {
    /// Accepts 1 to 64 printable ASCII characters.
    pub fn new(app_id: impl Into<String>) -> Result<AppId, KeyError> {
        let app_id = app_id.into();
        let printable = app_id.bytes().all(|b| b.is_ascii_graphic());
        if app_id.is_empty() || app_id.len() > 64 || !printable {
            return Err(KeyError::InvalidAppId);
        }
        Ok(AppId(app_id))
    }

    /// The AppID text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AppId").field(&self.0).finish()
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AppId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AppId::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_canonical_key_is_accepted() {
        let key = AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        assert_eq!(key.as_bytes()[..4], [0x69, 0xb7, 0x1d, 0x79]);
        // The canonical re-encoding differs only in the discarded bits of the last char.
        assert_eq!(
            key.to_encoding_aes_key(),
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFE"
        );
    }

    #[test]
    fn bad_keys_are_rejected_with_40004() {
        for bad in [
            "",
            "abc",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF=",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF!",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDE中",
        ] {
            let err = AesKey::parse(bad).unwrap_err();
            assert_eq!(err.code(), ErrorCode::IllegalAesKey, "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let key = AesKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert_eq!(format!("{key:?}"), "AesKey(<redacted>)");
        let token = Token::new("spamtest").unwrap();
        assert!(!format!("{token:?}").contains("spamtest"));
    }

    #[test]
    fn token_and_app_id_shapes() {
        assert!(Token::new("").is_err());
        assert!(Token::new("has space").is_err());
        assert!(Token::new("AAAAA").is_ok());
        assert!(AppId::new("wx2c2769f8efd9abc2").is_ok());
        assert!(AppId::new("").is_err());
        assert!(AppId::new("wx\n").is_err());
    }
}
