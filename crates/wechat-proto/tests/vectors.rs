//! Every crypto and signature known-answer vector of `tests/data/vectors.json`
//! (a copy of the project's shared protocol vectors): signatures, byte-exact encryption
//! with the fixed random prefix, decryption, the negative cases, key derivations.
//!
//! Each section is driven by one `check_*` helper so a new vector is a data change only.
//! The XML samples are run by `tests/samples.rs`.

use serde_json::Value;
use wechat_proto::crypto::MessageCipher;
use wechat_proto::key::{AesKey, AppId, Token};
use wechat_proto::signature::Signature;
use wechat_proto::ErrorCode;

fn vectors() -> Value {
    let text = include_str!("data/vectors.json");
    serde_json::from_str(text).expect("vectors.json is valid JSON")
}

fn section(name: &str) -> Vec<Value> {
    let entries = vectors()[name].as_array().cloned().unwrap_or_default();
    assert!(!entries.is_empty(), "section {name} is missing or empty");
    entries
}

fn str_field<'a>(entry: &'a Value, field: &str) -> &'a str {
    entry[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {entry}"))
}

fn cipher(entry: &Value) -> MessageCipher {
    let key = AesKey::parse(str_field(entry, "encoding_aes_key")).expect("vector key parses");
    MessageCipher::new(&key, AppId::new(str_field(entry, "receive_id")).unwrap())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn url_signatures() {
    for entry in section("url_signature") {
        let expected = str_field(&entry, "expected_signature");
        let computed = match entry.get("parts") {
            Some(parts) => {
                let parts: Vec<&str> = parts
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap())
                    .collect();
                Signature::compute(&parts)
            }
            None => {
                let token = Token::new(str_field(&entry, "token")).unwrap();
                let sig = Signature::url(
                    &token,
                    str_field(&entry, "timestamp"),
                    str_field(&entry, "nonce"),
                );
                assert_eq!(
                    sig,
                    Signature::compute(&[
                        token.expose(),
                        str_field(&entry, "timestamp"),
                        str_field(&entry, "nonce")
                    ])
                );
                sig
            }
        };
        assert_eq!(computed.to_hex(), expected, "{}", entry["id"]);
        assert!(computed.verify(expected).is_ok(), "{}", entry["id"]);
        if let Some(negative) = entry.get("negative").and_then(Value::as_str) {
            let err = computed.verify(negative).unwrap_err();
            assert_eq!(err.code(), ErrorCode::ValidateSignature);
        }
    }
}

#[test]
fn message_signatures() {
    for entry in section("msg_signature") {
        let token = Token::new(str_field(&entry, "token")).unwrap();
        let (timestamp, encrypt) = (str_field(&entry, "timestamp"), str_field(&entry, "encrypt"));
        let sig = Signature::message(&token, timestamp, str_field(&entry, "nonce"), encrypt);
        assert_eq!(
            sig.to_hex(),
            str_field(&entry, "expected"),
            "{}",
            entry["id"]
        );
        if let Some(nonce) = entry.get("negative_nonce").and_then(Value::as_str) {
            let wrong = Signature::message(&token, timestamp, nonce, encrypt);
            assert!(wrong.verify(str_field(&entry, "expected")).is_err());
        }
    }
}

