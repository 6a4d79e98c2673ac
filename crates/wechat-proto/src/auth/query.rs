//! The query string of WeChat's requests, read and written with `form_urlencoded`.
//!
//! WeChat puts everything that authenticates a request into the URL (docs/protocol.md §3.1):
//! `signature`, `timestamp`, `nonce`, and in compatible and safe mode `encrypt_type=aes`
//! and `msg_signature`; the verification GET adds `echostr`, and POSTs usually carry an
//! informational `openid`. One type reads them in the gateway and writes them in the
//! simulator, so both sides agree on the encoding by construction.
//!
//! Decoding is `application/x-www-form-urlencoded`, as every web framework does it: `%XX`
//! escapes are resolved and `+` means a space. An Official Account's `echostr` is a plain
//! random string, so this is exact; a WeCom `echostr` (base64, which may contain a literal
//! `+`) would need percent-encoding by the sender, which WeCom does. Encoding writes a
//! space as `+` and escapes everything else outside `[A-Za-z0-9*-._]`, so a value survives
//! the round trip byte for byte.

use std::fmt;

use crate::ids::OpenId;
use crate::key::Token;
use crate::signature::Signature;

/// The parameters of one request's query string. Unknown parameters are ignored.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Query {
    /// `sha1(sort(token, timestamp, nonce))`, on every request.
    pub signature: Option<String>,
    /// Unix seconds, decimal, as WeChat sent them (signatures cover this exact text).
    pub timestamp: Option<String>,
    /// A random decimal string.
    pub nonce: Option<String>,
    /// The sender's OpenID. Not covered by any signature: informational only.
    pub openid: Option<String>,
    /// `aes` when the body is encrypted; absent or `raw` otherwise.
    pub encrypt_type: Option<String>,
    /// `sha1(sort(token, timestamp, nonce, Encrypt))`, in compatible and safe mode.
    pub msg_signature: Option<String>,
    /// The URL-verification challenge (GET only), echoed byte for byte.
    pub echostr: Option<String>,
}

/// Why a query string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryError {
    /// A parameter this type reads appears more than once: which one was signed would be
    /// ambiguous, so neither is trusted.
    Duplicate {
        /// The parameter name.
        name: &'static str,
    },
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Duplicate { name } => write!(f, "query parameter {name} appears twice"),
        }
    }
}

impl std::error::Error for QueryError {}

impl Query {
    /// Reads a query string (without the leading `?`; one is tolerated).
    pub fn parse(query: &str) -> Result<Query, QueryError> {
        let query = query.strip_prefix('?').unwrap_or(query);
        let mut parsed = Query::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let (name, slot) = match name.as_ref() {
                "signature" => ("signature", &mut parsed.signature),
                "timestamp" => ("timestamp", &mut parsed.timestamp),
                "nonce" => ("nonce", &mut parsed.nonce),
                "openid" => ("openid", &mut parsed.openid),
                "encrypt_type" => ("encrypt_type", &mut parsed.encrypt_type),
                "msg_signature" => ("msg_signature", &mut parsed.msg_signature),
                "echostr" => ("echostr", &mut parsed.echostr),
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(QueryError::Duplicate { name });
            }
        }
        Ok(parsed)
    }

    /// Writes the query string (without `?`), parameters in WeChat's order: `signature`,
    /// `timestamp`, `nonce`, `echostr`, `openid`, `encrypt_type`, `msg_signature`.
    pub fn to_query_string(&self) -> String {
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("signature", &self.signature),
            ("timestamp", &self.timestamp),
            ("nonce", &self.nonce),
            ("echostr", &self.echostr),
            ("openid", &self.openid),
            ("encrypt_type", &self.encrypt_type),
            ("msg_signature", &self.msg_signature),
        ] {
            if let Some(value) = value {
                serializer.append_pair(name, value);
            }
        }
        serializer.finish()
    }

    /// The URL-verification GET query: signed `timestamp` and `nonce`, and `echostr`.
    pub fn verification(token: &Token, timestamp: &str, nonce: &str, echostr: &str) -> Query {
        Query {
            signature: Some(Signature::url(token, timestamp, nonce).to_hex()),
            timestamp: Some(timestamp.to_owned()),
            nonce: Some(nonce.to_owned()),
            echostr: Some(echostr.to_owned()),
            ..Query::default()
        }
    }

    /// A message POST query. With `encrypt` (the envelope's `Encrypt` text) it is the
    /// compatible/safe-mode query with `encrypt_type=aes` and `msg_signature`; without, the
    /// plaintext-mode query.
    pub fn message(token: &Token, timestamp: &str, nonce: &str, encrypt: Option<&str>) -> Query {
        let mut query = Query {
            signature: Some(Signature::url(token, timestamp, nonce).to_hex()),
            timestamp: Some(timestamp.to_owned()),
            nonce: Some(nonce.to_owned()),
            ..Query::default()
        };
        if let Some(encrypt) = encrypt {
            query.encrypt_type = Some("aes".to_owned());
            query.msg_signature =
                Some(Signature::message(token, timestamp, nonce, encrypt).to_hex());
        }
        query
    }
}

