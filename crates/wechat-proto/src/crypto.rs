//! The WXBizMsgCrypt message crypto: AES-256-CBC with PKCS#7 over 32-byte blocks.
//!
//! Plaintext layout (docs/protocol.md §4.2):
//! `random(16) || msg_len (u32 big-endian) || msg || receive_id`, padded with PKCS#7 to a
//! multiple of **32** bytes (not AES's 16, which is why the padding is done by hand here and
//! a cipher library's built-in PKCS#7 must not be used). IV = key[..16].
//!
//! Decryption is strict: the ciphertext is a multiple of 32 bytes, the pad byte is in
//! 1..=32 and every pad byte equals it, the declared message length fits the buffer, and
//! the receive id equals the configured AppID exactly. Every failure is a [`CryptoError`]
//! carrying its official code. The random prefix is an argument: this crate draws no
//! randomness.
//!
//! Decryption is only ever attempted after `msg_signature` has been verified, so the
//! distinct padding errors are not a padding oracle for anyone without the token.

use std::fmt;

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use aes::Aes256;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::key::{AesKey, AppId};
use crate::ErrorCode;

/// The PKCS#7 block size of the protocol.
pub const PAD_BLOCK: usize = 32;

/// The random prefix length.
pub const RANDOM_LEN: usize = 16;

/// Bytes before the message: the random prefix and the 4-byte length.
const HEADER_LEN: usize = RANDOM_LEN + 4;

/// [`HEADER_LEN`] bytes of text, replaced by the header once the message is written.
const HEADER_PLACEHOLDER: &str = "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
const _: () = assert!(HEADER_PLACEHOLDER.len() == HEADER_LEN);

/// `Encrypt` is standard base64; `=` padding is tolerated when missing.
const ENCRYPT_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a ciphertext was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// `Encrypt` is not valid base64 (-40010).
    Base64,
    /// The ciphertext is empty or not a multiple of 32 bytes (-40007).
    CiphertextLength {
        /// The decoded length in bytes.
        len: usize,
    },
    /// The last byte is not a pad length in 1..=32, or the pad bytes differ (-40008).
    Padding {
        /// The last plaintext byte.
        pad: u8,
    },
    /// The declared message length does not fit the decrypted buffer (-40008).
    MessageLength {
        /// `msg_len` as found in the plaintext.
        declared: u32,
        /// The bytes available for message and receive id.
        available: usize,
    },
    /// The receive id is not the configured AppID (-40005).
    ReceiveId {
        /// The receive id found, lossily decoded (an AppID is not secret).
        found: String,
    },
}

impl CryptoError {
    /// The official WXBizMsgCrypt code.
    pub fn code(&self) -> ErrorCode {
        match self {
            CryptoError::Base64 => ErrorCode::DecodeBase64,
            CryptoError::CiphertextLength { .. } => ErrorCode::DecryptAes,
            CryptoError::Padding { .. } | CryptoError::MessageLength { .. } => {
                ErrorCode::IllegalBuffer
            }
            CryptoError::ReceiveId { .. } => ErrorCode::ValidateAppid,
        }
    }
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::Base64 => f.write_str("Encrypt is not valid base64"),
            CryptoError::CiphertextLength { len } => {
                write!(
                    f,
                    "ciphertext of {len} bytes is not a non-empty multiple of 32"
                )
            }
            CryptoError::Padding { pad } => write!(f, "invalid PKCS#7 padding (last byte {pad})"),
            CryptoError::MessageLength {
                declared,
                available,
            } => write!(
                f,
                "declared message length {declared} exceeds the {available} bytes available"
            ),
            CryptoError::ReceiveId { found } => {
                write!(f, "receive id {found:?} is not the configured AppID")
            }
        }
    }
}

impl std::error::Error for CryptoError {}

/// A decrypted buffer split into its parts, before the receive-id check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plaintext {
    /// The 16 random bytes the sender chose.
    pub random: [u8; 16],
    /// The message (an XML document, or an `echostr` for WeCom).
    pub message: Vec<u8>,
    /// The receive id: the AppID the sender encrypted for.
    pub receive_id: Vec<u8>,
}

/// One account's message crypto: the expanded AES key and the AppID, built once.
#[derive(Clone)]
pub struct MessageCipher {
    cipher: Aes256,
    iv: [u8; 16],
    app_id: AppId,
}

impl fmt::Debug for MessageCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageCipher")
            .field("key", &"<redacted>")
            .field("app_id", &self.app_id)
            .finish()
    }
}

impl MessageCipher {
    /// Expands the key once; every message of the account reuses it.
    pub fn new(key: &AesKey, app_id: AppId) -> MessageCipher {
        MessageCipher {
            cipher: Aes256::new(key.as_bytes().into()),
            iv: key.iv(),
            app_id,
        }
    }