#[test]
fn decryption() {
    for entry in section("decrypt") {
        let id = &entry["id"];
        let cipher = cipher(&entry);
        let encrypt = str_field(&entry, "encrypt");
        let message = cipher
            .decrypt(encrypt)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let message = String::from_utf8(message).unwrap();
        let mut checked = 0;
        if let Some(expected) = entry.get("expected_msg").and_then(Value::as_str) {
            assert_eq!(message, expected, "{id}");
            checked += 1;
        }
        for part in entry["expected_contains"].as_array().into_iter().flatten() {
            assert!(message.contains(part.as_str().unwrap()), "{id}: {part}");
            checked += 1;
        }
        if let Some(len) = entry.get("expected_msg_len").and_then(Value::as_u64) {
            assert_eq!(message.len() as u64, len, "{id}");
        }
        assert!(checked > 0, "{id}: the vector states no expected message");

        let opened = cipher.open(encrypt).unwrap();
        assert_eq!(opened.message, message.as_bytes(), "{id}");
        assert_eq!(
            opened.receive_id,
            str_field(&entry, "receive_id").as_bytes(),
            "{id}"
        );
        if let Some(random) = entry.get("expected_random16").and_then(Value::as_str) {
            assert_eq!(opened.random, random.as_bytes(), "{id}");
        }
        if let Some(random) = entry.get("computed_random16_hex").and_then(Value::as_str) {
            assert_eq!(hex(&opened.random), random, "{id}");
        }
        // The pad length follows from the layout; check it where the vector states it.
        let fullstr = 16 + 4 + opened.message.len() + opened.receive_id.len();
        let ciphertext_len = (encrypt.len() / 4) * 3 - encrypt.matches('=').count();
        for key in ["expected_pad", "computed_pad"] {
            if let Some(pad) = entry.get(key).and_then(Value::as_u64) {
                assert_eq!((ciphertext_len - fullstr) as u64, pad, "{id}");
            }
        }
        for key in ["expected_ciphertext_bytes", "computed_ciphertext_bytes"] {
            if let Some(len) = entry.get(key).and_then(Value::as_u64) {
                assert_eq!(ciphertext_len as u64, len, "{id}");
            }
        }
    }
}

#[test]
fn byte_exact_encryption() {
    for entry in section("encrypt") {
        let id = &entry["id"];
        let cipher = cipher(&entry);
        let random: [u8; 16] = str_field(&entry, "random16").as_bytes().try_into().unwrap();
        let msg = str_field(&entry, "msg");
        let encrypt = cipher.encrypt(msg.as_bytes(), random);
        assert_eq!(encrypt, str_field(&entry, "expected_encrypt"), "{id}");
        assert_eq!(cipher.decrypt(&encrypt).unwrap(), msg.as_bytes(), "{id}");
        let ciphertext_len = (encrypt.len() / 4) * 3 - encrypt.matches('=').count();
        if let Some(len) = entry
            .get("expected_ciphertext_bytes")
            .and_then(Value::as_u64)
        {
            assert_eq!(ciphertext_len as u64, len, "{id}");
        }
        let fullstr = 16 + 4 + msg.len() + str_field(&entry, "receive_id").len();
        if let Some(len) = entry.get("expected_fullstr_bytes").and_then(Value::as_u64) {
            assert_eq!(fullstr as u64, len, "{id}");
        }
        if let Some(pad) = entry.get("expected_pad").and_then(Value::as_u64) {
            assert_eq!((ciphertext_len - fullstr) as u64, pad, "{id}");
        }
        if let Some(then) = entry.get("then_msg_signature") {
            let token = Token::new(str_field(then, "token")).unwrap();
            let sig = Signature::message(
                &token,
                str_field(then, "timestamp"),
                str_field(then, "nonce"),
                &encrypt,
            );
            assert_eq!(sig.to_hex(), str_field(then, "expected"), "{id}");
        }
    }
}

/// The `recommended` text names one or more acceptable codes, e.g. "reject: -40007/-40008".
fn recommended_codes(recommended: &str) -> Vec<i32> {
    recommended
        .split(|c: char| c != '-' && !c.is_ascii_digit())
        .filter_map(|word| word.parse::<i32>().ok())
        .filter(|code| *code <= -40001)
        .collect()
}

#[test]
fn negative_cases_are_rejected_with_the_recommended_code() {
    for entry in section("negative") {
        let id = &entry["id"];
        let codes = recommended_codes(str_field(&entry, "recommended"));
        assert!(!codes.is_empty(), "{id}: no code in `recommended`");
        let err = cipher(&entry)
            .decrypt(str_field(&entry, "encrypt"))
            .expect_err(&format!("{id} must be rejected"));
        assert!(
            codes.contains(&err.code().as_i32()),
            "{id}: got {} ({err}), want one of {codes:?}",
            err.code()
        );
    }
}

#[test]
fn key_derivations() {
    for entry in section("key_derivation") {
        let encoding = str_field(&entry, "encoding_aes_key");
        let key = AesKey::parse(encoding).unwrap();
        assert_eq!(hex(key.as_bytes()), str_field(&entry, "aes_key_hex"));
        assert_eq!(hex(&key.iv()), str_field(&entry, "iv_hex"));
        let canonical = entry["canonical_base64"].as_bool().unwrap();
        assert_eq!(
            key.to_encoding_aes_key() == encoding,
            canonical,
            "{encoding}"
        );
    }
}
