//! Known-answer tests for request authentication (`wechat_proto::auth`): one test per
//! rule, each with the exact error, its HTTP class and its official code.
//!
//! The fixed points are the official examples: the Open Platform doc's safe-mode push
//! (token `AAAAA`, the query string and body as published) and the OA Python sample's
//! compatible-mode body (token `spamtest`). Requests the examples do not cover are built
//! with the crate's own encryption and a fixed random prefix.

use std::time::Duration;

use wechat_proto::auth::{AuthError, Endpoint, Freshness, KeyUsed, Mode, Query, Refusal};
use wechat_proto::crypto::CryptoError;
use wechat_proto::signature::SignatureError;
use wechat_proto::{AesKey, AppId, ErrorCode, MessageCipher, RequestEnvelope, Token};

/// The Open Platform doc's safe-mode example (docs/protocol.md §3.1).
const DOC_QUERY: &str = "signature=cc0c594499c1634947d5b502f158ee518947db27&timestamp=1715943329\
    &nonce=1590219412&openid=o9AgO5Kd5ggOC-bXrbNODIiE3bGY&encrypt_type=aes\
    &msg_signature=6c12a4205838198b8fa631b3220723bb07f1015c";
const DOC_TIME: i64 = 1715943329;
const DOC_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const DOC_APP_ID: &str = "wx134c8103faa5a59e";
const DOC_ENCRYPT: &str = "D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQXicwaZC7fOVihW80F4VtsdvE//1vr7oAbqjDv8KenVp+ajKYpJnyQ4zMRhIC+a31fCVOMC03FfzV/QuC94kBP55a+Za3sJgvAn+ZbsNqZI5DkyuzkhQN8OBqCzFhizGmy0xpM0MEA4agpvE+RuNO1rhHTtuJB5yltw1FiYzecSXJ+y/D2r81VkRn2eYjh2ltsoyfbDR7Is6ookXIFxTfyeNyeHxMeT4KN5WpCDmSbTcUYrbBUlkGLJ9n/rU8YOywma6G7aTb7KZKOqCxgfoUlYEZPk4FUL/TK7ShriFDMVCLyjQJ15Ob++agDWtcxhfUfe6HIoIpRW8mKNBQiY/Jd1svvuskA1wLef1RTtzKfMpagSCX/laZINmdnX4zrF6kIaR9P4xQrWXbsTFHTYe0Mg==";
const DOC_MESSAGE: &str = "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>\n\
    <FromUserName><![CDATA[o9AgO5Kd5ggOC-bXrbNODIiE3bGY]]></FromUserName>\n\
    <CreateTime>1715943329</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n\
    <Event><![CDATA[debug_demo]]></Event>\n<debug_str><![CDATA[hello world]]></debug_str>\n</xml>";
/// Another key, for rotations.
const OTHER_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn doc_body() -> String {
    format!(
        "<xml>\n    <ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>\n    \
         <Encrypt><![CDATA[{DOC_ENCRYPT}]]></Encrypt>\n</xml>"
    )
}

fn key(text: &str) -> AesKey {
    AesKey::parse(text).unwrap()
}

fn endpoint(mode: Mode) -> Endpoint {
    Endpoint::new(
        Token::new("AAAAA").unwrap(),
        AppId::new(DOC_APP_ID).unwrap(),
        mode,
    )
    .with_key(&key(DOC_KEY))
}

fn doc_query() -> Query {
    Query::parse(DOC_QUERY).unwrap()
}

/// A safe-mode request of `message` for `app_id` with `key`, signed with token `AAAAA`.
fn encrypted_request(
    message: &str,
    key_text: &str,
    app_id: &str,
    timestamp: i64,
) -> (Query, String) {
    let cipher = MessageCipher::new(&key(key_text), AppId::new(app_id).unwrap());
    let encrypt = cipher.encrypt(message.as_bytes(), [7; 16]);
    let token = Token::new("AAAAA").unwrap();
    let query = Query::message(&token, &timestamp.to_string(), "42", Some(&encrypt));
    let body = RequestEnvelope {
        to_user_name: Some("gh_1".into()),
        encrypt,
    }
    .to_xml();
    (query, body)
}

fn plain_request(message: &str, timestamp: i64) -> (Query, String) {
    let token = Token::new("AAAAA").unwrap();
    (
        Query::message(&token, &timestamp.to_string(), "42", None),
        message.to_owned(),
    )
}