    /// The AppID written into and expected inside every ciphertext.
    pub fn app_id(&self) -> &AppId {
        &self.app_id
    }

    /// Encrypts `message` for this AppID with the given random prefix; returns `Encrypt`.
    pub fn encrypt(&self, message: &[u8], random: [u8; RANDOM_LEN]) -> String {
        let mut out = String::with_capacity(self.encrypted_len(message.len()));
        self.encrypt_into(message, random, &mut out);
        out
    }

    /// The length of the `Encrypt` text [`MessageCipher::encrypt`] returns for a message
    /// of `message_len` bytes, so that callers can size their buffers once.
    pub fn encrypted_len(&self, message_len: usize) -> usize {
        let unpadded = HEADER_LEN
            .saturating_add(message_len)
            .saturating_add(self.app_id.as_str().len());
        let padded = (unpadded / PAD_BLOCK)
            .saturating_add(1)
            .saturating_mul(PAD_BLOCK);
        // Standard base64 with padding: four characters per started group of three bytes.
        padded.div_ceil(3).saturating_mul(4)
    }

    /// Like [`MessageCipher::encrypt`], appending the base64 text to `out`.
    pub fn encrypt_into(&self, message: &[u8], random: [u8; RANDOM_LEN], out: &mut String) {
        let mut buffer = Vec::with_capacity(self.buffer_len(message.len()));
        buffer.extend_from_slice(&[0; HEADER_LEN]);
        buffer.extend_from_slice(message);
        self.seal_buffer(buffer, random, out);
    }

    /// Encrypts the message `write` appends to an empty-looking `String`, appending the
    /// base64 text to `out`: the message is written straight into the buffer that is then
    /// encrypted in place, instead of being built in a string of its own and copied.
    ///
    /// `write` must only append (it is the crate's own writers); `capacity` is a hint of
    /// the message length. If `write` fails, nothing is appended to `out`.
    pub(crate) fn encrypt_written<E>(
        &self,
        random: [u8; RANDOM_LEN],
        capacity: usize,
        write: impl FnOnce(&mut String) -> Result<(), E>,
        out: &mut String,
    ) -> Result<(), E> {
        let mut plaintext = String::with_capacity(self.buffer_len(capacity));
        // Room for the random prefix and the length, filled in below.
        plaintext.push_str(HEADER_PLACEHOLDER);
        write(&mut plaintext)?;
        self.seal_buffer(plaintext.into_bytes(), random, out);
        Ok(())
    }

    /// The capacity of an encryption buffer for a message of `message_len` bytes: header,
    /// message, receive id and padding, then the base64 text of all that.
    fn buffer_len(&self, message_len: usize) -> usize {
        let padded = (HEADER_LEN + message_len + self.app_id.as_str().len()) / PAD_BLOCK
            * PAD_BLOCK
            + PAD_BLOCK;
        padded + padded.div_ceil(3) * 4
    }

    /// Fills in the header of `buffer` (room for it, then the message), appends the
    /// receive id and the padding, encrypts in place and appends the base64 text to `out`.
    fn seal_buffer(&self, mut buffer: Vec<u8>, random: [u8; RANDOM_LEN], out: &mut String) {
        let message_len = buffer.len().saturating_sub(HEADER_LEN);
        // The protocol's length field is 32 bits; a longer message cannot be expressed and
        // cannot occur (request bodies are capped far below 4 GiB).
        let declared = u32::try_from(message_len).unwrap_or(u32::MAX);
        if let Some(header) = buffer.get_mut(..HEADER_LEN) {
            header[..RANDOM_LEN].copy_from_slice(&random);
            header[RANDOM_LEN..].copy_from_slice(&declared.to_be_bytes());
        }
        buffer.extend_from_slice(self.app_id.as_str().as_bytes());
        let unpadded = buffer.len();
        // n in 1..=32: an aligned buffer gets a whole extra block of 32 bytes of 32.
        let pad = PAD_BLOCK - unpadded % PAD_BLOCK;
        buffer.resize(unpadded + pad, pad as u8);
        let len = buffer.len();
        // The expanded key is borrowed, not cloned: it is hundreds of bytes.
        let encryptor = cbc::Encryptor::<&Aes256>::inner_iv_init(&self.cipher, &self.iv.into());
        // The buffer is a multiple of 32 by construction, so NoPadding cannot fail.
        if encryptor
            .encrypt_padded_mut::<NoPadding>(&mut buffer, len)
            .is_err()
        {
            return;
        }
        // The base64 text is encoded behind the ciphertext in the same buffer (sized for
        // it by the callers), then appended: no buffer of its own, no chunking.
        let encoded_len = base64::encoded_len(len, true).unwrap_or(0);
        buffer.resize(len + encoded_len, 0);
        let (ciphertext, encoded) = buffer.split_at_mut(len);
        if let Ok(written) = STANDARD.encode_slice(ciphertext, encoded) {
            // Base64 is ASCII, so this never fails.
            if let Ok(text) = std::str::from_utf8(encoded.get(..written).unwrap_or_default()) {
                out.push_str(text);
            }
        }
    }

