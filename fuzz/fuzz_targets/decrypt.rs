//! `MessageCipher::decrypt` and `open` on arbitrary input must never panic.
//!
//! The first byte picks the mode, so one corpus covers all of them:
//! - 0: the rest is the `Encrypt` text, fixed key.
//! - 1: the rest is the ciphertext (base64-encoded here), fixed key: reaches the length
//!   and padding checks without the fuzzer having to learn base64.
//! - 2: the rest is the *plaintext* buffer, AES-encrypted here without padding: reaches the
//!   pad, message-length and receive-id checks with inputs the fuzzer controls.
//! - 3: the first 32 bytes are the key, the rest the `Encrypt` text.
//! - otherwise: the first 32 bytes are the key, the rest a message that must survive
//!   `encrypt` then `decrypt`.
#![no_main]

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use wechat_proto::{AesKey, AppId, CryptoError, MessageCipher};

const ENCODING_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx2c2769f8efd9abc2";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixed_key = AesKey::parse(ENCODING_AES_KEY).expect("the sample key parses");
    match mode {
        0 => decrypt_both(&fixed_key, &String::from_utf8_lossy(rest)),
        1 => decrypt_both(&fixed_key, &STANDARD.encode(rest)),
        2 => {
            // CBC without padding needs whole 16-byte blocks; drop the tail.
            let mut buffer = rest[..rest.len() / 16 * 16].to_vec();
            let key = fixed_key.as_bytes();
            let len = buffer.len();
            cbc::Encryptor::<aes::Aes256>::new(key.into(), key[..16].into())
                .encrypt_padded_mut::<NoPadding>(&mut buffer, len)
                .expect("whole blocks");
            decrypt_both(&fixed_key, &STANDARD.encode(&buffer));
        }
        _ => {
            let Some((key, rest)) = rest.split_first_chunk::<32>() else {
                return;
            };
            let key = AesKey::from_bytes(*key);
            if mode == 3 {
                decrypt_both(&key, &String::from_utf8_lossy(rest));
            } else {
                let cipher = MessageCipher::new(&key, AppId::new(APP_ID).expect("app id"));
                let random = [mode; 16];
                let encrypt = cipher.encrypt(rest, random);
                assert_eq!(cipher.decrypt(&encrypt).expect("round trip"), rest);
                let opened = cipher.open(&encrypt).expect("open");
                assert_eq!(opened.random, random);
                assert_eq!(opened.receive_id, APP_ID.as_bytes());
            }
        }
    }
});

/// Both decryption entry points; when `decrypt` succeeds, `open` must agree with it.
fn decrypt_both(key: &AesKey, encrypt: &str) {
    let cipher = MessageCipher::new(key, AppId::new(APP_ID).expect("app id"));
    let decrypted = cipher.decrypt(encrypt);
    let opened = cipher.open(encrypt);
    match (&decrypted, &opened) {
        (Ok(message), Ok(plaintext)) => {
            assert_eq!(message, &plaintext.message);
            assert_eq!(plaintext.receive_id, APP_ID.as_bytes());
        }
        (Err(error), Ok(plaintext)) => {
            // Only the receive id may tell them apart.
            assert!(matches!(error, CryptoError::ReceiveId { .. }), "{error}");
            assert_ne!(plaintext.receive_id, APP_ID.as_bytes(), "{error}");
        }
        (Ok(_), Err(error)) => panic!("decrypt accepted what open refused: {error}"),
        (Err(a), Err(b)) => assert_eq!(a, b),
    }
}