impl fmt::Debug for Query {
    /// Every parameter, with `openid` masked ([`OpenId::mask`]): a query may be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Query")
            .field("signature", &self.signature)
            .field("timestamp", &self.timestamp)
            .field("nonce", &self.nonce)
            .field("openid", &self.openid.as_deref().map(OpenId::mask))
            .field("encrypt_type", &self.encrypt_type)
            .field("msg_signature", &self.msg_signature)
            .field("echostr", &self.echostr)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_official_safe_mode_query() {
        let query = Query::parse(
            "signature=cc0c594499c1634947d5b502f158ee518947db27&timestamp=1715943329&nonce=1590219412\
             &openid=o9AgO5Kd5ggOC-bXrbNODIiE3bGY&encrypt_type=aes&msg_signature=6c12a4205838198b8fa631b3220723bb07f1015c",
        )
        .unwrap();
        assert_eq!(
            query,
            Query {
                signature: Some("cc0c594499c1634947d5b502f158ee518947db27".into()),
                timestamp: Some("1715943329".into()),
                nonce: Some("1590219412".into()),
                openid: Some("o9AgO5Kd5ggOC-bXrbNODIiE3bGY".into()),
                encrypt_type: Some("aes".into()),
                msg_signature: Some("6c12a4205838198b8fa631b3220723bb07f1015c".into()),
                echostr: None,
            }
        );
    }

    #[test]
    fn decodes_form_style_and_ignores_unknown_parameters() {
        let query =
            Query::parse("?echostr=a+b%2Bc%C3%A9&x=1&nonce=n%20x&msg_signature=cd%").unwrap();
        assert_eq!(query.echostr.as_deref(), Some("a b+cé"));
        assert_eq!(query.nonce.as_deref(), Some("n x"));
        // A stray `%` is kept as it is, the way browsers and servers decode it.
        assert_eq!(query.msg_signature.as_deref(), Some("cd%"));
        assert_eq!(query.signature, None);
    }

    #[test]
    fn refuses_a_parameter_given_twice() {
        assert_eq!(
            Query::parse("signature=a&timestamp=1&signature=b"),
            Err(QueryError::Duplicate { name: "signature" })
        );
    }

    #[test]
    fn writes_in_wechats_order_and_reads_back() {
        let token = Token::new("AAAAA").unwrap();
        let query = Query::verification(&token, "1715943329", "1590219412", "7346 echo+é&=");
        let text = query.to_query_string();
        assert_eq!(
            text,
            "signature=cc0c594499c1634947d5b502f158ee518947db27&timestamp=1715943329\
             &nonce=1590219412&echostr=7346+echo%2B%C3%A9%26%3D"
        );
        assert_eq!(Query::parse(&text), Ok(query));
    }

    #[test]
    fn debug_masks_the_openid() {
        let query = Query::parse("openid=o9AgO5Kd5ggOC-bXrbNODIiE3bGY&nonce=1").unwrap();
        let debug = format!("{query:?}");
        assert!(debug.contains("openid: Some(\"o…3bGY\")"), "{debug}");
        assert!(!debug.contains("o9AgO5Kd5ggOC-bXrbNODIiE3bGY"), "{debug}");
    }

    #[test]
    fn message_queries_sign_the_encrypt_text() {
        let token = Token::new("AAAAA").unwrap();
        let encrypt = "D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQXicwaZC7fOVihW80F4VtsdvE//1vr7oAbqjDv8KenVp+ajKYpJnyQ4zMRhIC+a31fCVOMC03FfzV/QuC94kBP55a+Za3sJgvAn+ZbsNqZI5DkyuzkhQN8OBqCzFhizGmy0xpM0MEA4agpvE+RuNO1rhHTtuJB5yltw1FiYzecSXJ+y/D2r81VkRn2eYjh2ltsoyfbDR7Is6ookXIFxTfyeNyeHxMeT4KN5WpCDmSbTcUYrbBUlkGLJ9n/rU8YOywma6G7aTb7KZKOqCxgfoUlYEZPk4FUL/TK7ShriFDMVCLyjQJ15Ob++agDWtcxhfUfe6HIoIpRW8mKNBQiY/Jd1svvuskA1wLef1RTtzKfMpagSCX/laZINmdnX4zrF6kIaR9P4xQrWXbsTFHTYe0Mg==";
        let query = Query::message(&token, "1715943329", "1590219412", Some(encrypt));
        assert_eq!(
            query.to_query_string(),
            "signature=cc0c594499c1634947d5b502f158ee518947db27&timestamp=1715943329\
             &nonce=1590219412&encrypt_type=aes&msg_signature=6c12a4205838198b8fa631b3220723bb07f1015c"
        );
        let plain = Query::message(&token, "1715943329", "1590219412", None);
        assert_eq!(
            plain.to_query_string(),
            "signature=cc0c594499c1634947d5b502f158ee518947db27&timestamp=1715943329&nonce=1590219412"
        );
    }
}
