//! Request authentication: everything that decides whether a request came from WeChat,
//! for one configured endpoint, as a pure function of the query, the body and `now`.
//!
//! The rules, in the order [`Endpoint::authenticate`] applies them (docs/protocol.md §3):
//!
//! 1. `signature`, `timestamp` and `nonce` are present, and `signature` matches
//!    (constant time). A missing `signature` is unauthenticated; a missing `timestamp` or
//!    `nonce` is a malformed request.
//! 2. The timestamp is within the endpoint's window of `now` (replay protection). The
//!    window is the only rule that reads time, which is why `now` is an argument: this
//!    crate has no clock.
//! 3. `encrypt_type` is absent, `raw` or `aes`; anything else is malformed.
//! 4. **No downgrade**: the endpoint's *configured* mode decides what is required. A
//!    plaintext request to a compatible- or safe-mode endpoint is refused, because the
//!    plain `signature` covers no body and a captured query could sign a forged one. An
//!    encrypted request to a plaintext endpoint is accepted when a key is configured
//!    (WeChat's console switches modes immediately).
//! 5. `msg_signature` is present and covers the envelope's `Encrypt`, exactly as sent.
//! 6. Decryption with the current key, then with the previous one during a key rotation;
//!    the AppID inside the ciphertext must be the endpoint's. When every key fails, the
//!    current key's error is reported.
//!
//! Every failure is an [`AuthError`] that says whether the request was *malformed* or
//! *unauthenticated* (the gateway's 400 and 401) and carries the official -400xx code
//! where one exists. URL verification (the GET) is [`Endpoint::verify_echo`]; it skips
//! the window on purpose, see [`Freshness::NotChecked`].

use std::fmt;
use std::time::Duration;

use crate::crypto::{CryptoError, MessageCipher};
use crate::envelope::{EnvelopeError, RequestEnvelope};
use crate::key::{AesKey, AppId, Token};
use crate::signature::{Signature, SignatureError};
use crate::ErrorCode;

mod query;

pub use query::{Query, QueryError};

/// The message encryption mode configured in WeChat's console (消息加解密方式).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Mode {
    /// 明文模式: bodies and replies in clear.
    Plaintext,
    /// 兼容模式: the clear fields plus `Encrypt`; only the decrypted copy is used.
    Compatible,
    /// 安全模式: only `Encrypt`; replies encrypted.
    Safe,
}

impl Mode {
    /// Every mode, in the console's order.
    pub const ALL: [Mode; 3] = [Mode::Plaintext, Mode::Compatible, Mode::Safe];

    /// The configuration name of the mode: `plaintext`, `compatible` or `safe`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Plaintext => "plaintext",
            Mode::Compatible => "compatible",
            Mode::Safe => "safe",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a signature check also requires a fresh timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The timestamp must be within the endpoint's window of `now`: every message POST.
    Required,
    /// The timestamp is not compared with any clock: URL verification only.
    ///
    /// The verification GET authenticates nothing but the token holder and is replayable
    /// by design (its `echostr` is not signed), so a window adds no security there; it
    /// would only make the console's "submit" fail on a server whose clock is off, where
    /// nobody can see why. Nothing reaches a handler through it.
    NotChecked,
}

/// Which configured key opened a ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsed {
    /// The current EncodingAESKey.
    Current,
    /// The previous EncodingAESKey, still accepted during a key rotation.
    Previous,
}

/// One webhook endpoint as configured in WeChat's console: token, mode, AppID, keys, and
/// the accepted timestamp skew. Built once at start-up; shared by every request.
#[derive(Debug, Clone)]
pub struct Endpoint {
    token: Token,
    app_id: AppId,
    mode: Mode,
    /// The current key's cipher, if any.
    current: Option<MessageCipher>,
    /// The previous key's cipher during a rotation.
    previous: Option<MessageCipher>,
    /// The accepted distance between `timestamp` and `now`; `None` disables the check.
    timestamp_window: Option<Duration>,
}

/// A request that passed every rule: the message XML to parse, and how to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Authenticated {
    /// The plaintext message XML: the body in plaintext mode, the decrypted `Encrypt`
    /// otherwise (never the unauthenticated clear fields of a compatible-mode body).
    pub xml: Vec<u8>,
    /// Whether the request was encrypted, so that a reply must be encrypted too.
    pub encrypted: bool,
    /// The key that decrypted it, for an encrypted request.
    pub key: Option<KeyUsed>,
    /// The request's `timestamp`, which an encrypted reply signs with.
    pub timestamp: String,
    /// The request's `nonce`, which an encrypted reply signs with.
    pub nonce: String,
}

