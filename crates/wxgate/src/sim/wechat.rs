//! WeChat's side of the protocol: signed requests out, answers judged.
//!
//! Built only from `wechat-proto`, so a request made here is what WeChat would send and a
//! verdict here is what a follower would see: the reply, nothing (for `success` or an
//! empty body), or "该公众号暂时无法提供服务，请稍后再试" for anything WeChat cannot use.

use std::fmt;

use wechat_proto::{
    EncryptedReply, Inbound, MessageCipher, Query, Reply, RequestEnvelope, Signature, Token,
};

use crate::config::Mode;

/// What the follower sees when WeChat cannot use an answer.
pub const SERVICE_UNAVAILABLE_TEXT: &str = "该公众号暂时无法提供服务，请稍后再试";

/// One account as WeChat knows it: token, mode and (for compatible/safe) the cipher.
#[derive(Debug, Clone)]
pub struct WeChatSide {
    /// The token of both signatures.
    pub token: Token,
    /// How requests are sent.
    pub mode: Mode,
    /// The account's cipher (key + AppID); required for compatible and safe.
    pub cipher: Option<MessageCipher>,
}

/// A request ready to send: the query string and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The query string without `?`.
    pub query: String,
    /// The POST body (empty for the verification GET).
    pub body: String,
    /// The plaintext message XML (before encryption), for reports.
    pub plaintext: String,
    /// The request's timestamp, which an encrypted reply must echo in its signature.
    pub timestamp: String,
    /// The request's nonce.
    pub nonce: String,
}

/// How WeChat judges one answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A valid passive reply the follower sees.
    Reply(Reply),
    /// `success` or an empty body: the follower sees nothing, WeChat does not retry.
    Acknowledged,
    /// WeChat cannot use the answer; the follower sees [`SERVICE_UNAVAILABLE_TEXT`]
    /// (after the retries, for a timeout).
    Unusable(Unusable),
}

/// Why an answer is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// A status other than 200.
    Status(u16),
    /// The body is neither a reply XML nor `success` (e.g. a JSON or HTML error page).
    InvalidXml(String),
    /// An encrypted reply whose `MsgSignature` does not match.
    WrongSignature,
    /// An encrypted reply that does not decrypt for this account.
    WrongEncryption(String),
    /// A plaintext reply to a safe-mode account.
    NotEncrypted,
    /// A reply addressed to someone other than the sender.
    WrongRecipient,
    /// No answer in time.
    Timeout,
    /// No HTTP answer at all: the connection failed (refused, reset, DNS, TLS…).
    Unreachable(String),
}

/// An answer as WeChat read it: the verdict, and the reply XML it decrypted on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// What the follower sees.
    pub verdict: Verdict,
    /// The plaintext reply XML, when the answer was an encrypted reply that decrypted.
    pub decrypted: Option<String>,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Status(code) => match status_hint(*code) {
                Some(hint) => write!(f, "HTTP status {code}: {hint}"),
                None => write!(f, "HTTP status {code}"),
            },
            Unusable::InvalidXml(why) => write!(f, "not a reply XML: {why}"),
            Unusable::WrongSignature => {
                f.write_str("MsgSignature of the encrypted reply does not match")
            }
            Unusable::WrongEncryption(why) => write!(f, "encrypted reply does not decrypt: {why}"),
            Unusable::NotEncrypted => f.write_str("plaintext reply in safe mode"),
            Unusable::WrongRecipient => f.write_str("reply ToUserName is not the sender"),
            Unusable::Timeout => f.write_str("no answer within 5 seconds"),
            Unusable::Unreachable(why) => write!(f, "no HTTP answer: {why}"),
        }
    }
}

/// What a refusal status most likely means when the webhook is wxgate (or any gateway
/// that follows the same conventions), in words an operator can act on.
pub fn status_hint(code: u16) -> Option<&'static str> {
    Some(match code {
        400 => "the webhook could not read the message: check --mode and --aes-key/--app-id against the account's mode and EncodingAESKey",
        401 => "the signature was refused: check --token (and --mode: a safe-mode account refuses plaintext requests)",
        403 => "the webhook refused this client's address: check the account's allow_ips",
        404 => "no such account: check the account path in --url (/wx/<name>)",
        408 => "the webhook timed out reading the request body",
        413 => "the body is over the webhook's size limit (body_limit_bytes)",
        503 => "the webhook is unavailable (store down, or shutting down); WeChat would retry",
        _ => return None,
    })
}

impl WeChatSide {
    /// The URL-verification GET query.
    pub fn verification(&self, timestamp: i64, nonce: &str, echostr: &str) -> SignedRequest {
        let timestamp = timestamp.to_string();
        SignedRequest {
            query: Query::verification(&self.token, &timestamp, nonce, echostr).to_query_string(),
            body: String::new(),
            plaintext: String::new(),
            timestamp,
            nonce: nonce.to_owned(),
        }
    }