/// Asserts the error, its class and its official code.
fn refused(
    result: Result<wechat_proto::auth::Authenticated, AuthError>,
    expected: AuthError,
    refusal: Refusal,
    code: Option<ErrorCode>,
) {
    let error = result.expect_err("the request must be refused");
    assert_eq!(error, expected);
    assert_eq!(error.refusal(), refusal, "{error}");
    assert_eq!(error.code(), code, "{error}");
}

#[test]
fn the_official_safe_mode_push_authenticates() {
    let authenticated = endpoint(Mode::Safe)
        .authenticate(&doc_query(), doc_body().as_bytes(), DOC_TIME)
        .unwrap();
    assert_eq!(String::from_utf8(authenticated.xml).unwrap(), DOC_MESSAGE);
    assert!(authenticated.encrypted);
    assert_eq!(authenticated.key, Some(KeyUsed::Current));
    assert_eq!(authenticated.timestamp, "1715943329");
    assert_eq!(authenticated.nonce, "1590219412");
}

#[test]
fn a_compatible_mode_body_yields_the_decrypted_copy_not_the_clear_fields() {
    // The OA Python sample, with its clear Content replaced by a forgery: the clear fields
    // are covered by no signature.
    let encrypt = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";
    let token = Token::new("spamtest").unwrap();
    let query = Query::message(&token, "1409735669", "1320562132", Some(encrypt));
    assert_eq!(
        query.msg_signature.as_deref(),
        Some("5d197aaffba7e9b25a30732f161a50dee96bd5fa"),
        "the sample's msg_signature"
    );
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\
         <FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>\
         <CreateTime>1409735668</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content><![CDATA[forged]]></Content><MsgId>6054768590064713728</MsgId>\
         <Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );
    let endpoint = Endpoint::new(
        token,
        AppId::new("wx2c2769f8efd9abc2").unwrap(),
        Mode::Compatible,
    )
    .with_key(&key(OTHER_KEY));
    let authenticated = endpoint
        .authenticate(&query, body.as_bytes(), 1409735669)
        .unwrap();
    let xml = String::from_utf8(authenticated.xml).unwrap();
    assert!(
        xml.contains("<Content><![CDATA[abcdteT]]></Content>"),
        "{xml}"
    );
    assert!(!xml.contains("forged"));
}

#[test]
fn signature_parameters_are_required_in_order() {
    let endpoint = endpoint(Mode::Safe);
    let body = doc_body();
    let mut query = doc_query();
    query.signature = None;
    refused(
        endpoint.authenticate(&query, body.as_bytes(), DOC_TIME),
        AuthError::MissingSignature,
        Refusal::Unauthenticated,
        Some(ErrorCode::ValidateSignature),
    );
    for name in ["timestamp", "nonce"] {
        let mut query = doc_query();
        match name {
            "timestamp" => query.timestamp = None,
            _ => query.nonce = None,
        }
        refused(
            endpoint.authenticate(&query, body.as_bytes(), DOC_TIME),
            AuthError::MissingParameter { name },
            Refusal::Malformed,
            None,
        );
    }
}

#[test]
fn a_wrong_or_malformed_signature_is_unauthenticated() {
    let endpoint = endpoint(Mode::Safe);
    let body = doc_body();
    let mut query = doc_query();
    query.signature = Some("cc0c594499c1634947d5b502f158ee518947db28".into());
    refused(
        endpoint.authenticate(&query, body.as_bytes(), DOC_TIME),
        AuthError::Signature(SignatureError::Mismatch),
        Refusal::Unauthenticated,
        Some(ErrorCode::ValidateSignature),
    );
    query.signature = Some("not hex".into());
    refused(
        endpoint.authenticate(&query, body.as_bytes(), DOC_TIME),
        AuthError::Signature(SignatureError::Malformed),
        Refusal::Unauthenticated,
        Some(ErrorCode::ValidateSignature),
    );
    // The nonce is covered: changing it breaks the signature.
    let mut query = doc_query();
    query.nonce = Some("1590219413".into());
    refused(
        endpoint.authenticate(&query, body.as_bytes(), DOC_TIME),
        AuthError::Signature(SignatureError::Mismatch),
        Refusal::Unauthenticated,
        Some(ErrorCode::ValidateSignature),
    );
}

