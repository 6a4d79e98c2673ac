//! Property tests of the message crypto: round trips for arbitrary keys, AppIDs and
//! messages, and no panic for arbitrary input to the decryptor or the key parser.

use proptest::prelude::*;
use sha1::Digest;
use wechat_proto::crypto::{CryptoError, MessageCipher};
use wechat_proto::key::{AesKey, AppId, Token};
use wechat_proto::signature::Signature;

/// A part of a signature: short strings with shared prefixes, digits, NULs and
/// non-ASCII, so that sorting meets equal first bytes, prefixes and ties.
fn signature_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,12}",
        "(abcdefgh|abcdefg|1409735)[a-c0-2\\x00]{0,4}",
        "[a-zA-Z0-9+/=\\x00é]{0,20}",
        Just(String::new()),
    ]
}

fn app_id() -> impl Strategy<Value = AppId> {
    "[!-~]{1,64}".prop_map(|id| AppId::new(id).expect("printable ASCII is a valid AppID"))
}

proptest! {
    #[test]
    fn encrypt_then_decrypt_round_trips(
        key in any::<[u8; 32]>(),
        app_id in app_id(),
        random in any::<[u8; 16]>(),
        message in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let key = AesKey::from_bytes(key);
        let reparsed = AesKey::parse(&key.to_encoding_aes_key()).unwrap();
        prop_assert_eq!(&reparsed, &key);
        let cipher = MessageCipher::new(&key, app_id.clone());
        let encrypt = cipher.encrypt(&message, random);
        prop_assert_eq!(encrypt.len(), cipher.encrypted_len(message.len()));
        let raw_len = (encrypt.len() / 4) * 3 - encrypt.matches('=').count();
        prop_assert_eq!(raw_len % 32, 0);
        prop_assert_eq!(cipher.decrypt(&encrypt).unwrap(), message.clone());
        let opened = cipher.open(&encrypt).unwrap();
        prop_assert_eq!(opened.random, random);
        prop_assert_eq!(opened.receive_id, app_id.as_str().as_bytes());
    }

    #[test]
    fn another_app_id_is_refused(
        key in any::<[u8; 32]>(),
        message in ".{0,64}",
        (a, b) in (app_id(), app_id()).prop_filter("distinct", |(a, b)| a != b),
    ) {
        let key = AesKey::from_bytes(key);
        let encrypt = MessageCipher::new(&key, a).encrypt(message.as_bytes(), [1; 16]);
        let err = MessageCipher::new(&key, b).decrypt(&encrypt).unwrap_err();
        let is_receive_id = matches!(err, CryptoError::ReceiveId { .. });
        prop_assert!(is_receive_id);
    }

    #[test]
    fn decrypt_never_panics(key in any::<[u8; 32]>(), encrypt in ".{0,400}") {
        let cipher = MessageCipher::new(&AesKey::from_bytes(key), AppId::new("wx1").unwrap());
        let _ = cipher.decrypt(&encrypt);
        let _ = cipher.open(&encrypt);
    }

    #[test]
    fn decrypt_never_panics_on_aligned_ciphertexts(
        key in any::<[u8; 32]>(),
        blocks in proptest::collection::vec(any::<[u8; 32]>(), 1..8),
    ) {
        use base64::Engine;
        let raw: Vec<u8> = blocks.concat();
        let encrypt = base64::engine::general_purpose::STANDARD.encode(raw);
        let cipher = MessageCipher::new(&AesKey::from_bytes(key), AppId::new("wx1").unwrap());
        // Random blocks almost never carry a valid pad, length and AppID together.
        if let Err(err) = cipher.decrypt(&encrypt) {
            prop_assert!(err.code().as_i32() <= -40005);
        }
    }

    #[test]
    fn signatures_sort_their_parts_as_byte_strings(
        parts in proptest::collection::vec(signature_part(), 0..6),
    ) {
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut sorted = parts.clone();
        sorted.sort_unstable();
        let expected: [u8; 20] = sha1::Sha1::digest(sorted.concat().as_bytes()).into();
        prop_assert_eq!(*Signature::compute(&parts).as_bytes(), expected);
        if let [token, timestamp, nonce, rest @ ..] = parts.as_slice() {
            let Ok(token) = Token::new(*token) else { return Ok(()) };
            let url = Signature::url(&token, timestamp, nonce);
            prop_assert_eq!(url, Signature::compute(&[token.expose(), timestamp, nonce]));
            if let [encrypt, ..] = rest {
                let message = Signature::message(&token, timestamp, nonce, encrypt);
                let all = [token.expose(), timestamp, nonce, encrypt];
                prop_assert_eq!(message, Signature::compute(&all));
                let mut sorted = all;
                sorted.sort_unstable();
                let expected: [u8; 20] = sha1::Sha1::digest(sorted.concat().as_bytes()).into();
                prop_assert_eq!(*message.as_bytes(), expected);
            }
        }
    }

    #[test]
    fn hex_signatures_parse_exactly_the_hex_digits(text in "[0-9a-fA-F]{40}|[0-9a-fA-Fg\\x00é/:@`G]{38,42}") {
        let expected = if text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes: Vec<u8> = (0..20)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            Some(bytes)
        } else {
            None
        };
        let parsed = Signature::from_hex(&text).ok().map(|s| s.as_bytes().to_vec());
        prop_assert_eq!(&parsed, &expected);
        if let Some(bytes) = expected {
            let signature = Signature::from_hex(&text).unwrap();
            prop_assert_eq!(signature.to_hex(), text.to_ascii_lowercase());
            prop_assert!(signature.verify(&text).is_ok());
            let mut other = bytes.clone();
            other[19] ^= 1;
            let other: String = other.iter().map(|b| format!("{b:02x}")).collect();
            prop_assert!(signature.verify(&other).is_err());
        }
    }

    #[test]
    fn key_parser_and_signature_parser_never_panic(text in "\\PC{0,64}") {
        let _ = AesKey::parse(&text);
        let _ = Signature::from_hex(&text);
    }
}
