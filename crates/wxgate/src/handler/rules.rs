//! Built-in rules from the config file: a matcher and a templated reply, no code needed.
//!
//! Templates are the reply's strings with `{field}` placeholders filled from the message's
//! JSON form (`{content}`, `{from_user_name}`, `{event_key}`, `{recognition}`, `{label}`,
//! …) and, for a `regex` rule, its capture groups (`{0}`, `{1}`, …). An unknown
//! placeholder is left as written, so a typo shows in the reply instead of vanishing.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use wechat_proto::{Event, Inbound, Kind, Reply};

use super::{text_of, Handler, HandlerContext, HandlerError, Matcher, Router};
use crate::config::{RuleAction, RuleConfig};

/// Builds the router of an account's rules, in order. `forward` is the account's
/// upstream handler, which `forward = true` rules hand their messages to.
pub fn router_from_rules(rules: &[RuleConfig], forward: Option<&Arc<dyn Handler>>) -> Router {
    rules.iter().fold(Router::new(), |router, rule| {
        let matcher = Matcher {
            kind: rule.kind.clone(),
            event: rule.event.clone(),
            keyword: rule.keyword.clone(),
            regex: rule.regex.clone(),
            from: rule.from.clone(),
        };
        match (&rule.action, forward) {
            (RuleAction::Forward, Some(upstream)) => {
                router.route_arc(matcher, Arc::clone(upstream))
            }
            // Config validation refuses a forward rule without an upstream; answering
            // `success` keeps the router total anyway.
            (RuleAction::Forward, None) => router.route(
                matcher,
                RuleHandler {
                    action: RuleAction::Success,
                    regex: None,
                },
            ),
            (action, _) => router.route(
                matcher,
                RuleHandler {
                    action: action.clone(),
                    regex: rule.regex.clone(),
                },
            ),
        }
    })
}

/// Answers one rule's action for a matched message.
#[derive(Debug, Clone)]
pub struct RuleHandler {
    action: RuleAction,
    regex: Option<regex::Regex>,
}

#[async_trait]
impl Handler for RuleHandler {
    async fn handle(
        &self,
        _context: &HandlerContext,
        inbound: &Inbound,
    ) -> Result<Option<Reply>, HandlerError> {
        match &self.action {
            RuleAction::Success | RuleAction::Forward => Ok(None),
            RuleAction::Echo => Ok(Some(echo(inbound))),
            RuleAction::Reply(template) => {
                render_template(template, inbound, self.regex.as_ref()).map(Some)
            }
        }
    }
}

/// The demo's echo: text back, voice recognition back, a description of anything else.
pub fn echo(inbound: &Inbound) -> Reply {
    let content = match &inbound.kind {
        Kind::Text { content } => content.clone(),
        Kind::Voice {
            recognition: Some(text),
            ..
        } if !text.is_empty() => format!("你说：{text}"),
        Kind::Voice { format, .. } => format!("收到一条语音（{format}）"),
        Kind::Image { .. } => "收到一张图片".to_owned(),
        Kind::Video { .. } => "收到一段视频".to_owned(),
        Kind::ShortVideo { .. } => "收到一段小视频".to_owned(),
        Kind::Location {
            location_x,
            location_y,
            label,
            ..
        } => format!("你的位置：{label}（{location_x}, {location_y}）"),
        Kind::Link { title, url, .. } => format!("收到链接：{title} {url}"),
        Kind::Event(Event::Subscribe { .. }) => "欢迎关注！发送任意文字，我会原样回复。".to_owned(),
        Kind::Event(event) => format!("收到事件：{}", event.name()),
        _ => format!("收到一条 {} 消息", inbound.msg_type()),
    };
    Reply::Text { content }
}

/// Fills the template's strings from the message.
fn render_template(
    template: &Reply,
    inbound: &Inbound,
    regex: Option<&regex::Regex>,
) -> Result<Reply, HandlerError> {
    let fields = serde_json::to_value(inbound)
        .map_err(|e| HandlerError::new(format!("cannot expose the message to a template: {e}")))?;
    let captures: Vec<String> = match (regex, text_of(inbound)) {
        (Some(regex), Some(text)) => regex
            .captures(text)
            .map(|caps| {
                caps.iter()
                    .map(|m| m.map_or(String::new(), |m| m.as_str().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut value = serde_json::to_value(template)
        .map_err(|e| HandlerError::new(format!("invalid reply template: {e}")))?;
    fill_strings(&mut value, &|text| fill(text, &fields, &captures));
    serde_json::from_value(value)
        .map_err(|e| HandlerError::new(format!("invalid reply template: {e}")))
}

fn fill_strings(value: &mut Value, fill: &dyn Fn(&str) -> Cow<'_, str>) {
    match value {
        Value::String(text) => {
            if let Cow::Owned(filled) = fill(text) {
                *text = filled;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| fill_strings(item, fill)),
        Value::Object(map) => map
            .iter_mut()
            .filter(|(key, _)| key.as_str() != "type")
            .for_each(|(_, item)| fill_strings(item, fill)),
        _ => {}
    }
}

/// Replaces `{name}` placeholders; unknown ones stay as written.
fn fill<'t>(text: &'t str, fields: &Value, captures: &[String]) -> Cow<'t, str> {
    if !text.contains('{') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return Cow::Owned(out);
        };
        let name = &after[..close];
        let value = match name.parse::<usize>() {
            Ok(index) => captures.get(index).cloned(),
            Err(_) => fields.get(name).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }),
        };
        match value {
            Some(value) => out.push_str(&value),
            None => {
                out.push('{');
                out.push_str(name);
                out.push('}');
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_from_fields_and_captures() {
        let fields = serde_json::json!({"content": "order 42", "create_time": 7});
        let captures = vec!["order 42".to_owned(), "42".to_owned()];
        assert_eq!(
            fill("no placeholders", &fields, &captures),
            "no placeholders"
        );
        assert_eq!(
            fill("you said {content}", &fields, &captures),
            "you said order 42"
        );
        assert_eq!(
            fill("#{1} at {create_time}", &fields, &captures),
            "#42 at 7"
        );
        assert_eq!(
            fill("{unknown} {9} {", &fields, &captures),
            "{unknown} {9} {"
        );
    }
}