#[test]
fn the_timestamp_window_is_inclusive_and_symmetric() {
    let endpoint = endpoint(Mode::Safe);
    let body = doc_body();
    for now in [DOC_TIME - 300, DOC_TIME, DOC_TIME + 300] {
        assert!(
            endpoint
                .authenticate(&doc_query(), body.as_bytes(), now)
                .is_ok(),
            "{now}"
        );
    }
    for (now, skew_secs) in [
        (DOC_TIME + 301, 301),
        (DOC_TIME - 301, 301),
        (0, DOC_TIME as u64),
    ] {
        refused(
            endpoint.authenticate(&doc_query(), body.as_bytes(), now),
            AuthError::Stale {
                skew_secs,
                window_secs: 300,
            },
            Refusal::Unauthenticated,
            None,
        );
    }
    // A narrower window, and none at all.
    let narrow = endpoint
        .clone()
        .with_timestamp_window(Some(Duration::from_secs(5)));
    assert!(narrow
        .authenticate(&doc_query(), body.as_bytes(), DOC_TIME + 5)
        .is_ok());
    assert!(matches!(
        narrow.authenticate(&doc_query(), body.as_bytes(), DOC_TIME + 6),
        Err(AuthError::Stale {
            skew_secs: 6,
            window_secs: 5
        })
    ));
    let unchecked = endpoint.with_timestamp_window(None);
    assert!(unchecked
        .authenticate(&doc_query(), body.as_bytes(), 0)
        .is_ok());
}

#[test]
fn a_signed_timestamp_that_is_not_a_number_is_malformed_when_the_window_applies() {
    let token = Token::new("AAAAA").unwrap();
    let query = Query::message(&token, "soon", "42", None);
    let body = "<xml/>";
    let endpoint = endpoint(Mode::Plaintext);
    refused(
        endpoint.authenticate(&query, body.as_bytes(), DOC_TIME),
        AuthError::TimestampNotNumber,
        Refusal::Malformed,
        None,
    );
    // Without a window nothing reads the timestamp as a number.
    let unchecked = endpoint.with_timestamp_window(None);
    assert!(unchecked
        .authenticate(&query, body.as_bytes(), DOC_TIME)
        .is_ok());
}

#[test]
fn encrypt_type_is_aes_raw_or_absent() {
    let endpoint = endpoint(Mode::Plaintext);
    let (mut query, body) = plain_request("<xml/>", DOC_TIME);
    query.encrypt_type = Some("raw".into());
    let authenticated = endpoint
        .authenticate(&query, body.as_bytes(), DOC_TIME)
        .unwrap();
    assert!(!authenticated.encrypted);
    assert_eq!(authenticated.key, None);
    assert_eq!(authenticated.xml, b"<xml/>");
    query.encrypt_type = Some("AES".into());
    refused(
        endpoint.authenticate(&query, body.as_bytes(), DOC_TIME),
        AuthError::EncryptType {
            value: "AES".into(),
        },
        Refusal::Malformed,
        None,
    );
}

#[test]
fn a_request_cannot_downgrade_the_configured_mode() {
    let (query, body) = plain_request("<xml/>", DOC_TIME);
    for mode in [Mode::Compatible, Mode::Safe] {
        refused(
            endpoint(mode).authenticate(&query, body.as_bytes(), DOC_TIME),
            AuthError::Downgrade { mode },
            Refusal::Unauthenticated,
            None,
        );
    }
    // `encrypt_type=raw` is the same plaintext request.
    let mut raw = query.clone();
    raw.encrypt_type = Some("raw".into());
    assert!(matches!(
        endpoint(Mode::Safe).authenticate(&raw, body.as_bytes(), DOC_TIME),
        Err(AuthError::Downgrade { mode: Mode::Safe })
    ));
    assert!(endpoint(Mode::Plaintext)
        .authenticate(&query, body.as_bytes(), DOC_TIME)
        .is_ok());
}

