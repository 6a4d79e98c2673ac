//! Property tests of the message crypto: round trips for arbitrary keys, AppIDs and
//! messages, and no panic for arbitrary input to the decryptor or the key parser.

use proptest::prelude::*;
use wechat_proto::crypto::{CryptoError, MessageCipher};
use wechat_proto::key::{AesKey, AppId};
use wechat_proto::signature::Signature;

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
    fn key_parser_and_signature_parser_never_panic(text in "\\PC{0,64}") {
        let _ = AesKey::parse(&text);
        let _ = Signature::from_hex(&text);
    }
}