/// Whether a refused request was malformed or unauthenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request is broken (a missing `timestamp`, bad XML, bad ciphertext): HTTP 400.
    Malformed,
    /// The request is well formed but not proven to come from WeChat for this endpoint
    /// (signature, window, mode, AppID): HTTP 401.
    Unauthenticated,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The query string has no `signature`.
    MissingSignature,
    /// The query string lacks `timestamp`, `nonce` or (for verification) `echostr`.
    MissingParameter {
        /// The parameter name.
        name: &'static str,
    },
    /// `signature` does not match.
    Signature(SignatureError),
    /// `timestamp` is not a decimal number.
    TimestampNotNumber,
    /// `timestamp` is further from `now` than the window allows.
    Stale {
        /// The distance from `now`, in seconds.
        skew_secs: u64,
        /// The window, in seconds.
        window_secs: u64,
    },
    /// `encrypt_type` is neither `aes` nor `raw`.
    EncryptType {
        /// The value found.
        value: String,
    },
    /// A plaintext request to an endpoint configured for compatible or safe mode.
    Downgrade {
        /// The endpoint's configured mode.
        mode: Mode,
    },
    /// An encrypted request to an endpoint that has no EncodingAESKey.
    NoKey,
    /// An encrypted request without `msg_signature`.
    MissingMsgSignature,
    /// The body is not a request envelope (bad XML, no `Encrypt`).
    Envelope(EnvelopeError),
    /// `msg_signature` does not match the envelope's `Encrypt`.
    MsgSignature(SignatureError),
    /// No configured key decrypts `Encrypt` for this AppID (the current key's error).
    Decrypt(CryptoError),
}

impl AuthError {
    /// Whether the request was malformed (400) or unauthenticated (401).
    pub fn refusal(&self) -> Refusal {
        match self {
            AuthError::MissingParameter { .. }
            | AuthError::TimestampNotNumber
            | AuthError::EncryptType { .. }
            | AuthError::Envelope(_) => Refusal::Malformed,
            // A wrong AppID is a ciphertext made for someone else: not proven ours. Any
            // other decryption failure is a broken ciphertext.
            AuthError::Decrypt(CryptoError::ReceiveId { .. }) => Refusal::Unauthenticated,
            AuthError::Decrypt(_) => Refusal::Malformed,
            AuthError::MissingSignature
            | AuthError::Signature(_)
            | AuthError::Stale { .. }
            | AuthError::Downgrade { .. }
            | AuthError::NoKey
            | AuthError::MissingMsgSignature
            | AuthError::MsgSignature(_) => Refusal::Unauthenticated,
        }
    }

    /// The official WXBizMsgCrypt code, where the failure has one: -40001 for every
    /// signature failure, -40002 for the envelope, the crypto layer's code for decryption.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            AuthError::MissingSignature | AuthError::MissingMsgSignature => {
                Some(ErrorCode::ValidateSignature)
            }
            AuthError::Signature(error) | AuthError::MsgSignature(error) => Some(error.code()),
            AuthError::Envelope(error) => Some(error.code()),
            AuthError::Decrypt(error) => Some(error.code()),
            AuthError::MissingParameter { .. }
            | AuthError::TimestampNotNumber
            | AuthError::Stale { .. }
            | AuthError::EncryptType { .. }
            | AuthError::Downgrade { .. }
            | AuthError::NoKey => None,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::MissingSignature => f.write_str("missing signature"),
            AuthError::MissingParameter { name } => write!(f, "missing query parameter {name}"),
            AuthError::Signature(error) => write!(f, "signature: {error}"),
            AuthError::TimestampNotNumber => f.write_str("timestamp is not a decimal number"),
            AuthError::Stale {
                skew_secs,
                window_secs,
            } => write!(
                f,
                "timestamp {skew_secs} s away from now (window {window_secs} s)"
            ),
            AuthError::EncryptType { value } => {
                write!(f, "encrypt_type {value:?} is neither aes nor raw")
            }
            AuthError::Downgrade { mode } => {
                write!(f, "plaintext request to a {mode}-mode account")
            }
            AuthError::NoKey => {
                f.write_str("encrypted request to an account without encoding_aes_key")
            }
            AuthError::MissingMsgSignature => {
                f.write_str("encrypted request without msg_signature")
            }
            AuthError::Envelope(error) => write!(f, "envelope: {error}"),
            AuthError::MsgSignature(error) => write!(f, "msg_signature: {error}"),
            AuthError::Decrypt(error) => write!(f, "decrypt: {error}"),
        }
    }
}

impl std::error::Error for AuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AuthError::Signature(error) | AuthError::MsgSignature(error) => Some(error),
            AuthError::Envelope(error) => Some(error),
            AuthError::Decrypt(error) => Some(error),
            _ => None,
        }
    }
}

impl Endpoint {
    /// An endpoint without keys, with the default window of 300 seconds.
    pub fn new(token: Token, app_id: AppId, mode: Mode) -> Endpoint {
        Endpoint {
            token,
            app_id,
            mode,
            current: None,
            previous: None,
            timestamp_window: Some(Duration::from_secs(300)),
        }
    }

    /// Sets the current EncodingAESKey.
    pub fn with_key(mut self, key: &AesKey) -> Endpoint {
        self.current = Some(MessageCipher::new(key, self.app_id.clone()));
        self
    }

    /// Sets the previous EncodingAESKey, still accepted while a rotation is under way
    /// (the console's key change is immediate, messages already sent are not).
    pub fn with_previous_key(mut self, key: &AesKey) -> Endpoint {
        self.previous = Some(MessageCipher::new(key, self.app_id.clone()));
        self
    }