#[test]
fn an_encrypted_request_may_upgrade_a_plaintext_endpoint_that_has_a_key() {
    let authenticated = endpoint(Mode::Plaintext)
        .authenticate(&doc_query(), doc_body().as_bytes(), DOC_TIME)
        .unwrap();
    assert!(authenticated.encrypted);
    let keyless = Endpoint::new(
        Token::new("AAAAA").unwrap(),
        AppId::new(DOC_APP_ID).unwrap(),
        Mode::Plaintext,
    );
    refused(
        keyless.authenticate(&doc_query(), doc_body().as_bytes(), DOC_TIME),
        AuthError::NoKey,
        Refusal::Unauthenticated,
        None,
    );
}

#[test]
fn msg_signature_is_required_and_covers_encrypt() {
    let endpoint = endpoint(Mode::Safe);
    let mut query = doc_query();
    query.msg_signature = None;
    refused(
        endpoint.authenticate(&query, doc_body().as_bytes(), DOC_TIME),
        AuthError::MissingMsgSignature,
        Refusal::Unauthenticated,
        Some(ErrorCode::ValidateSignature),
    );
    // Another ciphertext under the same query: the msg_signature no longer matches.
    let (_, other_body) = encrypted_request(DOC_MESSAGE, DOC_KEY, DOC_APP_ID, DOC_TIME);
    refused(
        endpoint.authenticate(&doc_query(), other_body.as_bytes(), DOC_TIME),
        AuthError::MsgSignature(SignatureError::Mismatch),
        Refusal::Unauthenticated,
        Some(ErrorCode::ValidateSignature),
    );
}

#[test]
fn a_body_without_encrypt_is_a_malformed_envelope() {
    let endpoint = endpoint(Mode::Safe);
    let error = endpoint
        .authenticate(
            &doc_query(),
            b"<xml><ToUserName>gh</ToUserName></xml>",
            DOC_TIME,
        )
        .unwrap_err();
    assert!(matches!(error, AuthError::Envelope(_)), "{error:?}");
    assert_eq!(error.refusal(), Refusal::Malformed);
    assert_eq!(error.code(), Some(ErrorCode::ParseXml));
    let doctype = endpoint
        .authenticate(
            &doc_query(),
            b"<!DOCTYPE x [<!ENTITY e \"1\">]><xml/>",
            DOC_TIME,
        )
        .unwrap_err();
    assert_eq!(doctype.code(), Some(ErrorCode::ParseXml));
}

#[test]
fn the_previous_key_is_tried_after_the_current_one() {
    let token = Token::new("AAAAA").unwrap();
    let app_id = AppId::new(DOC_APP_ID).unwrap();
    // The console now has OTHER_KEY; the doc's message was sent with the old key.
    let rotating = Endpoint::new(token.clone(), app_id.clone(), Mode::Safe)
        .with_key(&key(OTHER_KEY))
        .with_previous_key(&key(DOC_KEY));
    let authenticated = rotating
        .authenticate(&doc_query(), doc_body().as_bytes(), DOC_TIME)
        .unwrap();
    assert_eq!(authenticated.key, Some(KeyUsed::Previous));
    assert_eq!(String::from_utf8(authenticated.xml).unwrap(), DOC_MESSAGE);
    // A message under the new key opens with the current one.
    let (query, body) = encrypted_request("<xml/>", OTHER_KEY, DOC_APP_ID, DOC_TIME);
    let authenticated = rotating
        .authenticate(&query, body.as_bytes(), DOC_TIME)
        .unwrap();
    assert_eq!(authenticated.key, Some(KeyUsed::Current));
    // After the rotation the old key is gone: the current key's error is reported. The
    // doc's ciphertext under OTHER_KEY decrypts to garbage whose padding is invalid.
    let rotated = Endpoint::new(token, app_id, Mode::Safe).with_key(&key(OTHER_KEY));
    let error = rotated
        .authenticate(&doc_query(), doc_body().as_bytes(), DOC_TIME)
        .unwrap_err();
    let expected_current_error =
        MessageCipher::new(&key(OTHER_KEY), AppId::new(DOC_APP_ID).unwrap())
            .decrypt(DOC_ENCRYPT)
            .unwrap_err();
    assert_eq!(error, AuthError::Decrypt(expected_current_error.clone()));
    assert_eq!(error.refusal(), Refusal::Malformed);
    assert_eq!(error.code(), Some(expected_current_error.code()));
}

