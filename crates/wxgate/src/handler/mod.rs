//! Handlers: the business logic behind an account, and the router that picks one.
//!
//! A [`Handler`] gets the typed [`Inbound`] and a [`HandlerContext`] and returns an
//! optional [`Reply`] (`None` answers `success`). The gateway runs it at most once per
//! message whatever WeChat's retries, in its own task: an error, a panic or a timeout is
//! recorded as a failure and the follower gets `success`; the process never goes down.
//!
//! [`Router`] matches on kind, event, keyword, regex and sender; the first matching route
//! wins. Built-in rules from the config file ([`rules`]) are routes too.

pub mod rules;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use wechat_proto::{DedupKey, Event, Inbound, Kind, Reply};

/// What a handler knows besides the message itself.
#[derive(Debug, Clone)]
pub struct HandlerContext {
    /// The account name the message arrived on.
    pub account: String,
    /// The message's dedup key (also the `Idempotency-Key` for upstream calls).
    pub dedup_key: DedupKey,
}

/// A handler failure, recorded in the inbox; the follower gets `success`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    /// A failure with a reason.
    pub fn new(reason: impl Into<String>) -> HandlerError {
        HandlerError(reason.into())
    }
}

/// The business logic of an account.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one message; `Ok(None)` answers the bare `success`.
    async fn handle(
        &self,
        context: &HandlerContext,
        inbound: &Inbound,
    ) -> Result<Option<Reply>, HandlerError>;
}

/// Any async closure is a handler.
#[async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(HandlerContext, Inbound) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Option<Reply>, HandlerError>> + Send + 'static,
{
    async fn handle(
        &self,
        context: &HandlerContext,
        inbound: &Inbound,
    ) -> Result<Option<Reply>, HandlerError> {
        (self)(context.clone(), inbound.clone()).await
    }
}

/// Which messages a route takes. Every condition that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    /// Wire `MsgType` (`text`, `event`, …).
    pub kind: Option<String>,
    /// Event name, compared case-insensitively.
    pub event: Option<String>,
    /// Exact text keyword, trimmed and compared case-insensitively.
    pub keyword: Option<String>,
    /// A regular expression over the text (content, or voice recognition).
    pub regex: Option<regex::Regex>,
    /// Only these senders.
    pub from: Vec<String>,
}

impl Matcher {
    /// Matches every message.
    pub fn any() -> Matcher {
        Matcher::default()
    }

    /// Matches one wire `MsgType`.
    pub fn kind(kind: &str) -> Matcher {
        Matcher {
            kind: Some(kind.to_owned()),
            ..Matcher::default()
        }
    }

    /// Matches one event name.
    pub fn event(event: &str) -> Matcher {
        Matcher {
            kind: Some("event".to_owned()),
            event: Some(event.to_owned()),
            ..Matcher::default()
        }
    }

    /// Matches a text message whose content is this keyword.
    pub fn keyword(keyword: &str) -> Matcher {
        Matcher {
            keyword: Some(keyword.to_owned()),
            ..Matcher::default()
        }
    }

    /// Whether the message satisfies every condition.
    pub fn matches(&self, inbound: &Inbound) -> bool {
        if let Some(kind) = &self.kind {
            if inbound.msg_type() != kind.as_str() {
                return false;
            }
        }
        if let Some(event) = &self.event {
            match &inbound.kind {
                Kind::Event(e) if e.name().eq_ignore_ascii_case(event) => {}
                _ => return false,
            }
        }
        if let Some(keyword) = &self.keyword {
            match &inbound.kind {
                Kind::Text { content } if content.trim().eq_ignore_ascii_case(keyword.trim()) => {}
                _ => return false,
            }
        }
        if let Some(regex) = &self.regex {
            match text_of(inbound) {
                Some(text) if regex.is_match(text) => {}
                _ => return false,
            }
        }
        self.from.is_empty() || self.from.contains(&inbound.header.from_user_name)
    }
}

/// The text a regex or keyword looks at: the content of a text message, the recognition
/// of a voice message, the event key of an event.
pub fn text_of(inbound: &Inbound) -> Option<&str> {
    match &inbound.kind {
        Kind::Text { content } => Some(content),
        Kind::Voice { recognition, .. } => recognition.as_deref(),
        Kind::Event(Event::Click { event_key }) => Some(event_key),
        _ => None,
    }
}

/// Routes messages to handlers; the first matching route wins.
#[derive(Clone, Default)]
pub struct Router {
    routes: Vec<(Matcher, Arc<dyn Handler>)>,
    fallback: Option<Arc<dyn Handler>>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field(
                "routes",
                &self.routes.iter().map(|(m, _)| m).collect::<Vec<_>>(),
            )
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl Router {
    /// An empty router: every message is answered `success`.
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds a route after the existing ones.
    pub fn route(mut self, matcher: Matcher, handler: impl Handler) -> Router {
        self.routes.push((matcher, Arc::new(handler)));
        self
    }

    /// Adds a route holding a shared handler.
    pub fn route_arc(mut self, matcher: Matcher, handler: Arc<dyn Handler>) -> Router {
        self.routes.push((matcher, handler));
        self
    }

    /// The handler for messages no route matches.
    pub fn fallback(mut self, handler: impl Handler) -> Router {
        self.fallback = Some(Arc::new(handler));
        self
    }

    /// The fallback as a shared handler.
    pub fn fallback_arc(mut self, handler: Arc<dyn Handler>) -> Router {
        self.fallback = Some(handler);
        self
    }

    /// The handler for this message, if any.
    pub fn select(&self, inbound: &Inbound) -> Option<&Arc<dyn Handler>> {
        self.routes
            .iter()
            .find(|(matcher, _)| matcher.matches(inbound))
            .map(|(_, handler)| handler)
            .or(self.fallback.as_ref())
    }
}

#[async_trait]
impl Handler for Router {
    async fn handle(
        &self,
        context: &HandlerContext,
        inbound: &Inbound,
    ) -> Result<Option<Reply>, HandlerError> {
        match self.select(inbound) {
            Some(handler) => handler.handle(context, inbound).await,
            None => Ok(None),
        }
    }
}