    /// Sets the accepted skew of `timestamp`; `None` disables the check.
    pub fn with_timestamp_window(mut self, window: Option<Duration>) -> Endpoint {
        self.timestamp_window = window;
        self
    }

    /// The token of both signatures.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The AppID expected inside every ciphertext.
    pub fn app_id(&self) -> &AppId {
        &self.app_id
    }

    /// The configured mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The accepted skew of `timestamp`.
    pub fn timestamp_window(&self) -> Option<Duration> {
        self.timestamp_window
    }

    /// The current key's cipher, which encrypts replies.
    pub fn cipher(&self) -> Option<&MessageCipher> {
        self.current.as_ref()
    }

    /// The ciphers that may decrypt a request, current key first.
    pub fn ciphers(&self) -> impl Iterator<Item = (KeyUsed, &MessageCipher)> {
        let current = self.current.iter().map(|cipher| (KeyUsed::Current, cipher));
        let previous = self
            .previous
            .iter()
            .map(|cipher| (KeyUsed::Previous, cipher));
        current.chain(previous)
    }

    /// Rule 1 and, when `freshness` requires it, rule 2: the URL `signature` over the
    /// query's `timestamp` and `nonce`, and the timestamp within the window of `now`
    /// (Unix seconds).
    pub fn verify_signature(
        &self,
        query: &Query,
        freshness: Freshness,
        now: i64,
    ) -> Result<(), AuthError> {
        let signature = query
            .signature
            .as_deref()
            .ok_or(AuthError::MissingSignature)?;
        let timestamp = required(&query.timestamp, "timestamp")?;
        let nonce = required(&query.nonce, "nonce")?;
        Signature::url(&self.token, timestamp, nonce)
            .verify(signature)
            .map_err(AuthError::Signature)?;
        if let (Freshness::Required, Some(window)) = (freshness, self.timestamp_window) {
            let sent: i64 = timestamp
                .parse()
                .map_err(|_| AuthError::TimestampNotNumber)?;
            let skew_secs = now.abs_diff(sent);
            if skew_secs > window.as_secs() {
                return Err(AuthError::Stale {
                    skew_secs,
                    window_secs: window.as_secs(),
                });
            }
        }
        Ok(())
    }

    /// URL verification (the GET): checks `signature` without the window (see
    /// [`Freshness::NotChecked`]) and returns the `echostr` to answer byte for byte.
    pub fn verify_echo<'q>(&self, query: &'q Query) -> Result<&'q str, AuthError> {
        self.verify_signature(query, Freshness::NotChecked, 0)?;
        query
            .echostr
            .as_deref()
            .ok_or(AuthError::MissingParameter { name: "echostr" })
    }

    /// Authenticates a message POST: every rule of the module documentation, in order.
    /// `now` is the current Unix time in seconds.
    pub fn authenticate(
        &self,
        query: &Query,
        body: &[u8],
        now: i64,
    ) -> Result<Authenticated, AuthError> {
        self.verify_signature(query, Freshness::Required, now)?;
        let timestamp = required(&query.timestamp, "timestamp")?.to_owned();
        let nonce = required(&query.nonce, "nonce")?.to_owned();
        let encrypted = match query.encrypt_type.as_deref() {
            None | Some("raw") => false,
            Some("aes") => true,
            Some(other) => {
                return Err(AuthError::EncryptType {
                    value: other.to_owned(),
                })
            }
        };
        if !encrypted {
            if self.mode != Mode::Plaintext {
                return Err(AuthError::Downgrade { mode: self.mode });
            }
            // The hardened parser still rejects a DOCTYPE in a plaintext body first.
            return Ok(Authenticated {
                xml: body.to_vec(),
                encrypted: false,
                key: None,
                timestamp,
                nonce,
            });
        }
        if self.current.is_none() && self.previous.is_none() {
            return Err(AuthError::NoKey);
        }
        let msg_signature = query
            .msg_signature
            .as_deref()
            .ok_or(AuthError::MissingMsgSignature)?;
        let envelope = RequestEnvelope::parse_borrowed(body).map_err(AuthError::Envelope)?;
        Signature::message(&self.token, &timestamp, &nonce, &envelope.encrypt)
            .verify(msg_signature)
            .map_err(AuthError::MsgSignature)?;
        let mut first_error = None;
        for (key, cipher) in self.ciphers() {
            match cipher.decrypt(&envelope.encrypt) {
                Ok(xml) => {
                    return Ok(Authenticated {
                        xml,
                        encrypted: true,
                        key: Some(key),
                        timestamp,
                        nonce,
                    })
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        // At least one cipher exists (checked above), so an error was recorded.
        Err(first_error.map_or(AuthError::NoKey, AuthError::Decrypt))
    }
}

/// A query parameter that must be present.
fn required<'q>(value: &'q Option<String>, name: &'static str) -> Result<&'q str, AuthError> {
    value.as_deref().ok_or(AuthError::MissingParameter { name })
}
