//! `wxgate sim`: plays WeChat's server against any webhook.
//!
//! WeChat's own debugging tool needs the internet and knows nothing of retries; this one
//! runs anywhere, against wxgate or any other server, and says what the follower would
//! finally see. It is also the gateway's own end-to-end and load-testing harness.
//!
//! - [`wechat`] builds requests exactly as WeChat does (signatures, modes, encryption) and
//!   reads answers as WeChat would: the verdict.
//! - [`messages`] builds every kind of message and event to send.
//! - [`send`] delivers one request with WeChat's retry timing and reports every attempt;
//!   [`verify`] is the URL-verification GET.
//! - [`storm`] runs many deliveries at once, with duplicates.
//! - [`load`] measures throughput and latency with pre-built distinct messages, over the
//!   lean client of [`http1`].
//! - [`report`] holds the shared latency histogram and text helpers; [`cli`] the command
//!   line of `wxgate sim`.
//!
//! Everything protocol-related comes from `wechat-proto`; nothing here trusts the server.

pub mod cli;
pub mod http1;
pub mod load;
pub mod messages;
pub mod report;
pub mod send;
pub mod storm;
pub mod verify;
pub mod wechat;
