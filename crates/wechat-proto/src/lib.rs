//! `wechat-proto`: the WeChat Official Account (公众号) message-push protocol, sans-IO.
//!
//! Everything here is a pure function of its inputs: no sockets, no files, no clock and
//! no randomness. Timestamps, nonces and the 16 random bytes of the message crypto are
//! arguments, so every function has a known-answer test (see `tests/vectors.rs`).
//!
//! The layers, from the wire inwards:
//! - [`auth`]: request authentication for one configured [`Endpoint`] — the typed
//!   [`Query`], the signature, the timestamp window (`now` is an argument), the
//!   configured mode, key rotation and the AppID — with one [`AuthError`].
//! - [`signature`]: `signature` and `msg_signature` (SHA1 over sorted parts), compared in
//!   constant time.
//! - [`key`] and [`crypto`]: the EncodingAESKey and the WXBizMsgCrypt scheme (AES-256-CBC,
//!   PKCS#7 over 32-byte blocks, the AppID check).
//! - [`envelope`]: the safe/compatible-mode request body and the encrypted reply body.
//! - [`inbound`]: the typed model of every message and event, parsed by the hardened
//!   reader in [`xml`].
//! - [`reply`]: the typed passive replies, written by the one CDATA-safe writer in [`xml`].
//! - [`dedup`]: the key WeChat's retries share; [`ids`]: [`OpenId`] (masked in `Debug`
//!   and `Display`) and [`MsgId`].
//!
//! Every error reports the official WXBizMsgCrypt code through [`ErrorCode`].

pub mod auth;
pub mod crypto;
pub mod dedup;
pub mod envelope;
mod error;
pub mod ids;
pub mod inbound;
pub mod key;
pub mod reply;
pub mod signature;
pub mod xml;

pub use auth::{
    AuthError, Authenticated, Endpoint, Freshness, KeyUsed, Mode, Query, QueryError, Refusal,
};
pub use crypto::{CryptoError, MessageCipher, Plaintext};
pub use dedup::{DedupKey, ParseDedupKeyError};
pub use envelope::{EncryptedReply, EnvelopeError, RequestEnvelope, RequestEnvelopeRef};
pub use error::ErrorCode;
pub use ids::{MaskedOpenId, MsgId, OpenId};
pub use inbound::{Event, Header, Inbound, Kind};
pub use key::{AesKey, AppId, KeyError, Token};
pub use reply::{Article, Reply, ReplyError, ReplyHeader, ReplyTarget};
pub use signature::{Signature, SignatureError};
pub use xml::{Element, Limits, ParseError, XmlWriter};
