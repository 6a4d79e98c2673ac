//! The two SHA1 signatures of the protocol, and their constant-time verification.
//!
//! `signature = sha1(sort([token, timestamp, nonce]))` arrives on every request;
//! `msg_signature = sha1(sort([token, timestamp, nonce, Encrypt]))` covers the ciphertext in
//! compatible and safe modes and on encrypted replies. Both are lower-case hex of 20 bytes.
//! A [`Signature`] is the 20 bytes; hex only exists at the edges.

use std::fmt;
use std::str::FromStr;

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::key::Token;
use crate::ErrorCode;

/// A SHA1 signature over sorted parts.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; 20]);

/// Why a presented signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// The presented value is not 40 hexadecimal characters.
    Malformed,
    /// The presented value is well formed but does not match.
    Mismatch,
}

impl SignatureError {
    /// Always -40001 (`ValidateSignature_Error`).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::ValidateSignature
    }
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::Malformed => f.write_str("signature is not 40 hex characters"),
            SignatureError::Mismatch => f.write_str("signature does not match"),
        }
    }
}

impl std::error::Error for SignatureError {}

impl Signature {
    /// SHA1 over the parts sorted as byte strings and concatenated without separator.
    pub fn compute(parts: &[&str]) -> Signature {
        // At most four parts on the protocol's paths; sorting references is free.
        let mut sorted: Vec<&str> = parts.to_vec();
        sorted.sort_unstable();
        Self::digest(&sorted)
    }

    /// The URL `signature`: over token, timestamp and nonce.
    pub fn url(token: &Token, timestamp: &str, nonce: &str) -> Signature {
        let mut parts = [token.expose(), timestamp, nonce];
        parts.sort_unstable();
        Self::digest(&parts)
    }

    /// The `msg_signature`: over token, timestamp, nonce and the `Encrypt` text as found.
    pub fn message(token: &Token, timestamp: &str, nonce: &str, encrypt: &str) -> Signature {
        let mut parts = [token.expose(), timestamp, nonce, encrypt];
        parts.sort_unstable();
        Self::digest(&parts)
    }

    fn digest(sorted: &[&str]) -> Signature {
        let mut hasher = Sha1::new();
        for part in sorted {
            hasher.update(part.as_bytes());
        }
        Signature(hasher.finalize().into())
    }

    /// Parses 40 hexadecimal characters (either case).
    pub fn from_hex(hex: &str) -> Result<Signature, SignatureError> {
        let hex = hex.as_bytes();
        if hex.len() != 40 {
            return Err(SignatureError::Malformed);
        }
        let mut bytes = [0u8; 20];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            let high = hex_value(pair[0]).ok_or(SignatureError::Malformed)?;
            let low = hex_value(pair[1]).ok_or(SignatureError::Malformed)?;
            *byte = (high << 4) | low;
        }
        Ok(Signature(bytes))
    }

    /// The lower-case hex form WeChat uses.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(40);
        for byte in self.0 {
            out.push(DIGITS[usize::from(byte >> 4)] as char);
            out.push(DIGITS[usize::from(byte & 0x0f)] as char);
        }
        out
    }

    /// The raw 20 bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// Checks a presented hex signature against this expected one in constant time.
    ///
    /// Only the comparison of the 20 bytes is constant-time: the length and hex syntax of
    /// the presented value are public anyway.
    pub fn verify(&self, presented: &str) -> Result<(), SignatureError> {
        let presented = Signature::from_hex(presented)?;
        if bool::from(self.0.ct_eq(&presented.0)) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Signature {
    type Err = SignatureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Signature::from_hex(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_is_bytewise() {
        let token = Token::new("AAAAA").unwrap();
        let url = Signature::url(&token, "1715943329", "1590219412");
        assert_eq!(url.to_hex(), "cc0c594499c1634947d5b502f158ee518947db27");
        assert_eq!(
            url,
            Signature::compute(&["AAAAA", "1590219412", "1715943329"])
        );
    }

    #[test]
    fn verify_accepts_either_case_and_rejects_the_rest() {
        let sig = Signature::compute(&["a", "b", "c"]);
        assert!(sig
            .verify("a9993e364706816aba3e25717850c26c9cd0d89d")
            .is_ok());
        assert!(sig
            .verify("A9993E364706816ABA3E25717850C26C9CD0D89D")
            .is_ok());
        assert_eq!(
            sig.verify("a9993e364706816aba3e25717850c26c9cd0d89e"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(sig.verify(""), Err(SignatureError::Malformed));
        assert_eq!(
            sig.verify("a9993e364706816aba3e25717850c26c9cd0d89"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            sig.verify("g9993e364706816aba3e25717850c26c9cd0d89d"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            sig.verify("é9993e364706816aba3e25717850c26c9cd0d8"),
            Err(SignatureError::Malformed)
        );
    }
}