#[test]
fn a_ciphertext_for_another_appid_is_unauthenticated() {
    let (query, body) = encrypted_request(DOC_MESSAGE, DOC_KEY, "wx_other_app", DOC_TIME);
    refused(
        endpoint(Mode::Safe).authenticate(&query, body.as_bytes(), DOC_TIME),
        AuthError::Decrypt(CryptoError::ReceiveId {
            found: "wx_other_app".into(),
        }),
        Refusal::Unauthenticated,
        Some(ErrorCode::ValidateAppid),
    );
}

#[test]
fn a_broken_ciphertext_is_malformed_with_its_official_code() {
    let token = Token::new("AAAAA").unwrap();
    for (encrypt, code) in [
        ("not base64!", ErrorCode::DecodeBase64),
        ("AAAA", ErrorCode::DecryptAes),
    ] {
        let query = Query::message(&token, &DOC_TIME.to_string(), "42", Some(encrypt));
        let body = format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
        let error = endpoint(Mode::Safe)
            .authenticate(&query, body.as_bytes(), DOC_TIME)
            .unwrap_err();
        assert!(matches!(error, AuthError::Decrypt(_)), "{error:?}");
        assert_eq!(error.refusal(), Refusal::Malformed);
        assert_eq!(error.code(), Some(code));
    }
}

#[test]
fn url_verification_skips_the_window_and_returns_echostr() {
    let endpoint = endpoint(Mode::Safe);
    let token = Token::new("AAAAA").unwrap();
    // A year-old verification still echoes: the window is deliberately not checked.
    let query = Query::verification(&token, "1715943329", "1590219412", "7346 echo+é");
    assert_eq!(endpoint.verify_echo(&query), Ok("7346 echo+é"));
    // The same signature check with freshness required would refuse it.
    assert!(matches!(
        endpoint.verify_signature(&query, Freshness::Required, DOC_TIME + 365 * 86_400),
        Err(AuthError::Stale { .. })
    ));
    assert_eq!(
        endpoint.verify_signature(&query, Freshness::NotChecked, DOC_TIME + 365 * 86_400),
        Ok(())
    );
    let mut no_echo = query.clone();
    no_echo.echostr = None;
    assert_eq!(
        endpoint.verify_echo(&no_echo),
        Err(AuthError::MissingParameter { name: "echostr" })
    );
    let mut forged = query;
    forged.nonce = Some("1".into());
    assert_eq!(
        endpoint.verify_echo(&forged),
        Err(AuthError::Signature(SignatureError::Mismatch))
    );
}

#[test]
fn errors_keep_their_source() {
    use std::error::Error as _;
    let error = AuthError::Decrypt(CryptoError::Base64);
    assert_eq!(error.to_string(), "decrypt: Encrypt is not valid base64");
    assert_eq!(
        error.source().map(ToString::to_string),
        Some("Encrypt is not valid base64".to_owned())
    );
    assert_eq!(
        AuthError::Downgrade { mode: Mode::Safe }.to_string(),
        "plaintext request to a safe-mode account"
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Query-string-like text: the parameters WeChat sends, escapes, `+`, stray `%` and `&`.
    fn query_text() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec![
            "signature",
            "timestamp",
            "nonce",
            "openid",
            "encrypt_type",
            "msg_signature",
            "echostr",
            "other",
        ]);
        let value = "[a-zA-Z0-9%+&=é ._~-]{0,12}";
        prop::collection::vec((name, value), 0..8).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("&")
        })
    }

    proptest! {
        #[test]
        fn a_parsed_query_writes_back_to_itself(text in query_text()) {
            if let Ok(query) = Query::parse(&text) {
                let written = query.to_query_string();
                prop_assert_eq!(Query::parse(&written), Ok(query), "{} was written as {}", text, written);
            }
        }

        #[test]
        fn authentication_never_panics(text in query_text(), body in prop::collection::vec(any::<u8>(), 0..64), now in any::<i64>()) {
            if let Ok(query) = Query::parse(&text) {
                for mode in [Mode::Plaintext, Mode::Compatible, Mode::Safe] {
                    let endpoint = endpoint(mode).with_previous_key(&key(OTHER_KEY));
                    if let Err(error) = endpoint.authenticate(&query, &body, now) {
                        let _ = (error.refusal(), error.code(), error.to_string());
                    }
                    let _ = endpoint.verify_echo(&query);
                }
            }
        }
    }
}
