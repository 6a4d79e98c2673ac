//! The official WXBizMsgCrypt error codes.
//!
//! These are library return values of Tencent's sample code, never sent to WeChat. Every
//! typed error of this crate maps onto one of them so that logs and metrics speak the same
//! language as WeChat's own documentation.

use std::fmt;

/// An official WXBizMsgCrypt error code (`ierror` in Tencent's samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorCode {
    /// -40001: a signature did not match.
    ValidateSignature,
    /// -40002: the XML could not be parsed, or `Encrypt` was missing.
    ParseXml,
    /// -40003: the signature could not be computed.
    ComputeSignature,
    /// -40004: the EncodingAESKey is not 43 characters decoding to 32 bytes.
    IllegalAesKey,
    /// -40005: the receive id inside the ciphertext is not the configured AppID.
    ValidateAppid,
    /// -40006: AES encryption failed.
    EncryptAes,
    /// -40007: AES decryption failed (bad ciphertext length, …).
    DecryptAes,
    /// -40008: the decrypted buffer is malformed (padding, message length).
    IllegalBuffer,
    /// -40009: base64 encoding failed.
    EncodeBase64,
    /// -40010: base64 decoding failed.
    DecodeBase64,
    /// -40011: the reply XML could not be built.
    GenReturnXml,
}

impl ErrorCode {
    /// Every code, in numeric order from -40001 down.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::ValidateSignature,
        ErrorCode::ParseXml,
        ErrorCode::ComputeSignature,
        ErrorCode::IllegalAesKey,
        ErrorCode::ValidateAppid,
        ErrorCode::EncryptAes,
        ErrorCode::DecryptAes,
        ErrorCode::IllegalBuffer,
        ErrorCode::EncodeBase64,
        ErrorCode::DecodeBase64,
        ErrorCode::GenReturnXml,
    ];

    /// The numeric code, e.g. `-40001`.
    pub const fn as_i32(self) -> i32 {
        match self {
            ErrorCode::ValidateSignature => -40001,
            ErrorCode::ParseXml => -40002,
            ErrorCode::ComputeSignature => -40003,
            ErrorCode::IllegalAesKey => -40004,
            ErrorCode::ValidateAppid => -40005,
            ErrorCode::EncryptAes => -40006,
            ErrorCode::DecryptAes => -40007,
            ErrorCode::IllegalBuffer => -40008,
            ErrorCode::EncodeBase64 => -40009,
            ErrorCode::DecodeBase64 => -40010,
            ErrorCode::GenReturnXml => -40011,
        }
    }

    /// The name used by the official samples, e.g. `ValidateSignature_Error`.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::ValidateSignature => "ValidateSignature_Error",
            ErrorCode::ParseXml => "ParseXml_Error",
            ErrorCode::ComputeSignature => "ComputeSignature_Error",
            ErrorCode::IllegalAesKey => "IllegalAesKey",
            ErrorCode::ValidateAppid => "ValidateAppid_Error",
            ErrorCode::EncryptAes => "EncryptAES_Error",
            ErrorCode::DecryptAes => "DecryptAES_Error",
            ErrorCode::IllegalBuffer => "IllegalBuffer",
            ErrorCode::EncodeBase64 => "EncodeBase64_Error",
            ErrorCode::DecodeBase64 => "DecodeBase64_Error",
            ErrorCode::GenReturnXml => "GenReturnXml_Error",
        }
    }

    /// The code for a number, if it is one of the official ones.
    pub fn from_i32(code: i32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_i32() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_i32(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_consecutive_and_round_trip() {
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code.as_i32(), -40001 - i as i32);
            assert_eq!(ErrorCode::from_i32(code.as_i32()), Some(code));
        }
        assert_eq!(ErrorCode::from_i32(0), None);
    }
}