    /// Decrypts `Encrypt` and checks the receive id; returns the message bytes.
    pub fn decrypt(&self, encrypt: &str) -> Result<Vec<u8>, CryptoError> {
        let (mut buffer, range, receive_id) = self.decrypt_raw(encrypt)?;
        if buffer.get(receive_id.clone()) != Some(self.app_id.as_str().as_bytes()) {
            let found = buffer.get(receive_id).unwrap_or_default();
            return Err(CryptoError::ReceiveId {
                found: String::from_utf8_lossy(found).into_owned(),
            });
        }
        let len = range.len();
        buffer.copy_within(range, 0);
        buffer.truncate(len);
        Ok(buffer)
    }

    /// Decrypts `Encrypt` without checking the receive id (for debugging tools that show
    /// which AppID a capture was made for).
    pub fn open(&self, encrypt: &str) -> Result<Plaintext, CryptoError> {
        let (buffer, range, receive_id) = self.decrypt_raw(encrypt)?;
        let mut random = [0u8; RANDOM_LEN];
        random.copy_from_slice(&buffer[..RANDOM_LEN]);
        Ok(Plaintext {
            random,
            message: buffer[range].to_vec(),
            receive_id: buffer[receive_id].to_vec(),
        })
    }

    /// Base64-decodes, decrypts in place and strips the padding; returns the buffer with
    /// the byte ranges of the message and of the receive id.
    #[allow(
        clippy::type_complexity,
        reason = "private helper returning a buffer and two views"
    )]
    fn decrypt_raw(
        &self,
        encrypt: &str,
    ) -> Result<(Vec<u8>, std::ops::Range<usize>, std::ops::Range<usize>), CryptoError> {
        let mut buffer = Vec::with_capacity(encrypt.len() / 4 * 3 + 3);
        ENCRYPT_ENGINE
            .decode_vec(encrypt.as_bytes(), &mut buffer)
            .map_err(|_| CryptoError::Base64)?;
        let len = buffer.len();
        if len == 0 || len % PAD_BLOCK != 0 {
            return Err(CryptoError::CiphertextLength { len });
        }
        let decryptor = cbc::Decryptor::<&Aes256>::inner_iv_init(&self.cipher, &self.iv.into());
        decryptor
            .decrypt_padded_mut::<NoPadding>(&mut buffer)
            .map_err(|_| CryptoError::CiphertextLength { len })?;

        let pad = buffer[len - 1];
        let pad_len = usize::from(pad);
        if !(1..=PAD_BLOCK).contains(&pad_len) || buffer[len - pad_len..].iter().any(|&b| b != pad)
        {
            return Err(CryptoError::Padding { pad });
        }
        let unpadded = len - pad_len;
        let available = unpadded.saturating_sub(HEADER_LEN);
        let declared = if unpadded >= HEADER_LEN {
            u32::from_be_bytes([buffer[16], buffer[17], buffer[18], buffer[19]])
        } else {
            return Err(CryptoError::MessageLength {
                declared: 0,
                available,
            });
        };
        let message_len = usize::try_from(declared).unwrap_or(usize::MAX);
        if message_len > available {
            return Err(CryptoError::MessageLength {
                declared,
                available,
            });
        }
        let message_end = HEADER_LEN + message_len;
        Ok((buffer, HEADER_LEN..message_end, message_end..unpadded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(app_id: &str) -> MessageCipher {
        let key = AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        MessageCipher::new(&key, AppId::new(app_id).unwrap())
    }

    #[test]
    fn round_trip_and_wrong_app_id() {
        let sender = cipher("wxb11529c136998cb6");
        let encrypt = sender.encrypt("<xml>hi</xml>".as_bytes(), *b"aaaabbbbccccdddd");
        assert_eq!(sender.decrypt(&encrypt).unwrap(), b"<xml>hi</xml>");
        let other = cipher("wx_other");
        let err = other.decrypt(&encrypt).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidateAppid);
        let opened = other.open(&encrypt).unwrap();
        assert_eq!(opened.receive_id, b"wxb11529c136998cb6");
        assert_eq!(&opened.random, b"aaaabbbbccccdddd");
    }

    #[test]
    fn short_and_empty_ciphertexts_are_typed_errors() {
        let c = cipher("wx");
        assert_eq!(
            c.decrypt("").unwrap_err(),
            CryptoError::CiphertextLength { len: 0 }
        );
        assert_eq!(c.decrypt("!!!!").unwrap_err(), CryptoError::Base64);
        // 32 bytes of anything decrypt to some garbage that must fail a check, not panic.
        let junk = STANDARD.encode([7u8; 32]);
        assert!(c.decrypt(&junk).is_err());
    }
}
