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
        sort_parts(&mut sorted);
        Self::digest(&sorted)
    }

    /// The URL `signature`: over token, timestamp and nonce.
    pub fn url(token: &Token, timestamp: &str, nonce: &str) -> Signature {
        let mut parts = [token.expose(), timestamp, nonce];
        sort_parts(&mut parts);
        Self::digest(&parts)
    }

    /// The `msg_signature`: over token, timestamp, nonce and the `Encrypt` text as found.
    pub fn message(token: &Token, timestamp: &str, nonce: &str, encrypt: &str) -> Signature {
        let mut parts = [token.expose(), timestamp, nonce, encrypt];
        sort_parts(&mut parts);
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
        // Every digit is looked up; one check at the end says whether any was not hex.
        let mut invalid = 0u8;
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            let high = HEX_VALUES[usize::from(pair[0])];
            let low = HEX_VALUES[usize::from(pair[1])];
            invalid |= (high | low) & NOT_HEX;
            *byte = (high << 4) | (low & 0x0f);
        }
        if invalid != 0 {
            return Err(SignatureError::Malformed);
        }
        Ok(Signature(bytes))
    }

    /// The lower-case hex form WeChat uses.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(40);
        self.write_hex(&mut out);
        out
    }

    /// Appends the lower-case hex form to `out`.
    pub fn write_hex(&self, out: &mut String) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 40];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        // Hex digits are ASCII, so this never fails.
        if let Ok(hex) = std::str::from_utf8(&hex) {
            out.push_str(hex);
        }
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
        if bool::from(ct_eq_20(&self.0, &presented.0)) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Sorts the parts as byte strings.
///
/// The protocol sorts three or four parts (a token, a timestamp, a nonce, base64) per
/// signature. Each part's first eight bytes are read once as a number, and a fixed
/// sorting network of compare-exchanges orders them: no `memcmp` calls and no
/// data-dependent loop. Parts whose first eight bytes are equal are compared in full.
fn sort_parts(parts: &mut [&str]) {
    match parts {
        [a, b, c] => {
            let mut keys = [key(a), key(b), key(c)];
            compare_exchange(&mut keys, 0, 1);
            compare_exchange(&mut keys, 1, 2);
            compare_exchange(&mut keys, 0, 1);
            [*a, *b, *c] = keys.map(|(_, part)| part);
        }
        [a, b, c, d] => {
            let mut keys = [key(a), key(b), key(c), key(d)];
            compare_exchange(&mut keys, 0, 1);
            compare_exchange(&mut keys, 2, 3);
            compare_exchange(&mut keys, 0, 2);
            compare_exchange(&mut keys, 1, 3);
            compare_exchange(&mut keys, 1, 2);
            [*a, *b, *c, *d] = keys.map(|(_, part)| part);
        }
        _ => parts.sort_unstable(),
    }
}

/// A part with its sort key, the number made of its first eight bytes.
#[inline(always)]
fn key<'p>(part: &&'p str) -> (u64, &'p str) {
    (prefix(part.as_bytes()), part)
}

/// Puts `keys[i]` and `keys[j]` in order, choosing rather than branching on the order.
#[inline(always)]
fn compare_exchange<const N: usize>(keys: &mut [(u64, &str); N], i: usize, j: usize) {
    let (a, b) = (keys[i], keys[j]);
    let swap = a.0 > b.0 || (a.0 == b.0 && a.1 > b.1);
    keys[i] = if swap { b } else { a };
    keys[j] = if swap { a } else { b };
}

/// The first eight bytes of `bytes` as a big-endian number, zero-padded.
///
/// Comparing these numbers agrees with comparing the byte strings whenever they differ:
/// where two padded prefixes first differ, either both bytes are real, or one string has
/// ended there and is a prefix of the other, so it is the smaller one.
fn prefix(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    match bytes.get(..8) {
        Some(head) => word.copy_from_slice(head),
        None => {
            for (slot, &byte) in word.iter_mut().zip(bytes) {
                *slot = byte;
            }
        }
    }
    u64::from_be_bytes(word)
}

/// [`HEX_VALUES`] marker of a byte that is not a hexadecimal digit.
const NOT_HEX: u8 = 0x80;

/// The value of every hexadecimal digit (either case), [`NOT_HEX`] for other bytes.
static HEX_VALUES: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 10 {
        table[b'0' as usize + digit] = digit as u8;
        digit += 1;
    }
    let mut letter = 0;
    while letter < 6 {
        table[b'a' as usize + letter] = 10 + letter as u8;
        table[b'A' as usize + letter] = 10 + letter as u8;
        letter += 1;
    }
    table
};

/// Compares two digests in constant time, as three machine words rather than twenty
/// bytes (each `subtle` comparison ends in an optimisation barrier).
fn ct_eq_20(a: &[u8; 20], b: &[u8; 20]) -> subtle::Choice {
    let words = |d: &[u8; 20]| {
        let mut first = [0u8; 8];
        let mut second = [0u8; 8];
        let mut third = [0u8; 4];
        first.copy_from_slice(&d[..8]);
        second.copy_from_slice(&d[8..16]);
        third.copy_from_slice(&d[16..]);
        (
            u64::from_ne_bytes(first),
            u64::from_ne_bytes(second),
            u32::from_ne_bytes(third),
        )
    };
    let (a0, a1, a2) = words(a);
    let (b0, b1, b2) = words(b);
    a0.ct_eq(&b0) & a1.ct_eq(&b1) & a2.ct_eq(&b2)
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
