//! `wxgate`: the WeChat Official Account message webhook gateway.
//!
//! Verifies, decrypts, records durably, deduplicates with single flight, and answers
//! within WeChat's 5-second window with a chosen policy. Use it as the `wxgate` binary, or
//! as a library: build a [`gateway::Gateway`] from a [`config::Config`] and a store, add
//! your own [`handler::Handler`]s, and mount [`gateway::Gateway::router`] in your app.
//!
//! The protocol itself (signatures, crypto, XML) lives in the sans-IO `wechat-proto`
//! crate; this crate is the I/O shell around it. See ARCHITECTURE.md for the code map.

pub mod clock;
pub mod config;
pub mod console;
pub mod error;
pub mod forward;
pub mod gateway;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod push;
pub mod serve;
pub mod sim;
pub mod store;
pub mod tools;

pub use config::Config;
pub use gateway::{Gateway, GatewayBuilder};
pub use handler::{Handler, HandlerContext, HandlerError, Matcher, Router};
