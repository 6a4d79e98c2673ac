//! The two envelope parsers on arbitrary bytes: never a panic, and what parses is written
//! back and parsed again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wechat_proto::{EncryptedReply, RequestEnvelope};

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = RequestEnvelope::parse(data) {
        let xml = envelope.to_xml();
        let again = RequestEnvelope::parse(xml.as_bytes())
            .unwrap_or_else(|error| panic!("to_xml output does not parse: {error}\n{xml}"));
        let mut fields = vec![envelope.encrypt.as_str()];
        fields.extend(envelope.to_user_name.as_deref());
        if fields.iter().all(|field| all_xml_chars(field)) {
            assert_eq!(envelope, again, "{xml}");
        }
    }
    if let Ok(reply) = EncryptedReply::parse(data) {
        let xml = reply.to_xml();
        let again = EncryptedReply::parse(xml.as_bytes())
            .unwrap_or_else(|error| panic!("to_xml output does not parse: {error}\n{xml}"));
        let fields = [
            &reply.encrypt,
            &reply.msg_signature,
            &reply.timestamp,
            &reply.nonce,
        ];
        if fields.iter().all(|field| all_xml_chars(field)) {
            assert_eq!(reply, again, "{xml}");
        }
    }
});

/// Whether XML 1.0 allows every character of `text` (the writer drops the others).
fn all_xml_chars(text: &str) -> bool {
    text.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    })
}
