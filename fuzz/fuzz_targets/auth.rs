//! Request authentication on arbitrary input: the query string is the bytes before the
//! first newline, the body the rest. `Query::parse` and `Endpoint::authenticate` never
//! panic, for every mode and with or without a key rotation; a query that parses is
//! written back and parses again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wechat_proto::{AesKey, AppId, Endpoint, Mode, Query, Token};

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|&byte| byte == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(query) = Query::parse(&String::from_utf8_lossy(query)) else {
        return;
    };
    let text = query.to_query_string();
    assert_eq!(Query::parse(&text).as_ref(), Ok(&query), "{text}");

    let token = Token::new("AAAAA").unwrap();
    let app_id = AppId::new("wx134c8103faa5a59e").unwrap();
    let key = AesKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
    let previous = AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
    for mode in [Mode::Plaintext, Mode::Compatible, Mode::Safe] {
        let endpoint = Endpoint::new(token.clone(), app_id.clone(), mode)
            .with_key(&key)
            .with_previous_key(&previous);
        // The official example's time, so that its signatures also reach the later rules.
        if let Err(error) = endpoint.authenticate(&query, body, 1_715_943_329) {
            let _ = (error.refusal(), error.code(), error.to_string());
        }
        let _ = endpoint.verify_echo(&query);
    }
});
