//! The customer-service message API: `POST /cgi-bin/message/custom/send` (docs/protocol.md §8).
//!
//! [`message_json`] is the pure mapping of a [`Reply`] to the API's JSON; the client adds
//! the access token and turns WeChat's `errcode` into a typed [`PushError`]. A rejected
//! token (40001, 42001, 40014) is replaced and the send tried once more.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use wechat_proto::Reply;

use super::token::TokenCache;
use super::PushError;

/// How long one send may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON body of a customer-service message carrying `reply` to `to_user`.
///
/// `Success` (nothing to say) and `TransferCustomerService` (a passive-only reply) have no
/// customer-service form and give [`PushError::Undeliverable`].
pub fn message_json(to_user: &str, reply: &Reply) -> Result<Value, PushError> {
    let (msgtype, content) = match reply {
        Reply::Text { content } => ("text", json!({ "content": content })),
        Reply::Image { media_id } => ("image", json!({ "media_id": media_id })),
        Reply::Voice { media_id } => ("voice", json!({ "media_id": media_id })),
        Reply::Video {
            media_id,
            title,
            description,
        } => {
            let mut video = json!({ "media_id": media_id });
            if let Some(title) = title {
                video["title"] = json!(title);
            }
            if let Some(description) = description {
                video["description"] = json!(description);
            }
            ("video", video)
        }
        Reply::Music {
            title,
            description,
            music_url,
            hq_music_url,
            thumb_media_id,
        } => (
            "music",
            json!({
                "title": title.clone().unwrap_or_default(),
                "description": description.clone().unwrap_or_default(),
                "musicurl": music_url.clone().unwrap_or_default(),
                "hqmusicurl": hq_music_url.clone().unwrap_or_default(),
                "thumb_media_id": thumb_media_id,
            }),
        ),
        Reply::News { articles } => (
            "news",
            json!({
                "articles": articles
                    .iter()
                    .map(|a| json!({
                        "title": a.title,
                        "description": a.description,
                        "url": a.url,
                        "picurl": a.pic_url,
                    }))
                    .collect::<Vec<_>>()
            }),
        ),
        Reply::Success => return Err(PushError::Undeliverable("success")),
        Reply::TransferCustomerService { .. } => {
            return Err(PushError::Undeliverable("transfer_customer_service"))
        }
        _ => return Err(PushError::Undeliverable("unknown")),
    };
    let mut body = json!({ "touser": to_user, "msgtype": msgtype });
    body[msgtype] = content;
    Ok(body)
}

#[derive(Deserialize)]
struct ApiAnswer {
    errcode: Option<i64>,
    errmsg: Option<String>,
}

/// Sends customer-service messages for one account.
#[derive(Debug)]
pub struct CustomerServiceClient {
    http: reqwest::Client,
    api_base: String,
    tokens: TokenCache,
}

impl CustomerServiceClient {
    /// A client of `api_base`, with the account's token cache.
    pub fn new(http: reqwest::Client, api_base: &str, tokens: TokenCache) -> CustomerServiceClient {
        CustomerServiceClient {
            http,
            api_base: api_base.trim_end_matches('/').to_owned(),
            tokens,
        }
    }

    /// The account's token cache.
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// Sends `reply` to `to_user`; a rejected token is replaced and the send tried again.
    pub async fn send(&self, to_user: &str, reply: &Reply) -> Result<(), PushError> {
        let body = message_json(to_user, reply)?;
        let mut result = Ok(());
        for _ in 0..2 {
            let token = self.tokens.get().await?;
            result = self.post(token.expose(), &body).await;
            match &result {
                Err(error) if error.is_token_rejected() => self.tokens.invalidate(&token).await,
                _ => return result,
            }
        }
        result
    }

    async fn post(&self, token: &str, body: &Value) -> Result<(), PushError> {
        let request = self
            .http
            .post(format!("{}/cgi-bin/message/custom/send", self.api_base))
            .query(&[("access_token", token)])
            .json(body)
            .timeout(SEND_TIMEOUT);
        let answer: ApiAnswer = call_api(request).await?;
        match answer.errcode {
            None | Some(0) => Ok(()),
            Some(code) => Err(PushError::Api {
                code,
                message: answer.errmsg.unwrap_or_default(),
            }),
        }
    }
}

/// Sends one call to WeChat's API and reads its JSON answer: a status other than 200, an
/// unreadable body and a network failure are each their own [`PushError`]. Errors never
/// carry the URL, whose query holds the access token.
pub(crate) async fn call_api<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<T, PushError> {
    let response = request
        .send()
        .await
        .map_err(|e| PushError::Network(e.without_url().to_string()))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(PushError::Status(status));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| PushError::Network(e.without_url().to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| PushError::BadAnswer(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wechat_proto::reply::Article;

    #[test]
    fn replies_map_to_the_documented_json() {
        let check = |reply: Reply, expected: Value| {
            assert_eq!(message_json("OPENID", &reply).unwrap(), expected);
        };
        check(
            Reply::Text {
                content: "Hello World".into(),
            },
            json!({"touser":"OPENID","msgtype":"text","text":{"content":"Hello World"}}),
        );
        check(
            Reply::Image {
                media_id: "M".into(),
            },
            json!({"touser":"OPENID","msgtype":"image","image":{"media_id":"M"}}),
        );
        check(
            Reply::Voice {
                media_id: "V".into(),
            },
            json!({"touser":"OPENID","msgtype":"voice","voice":{"media_id":"V"}}),
        );
        check(
            Reply::Video {
                media_id: "M".into(),
                title: Some("t".into()),
                description: None,
            },
            json!({"touser":"OPENID","msgtype":"video","video":{"media_id":"M","title":"t"}}),
        );
        check(
            Reply::Music {
                title: Some("t".into()),
                description: None,
                music_url: Some("http://m".into()),
                hq_music_url: None,
                thumb_media_id: "T".into(),
            },
            json!({"touser":"OPENID","msgtype":"music","music":{"title":"t","description":"","musicurl":"http://m","hqmusicurl":"","thumb_media_id":"T"}}),
        );
        check(
            Reply::News {
                articles: vec![Article {
                    title: "T".into(),
                    description: "D".into(),
                    pic_url: "P".into(),
                    url: "U".into(),
                }],
            },
            json!({"touser":"OPENID","msgtype":"news","news":{"articles":[{"title":"T","description":"D","url":"U","picurl":"P"}]}}),
        );
        for reply in [
            Reply::Success,
            Reply::TransferCustomerService { kf_account: None },
        ] {
            assert!(matches!(
                message_json("OPENID", &reply),
                Err(PushError::Undeliverable(_))
            ));
        }
    }
}