    /// A message POST for this mode, from plaintext XML.
    pub fn message_xml(
        &self,
        plaintext: &str,
        timestamp: i64,
        nonce: &str,
        random: [u8; 16],
    ) -> SignedRequest {
        let timestamp = timestamp.to_string();
        let encrypted = match (&self.mode, &self.cipher) {
            (Mode::Plaintext, _) | (_, None) => None,
            (mode, Some(cipher)) => Some((*mode, cipher.encrypt(plaintext.as_bytes(), random))),
        };
        let Some((mode, encrypt)) = encrypted else {
            return SignedRequest {
                query: Query::message(&self.token, &timestamp, nonce, None).to_query_string(),
                body: plaintext.to_owned(),
                plaintext: plaintext.to_owned(),
                timestamp,
                nonce: nonce.to_owned(),
            };
        };
        let query = Query::message(&self.token, &timestamp, nonce, Some(&encrypt));
        let body = match mode {
            Mode::Compatible => RequestEnvelope::compatible_body(plaintext, &encrypt),
            _ => RequestEnvelope {
                to_user_name: Inbound::parse(plaintext.as_bytes())
                    .ok()
                    .map(|inbound| inbound.header.to_user_name),
                encrypt,
            }
            .to_xml(),
        };
        SignedRequest {
            query: query.to_query_string(),
            body,
            plaintext: plaintext.to_owned(),
            timestamp,
            nonce: nonce.to_owned(),
        }
    }

    /// A message POST for this mode, from a typed message.
    pub fn message(
        &self,
        inbound: &Inbound,
        timestamp: i64,
        nonce: &str,
        random: [u8; 16],
    ) -> SignedRequest {
        self.message_xml(&inbound.to_xml(), timestamp, nonce, random)
    }

    /// Judges an answer as WeChat would. `sender` is the OpenID the request came from.
    pub fn judge(&self, status: u16, body: &[u8], sender: &str) -> Verdict {
        self.judge_detailed(status, body, sender).verdict
    }

    /// Like [`WeChatSide::judge`], also returning the decrypted reply XML for reports.
    pub fn judge_detailed(&self, status: u16, body: &[u8], sender: &str) -> Judgement {
        let unusable = |why| Judgement {
            verdict: Verdict::Unusable(why),
            decrypted: None,
        };
        if status != 200 {
            return unusable(Unusable::Status(status));
        }
        let text = String::from_utf8_lossy(body);
        if body.is_empty() || text == "success" {
            return Judgement {
                verdict: Verdict::Acknowledged,
                decrypted: None,
            };
        }
        let mut decrypted = None;
        let plaintext: Vec<u8> = if let Ok(reply) = EncryptedReply::parse(body) {
            let Some(cipher) = &self.cipher else {
                return unusable(Unusable::WrongEncryption("account has no key".to_owned()));
            };
            let expected =
                Signature::message(&self.token, &reply.timestamp, &reply.nonce, &reply.encrypt);
            if expected.verify(&reply.msg_signature).is_err() {
                return unusable(Unusable::WrongSignature);
            }
            match cipher.decrypt(&reply.encrypt) {
                Ok(plain) => {
                    decrypted = Some(String::from_utf8_lossy(&plain).into_owned());
                    plain
                }
                Err(e) => {
                    return unusable(Unusable::WrongEncryption(format!("{e} [{}]", e.code())))
                }
            }
        } else {
            if self.mode == Mode::Safe {
                return match Reply::parse(body) {
                    Ok(_) => unusable(Unusable::NotEncrypted),
                    Err(e) => unusable(Unusable::InvalidXml(e.to_string())),
                };
            }
            body.to_vec()
        };
        let verdict = match Reply::parse(&plaintext) {
            Ok((_, Reply::Success)) => Verdict::Acknowledged,
            Ok((header, reply)) if header.to_user_name == sender => Verdict::Reply(reply),
            Ok(_) => Verdict::Unusable(Unusable::WrongRecipient),
            Err(e) => Verdict::Unusable(Unusable::InvalidXml(e.to_string())),
        };
        Judgement { verdict, decrypted }
    }
}

impl Verdict {
    /// Whether the follower is left with an error message (the failure of a delivery).
    pub fn is_failure(&self) -> bool {
        matches!(self, Verdict::Unusable(_))
    }

    /// A short machine name: `reply`, `acknowledged` or `unusable`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Reply(_) => "reply",
            Verdict::Acknowledged => "acknowledged",
            Verdict::Unusable(_) => "unusable",
        }
    }

    /// What the follower sees, in plain words.
    pub fn follower_sees(&self) -> String {
        match self {
            Verdict::Reply(reply) => describe_reply(reply),
            Verdict::Acknowledged => "nothing (the answer was `success` or empty)".to_owned(),
            Verdict::Unusable(_) => format!("“{SERVICE_UNAVAILABLE_TEXT}”"),
        }
    }
}

/// A passive reply in plain words, as the follower would see it.
pub fn describe_reply(reply: &Reply) -> String {
    match reply {
        Reply::Success => "nothing (the answer was `success`)".to_owned(),
        Reply::Text { content } => format!("the text “{content}”"),
        Reply::Image { media_id } => format!("an image (media_id {media_id})"),
        Reply::Voice { media_id } => format!("a voice message (media_id {media_id})"),
        Reply::Video {
            media_id, title, ..
        } => match title {
            Some(title) => format!("a video “{title}” (media_id {media_id})"),
            None => format!("a video (media_id {media_id})"),
        },
        Reply::Music { title, .. } => match title {
            Some(title) => format!("a music card “{title}”"),
            None => "a music card".to_owned(),
        },
        Reply::News { articles } => {
            let titles: Vec<String> = articles.iter().map(|a| format!("“{}”", a.title)).collect();
            format!("{} article card(s): {}", articles.len(), titles.join(", "))
        }
        Reply::TransferCustomerService { .. } => {
            "nothing yet: the conversation is handed to customer service".to_owned()
        }
        other => format!("a {} reply", other.msg_type()),
    }
}
