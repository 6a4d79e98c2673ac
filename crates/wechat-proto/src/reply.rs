//! The passive replies an account may give inside WeChat's 5-second window.
//!
//! A [`Reply`] is rendered against a [`ReplyTarget`] (who, when, and how many articles are
//! allowed) by the one writer of [`crate::xml`]: every string in CDATA with `]]>` split and
//! forbidden characters dropped, element order as in the official samples. Rendering
//! refuses what WeChat would reject or silently mangle, with a typed [`ReplyError`]: a text
//! over 2048 bytes, a news reply with no article or more than allowed (docs/protocol.md §7: one
//! for a reply to a user message, eight otherwise), an empty media id.
//!
//! [`Reply::Success`] is the bare `success` acknowledgement, which needs no encryption
//! even in safe mode. [`Reply::parse`] reads a reply back, for the simulator and tests.
//!
//! # JSON form
//!
//! With the `serde` feature (on by default) a `Reply` has a stable JSON form, which is
//! how upstream services in other languages answer: an object whose `"type"` is the
//! snake_case reply type, followed by its fields in snake_case; optional fields may be
//! omitted.
//!
//! | `type` | fields |
//! |---|---|
//! | `success` | — |
//! | `text` | `content` |
//! | `image`, `voice` | `media_id` |
//! | `video` | `media_id`, optional `title`, `description` |
//! | `music` | optional `title`, `description`, `music_url`, `hq_music_url`; `thumb_media_id` |
//! | `news` | `articles`: `[{"title","description","pic_url","url"}]` |
//! | `transfer_customer_service` | optional `kf_account` |
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! use wechat_proto::reply::{Reply, ReplyTarget};
//!
//! let reply: Reply = serde_json::from_str(r#"{"type":"text","content":"你好"}"#).unwrap();
//! assert_eq!(reply, Reply::Text { content: "你好".into() });
//! assert_eq!(serde_json::to_string(&Reply::Success).unwrap(), r#"{"type":"success"}"#);
//!
//! let target = ReplyTarget {
//!     to_user_name: "toUser",
//!     from_user_name: "fromUser",
//!     create_time: 12345678,
//!     max_articles: 1,
//! };
//! assert_eq!(
//!     reply.render(&target).unwrap(),
//!     "<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[fromUser]]></FromUserName>\
//!      <CreateTime>12345678</CreateTime><MsgType><![CDATA[text]]></MsgType>\
//!      <Content><![CDATA[你好]]></Content></xml>"
//! );
//! # }
//! ```

use std::fmt;

use crate::inbound::Inbound;
use crate::xml::{parse_number, sanitize_xml_text, Document, Limits, ParseError, XmlWriter};
use crate::ErrorCode;

/// The longest text reply WeChat delivers, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 2048;

/// The most articles a news reply to an event may carry.
pub const MAX_ARTICLES_EVENT: usize = 8;

/// The most articles a news reply to a user message may carry.
pub const MAX_ARTICLES_USER_MESSAGE: usize = 1;

/// A passive reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(tag = "type", rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Reply {
    /// The bare `success` body: acknowledged, nothing shown to the user.
    Success,
    /// A text message.
    Text {
        /// The text; at most [`MAX_TEXT_BYTES`] bytes.
        content: String,
    },
    /// An uploaded picture.
    Image {
        /// Its media id; must not be empty.
        media_id: String,
    },
    /// An uploaded voice clip.
    Voice {
        /// Its media id; must not be empty.
        media_id: String,
    },
    /// An uploaded video.
    Video {
        /// Its media id; must not be empty.
        media_id: String,
        /// The title shown.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        title: Option<String>,
        /// The description shown.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        description: Option<String>,
    },
    /// A music card.
    Music {
        /// The title shown.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        title: Option<String>,
        /// The description shown.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        description: Option<String>,
        /// The music link (`MusicUrl`).
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        music_url: Option<String>,
        /// The high-quality link, used on Wi-Fi (`HQMusicUrl`).
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        hq_music_url: Option<String>,
        /// The media id of the cover; required.
        thumb_media_id: String,
    },
    /// Article cards.
    News {
        /// The articles; see [`ReplyTarget::max_articles`].
        articles: Vec<Article>,
    },
    /// Hands the conversation to customer service (多客服).
    TransferCustomerService {
        /// A specific agent (`TransInfo/KfAccount`), or any.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        kf_account: Option<String>,
    },
}

/// One article of a news reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Article {
    /// The title.
    pub title: String,
    /// The description.
    #[cfg_attr(feature = "serde", serde(default))]
    pub description: String,
    /// The picture (JPG or PNG; 360×200 for the first article, 200×200 for the others).
    #[cfg_attr(feature = "serde", serde(default))]
    pub pic_url: String,
    /// Where a tap leads.
    #[cfg_attr(feature = "serde", serde(default))]
    pub url: String,
}

/// Who a reply goes to, when, and what the inbound message allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTarget<'a> {
    /// The user's OpenID: the inbound `FromUserName`.
    pub to_user_name: &'a str,
    /// The account's original id: the inbound `ToUserName`.
    pub from_user_name: &'a str,
    /// The reply's `CreateTime`, in Unix seconds; passed in, never read from a clock.
    pub create_time: i64,
    /// The most articles a news reply may carry.
    pub max_articles: usize,
}

impl<'a> ReplyTarget<'a> {
    /// The target of a reply to `inbound`: the addresses swapped, and one article allowed
    /// for a user message, eight for an event (docs/protocol.md §7).
    pub fn answering(inbound: &'a Inbound, create_time: i64) -> Self {
        ReplyTarget {
            to_user_name: &inbound.header.from_user_name,
            from_user_name: &inbound.header.to_user_name,
            create_time,
            max_articles: if inbound.is_user_message() {
                MAX_ARTICLES_USER_MESSAGE
            } else {
                MAX_ARTICLES_EVENT
            },
        }
    }
}

/// The header of a parsed reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplyHeader {
    /// The user's OpenID.
    pub to_user_name: String,
    /// The account's original id.
    pub from_user_name: String,
    /// `CreateTime`, in Unix seconds.
    pub create_time: i64,
}

/// Why a reply was not rendered.
///
/// Every variant maps to the official code -40011 (`GenReturnXml_Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// The text is longer than WeChat delivers.
    TextTooLong {
        /// Its length in bytes (after dropping characters XML forbids).
        len: usize,
        /// [`MAX_TEXT_BYTES`].
        max: usize,
    },
    /// The news reply has more articles than the target allows.
    TooManyArticles {
        /// How many it has.
        count: usize,
        /// [`ReplyTarget::max_articles`].
        max: usize,
    },
    /// The news reply has no article.
    NoArticles,
    /// A required field is empty.
    MissingField {
        /// The element name, e.g. `"MediaId"`.
        field: &'static str,
    },
}

impl ReplyError {
    /// The official error code: always -40011 (`GenReturnXml_Error`).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::GenReturnXml
    }
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::TextTooLong { len, max } => {
                write!(f, "text reply of {len} bytes exceeds {max}")
            }
            ReplyError::TooManyArticles { count, max } => {
                write!(f, "news reply with {count} articles exceeds {max}")
            }
            ReplyError::NoArticles => f.write_str("news reply without articles"),
            ReplyError::MissingField { field } => write!(f, "reply field <{field}> is empty"),
        }
    }
}

impl std::error::Error for ReplyError {}

impl Reply {
    /// The wire `MsgType`; `"success"` for the bare acknowledgement, which has none.
    pub fn msg_type(&self) -> &'static str {
        match self {
            Reply::Success => "success",
            Reply::Text { .. } => "text",
            Reply::Image { .. } => "image",
            Reply::Voice { .. } => "voice",
            Reply::Video { .. } => "video",
            Reply::Music { .. } => "music",
            Reply::News { .. } => "news",
            Reply::TransferCustomerService { .. } => "transfer_customer_service",
        }
    }

    /// Renders the plaintext reply body: the reply XML, or `success` for
    /// [`Reply::Success`].
    pub fn render(&self, target: &ReplyTarget<'_>) -> Result<String, ReplyError> {
        let mut out = String::with_capacity(self.size_hint(target));
        self.write_into(target, &mut out)?;
        Ok(out)
    }

    /// Appends the body of [`Reply::render`] to `out`, which a hot loop can reuse.
    ///
    /// On error nothing is appended.
    pub fn write_into(&self, target: &ReplyTarget<'_>, out: &mut String) -> Result<(), ReplyError> {
        self.validate(target)?;
        if let Reply::Success = self {
            out.push_str("success");
            return Ok(());
        }
        let mut w = XmlWriter::new(out);
        w.start("xml");
        w.cdata_element("ToUserName", target.to_user_name);
        w.cdata_element("FromUserName", target.from_user_name);
        w.int_element("CreateTime", target.create_time);
        w.literal_cdata_element("MsgType", self.msg_type());
        match self {
            Reply::Success => {}
            Reply::Text { content } => w.cdata_element("Content", content),
            Reply::Image { media_id } => {
                w.start("Image");
                w.cdata_element("MediaId", media_id);
                w.end("Image");
            }
            Reply::Voice { media_id } => {
                w.start("Voice");
                w.cdata_element("MediaId", media_id);
                w.end("Voice");
            }
            Reply::Video {
                media_id,
                title,
                description,
            } => {
                w.start("Video");
                w.cdata_element("MediaId", media_id);
                optional(&mut w, "Title", title);
                optional(&mut w, "Description", description);
                w.end("Video");
            }
            Reply::Music {
                title,
                description,
                music_url,
                hq_music_url,
                thumb_media_id,
            } => {
                w.start("Music");
                optional(&mut w, "Title", title);
                optional(&mut w, "Description", description);
                optional(&mut w, "MusicUrl", music_url);
                optional(&mut w, "HQMusicUrl", hq_music_url);
                w.cdata_element("ThumbMediaId", thumb_media_id);
                w.end("Music");
            }
            Reply::News { articles } => {
                w.uint_element("ArticleCount", articles.len() as u64);
                w.start("Articles");
                for article in articles {
                    w.start("item");
                    w.cdata_element("Title", &article.title);
                    w.cdata_element("Description", &article.description);
                    w.cdata_element("PicUrl", &article.pic_url);
                    w.cdata_element("Url", &article.url);
                    w.end("item");
                }
                w.end("Articles");
            }
            Reply::TransferCustomerService { kf_account } => {
                if let Some(kf_account) = kf_account {
                    w.start("TransInfo");
                    w.cdata_element("KfAccount", kf_account);
                    w.end("TransInfo");
                }
            }
        }
        w.end("xml");
        Ok(())
    }

    /// About the length of the rendered body, so that [`Reply::render`] allocates once:
    /// the values plus generous room for the markup (a `]]>` split adds a few bytes more).
    pub(crate) fn size_hint(&self, target: &ReplyTarget<'_>) -> usize {
        let opt = |value: &Option<String>| value.as_ref().map_or(0, |v| v.len() + 40);
        let values = match self {
            Reply::Success => return "success".len(),
            Reply::Text { content } => content.len(),
            Reply::Image { media_id } | Reply::Voice { media_id } => media_id.len() + 64,
            Reply::Video {
                media_id,
                title,
                description,
            } => media_id.len() + 64 + opt(title) + opt(description),
            Reply::Music {
                title,
                description,
                music_url,
                hq_music_url,
                thumb_media_id,
            } => {
                thumb_media_id.len()
                    + 80
                    + opt(title)
                    + opt(description)
                    + opt(music_url)
                    + opt(hq_music_url)
            }
            Reply::News { articles } => articles.iter().fold(80, |len, article| {
                len + article.title.len()
                    + article.description.len()
                    + article.pic_url.len()
                    + article.url.len()
                    + 160
            }),
            Reply::TransferCustomerService { kf_account } => opt(kf_account) + 32,
        };
        // The header: tags, CDATA markers, the addresses and a timestamp.
        values + target.to_user_name.len() + target.from_user_name.len() + 224
    }

    /// Checks what WeChat would reject or mangle, before anything is written.
    fn validate(&self, target: &ReplyTarget<'_>) -> Result<(), ReplyError> {
        let not_empty = |value: &str, field: &'static str| {
            if sanitize_xml_text(value).is_empty() {
                Err(ReplyError::MissingField { field })
            } else {
                Ok(())
            }
        };
        match self {
            Reply::Text { content } => {
                // Sanitizing only ever removes characters: a text within the limit as it
                // is needs no scan.
                if content.len() <= MAX_TEXT_BYTES {
                    return Ok(());
                }
                let len = sanitize_xml_text(content).len();
                if len > MAX_TEXT_BYTES {
                    return Err(ReplyError::TextTooLong {
                        len,
                        max: MAX_TEXT_BYTES,
                    });
                }
            }
            Reply::Image { media_id }
            | Reply::Voice { media_id }
            | Reply::Video { media_id, .. } => {
                not_empty(media_id, "MediaId")?;
            }
            Reply::Music { thumb_media_id, .. } => not_empty(thumb_media_id, "ThumbMediaId")?,
            Reply::News { articles } => {
                if articles.is_empty() {
                    return Err(ReplyError::NoArticles);
                }
                if articles.len() > target.max_articles {
                    return Err(ReplyError::TooManyArticles {
                        count: articles.len(),
                        max: target.max_articles,
                    });
                }
            }
            Reply::Success | Reply::TransferCustomerService { .. } => {}
        }
        Ok(())
    }

    /// Parses a plaintext reply body with the default [`Limits`].
    ///
    /// `success` and an empty (or whitespace-only) body are [`Reply::Success`], with a
    /// default header. Required fields must be present; their emptiness is not checked
    /// here (that is [`Reply::render`]'s job).
    pub fn parse(xml: &[u8]) -> Result<(ReplyHeader, Reply), ParseError> {
        Reply::parse_with_limits(xml, Limits::default())
    }

    /// Parses a plaintext reply body.
    pub fn parse_with_limits(
        xml: &[u8],
        limits: Limits,
    ) -> Result<(ReplyHeader, Reply), ParseError> {
        let trimmed = xml.trim_ascii();
        if trimmed.is_empty() || trimmed == b"success" {
            return Ok((ReplyHeader::default(), Reply::Success));
        }
        let mut doc = Document::parse(xml, limits)?;
        let root = Document::ROOT;
        let to_user_name = required(&mut doc, root, "ToUserName")?;
        let from_user_name = required(&mut doc, root, "FromUserName")?;
        let create_time_index = doc
            .child(root, "CreateTime")
            .ok_or(ParseError::MissingField {
                field: "CreateTime",
            })?;
        let create_time_text = doc.text(create_time_index);
        let create_time =
            parse_number(create_time_text).ok_or_else(|| ParseError::InvalidNumber {
                field: "CreateTime",
                value: create_time_text.to_owned(),
            })?;
        let msg_type = required(&mut doc, root, "MsgType")?;
        let header = ReplyHeader {
            to_user_name,
            from_user_name,
            create_time,
        };

        let reply = match msg_type.as_str() {
            "text" => Reply::Text {
                content: required(&mut doc, root, "Content")?,
            },
            "image" => Reply::Image {
                media_id: required_in(&mut doc, "Image", "MediaId")?,
            },
            "voice" => Reply::Voice {
                media_id: required_in(&mut doc, "Voice", "MediaId")?,
            },
            "video" => {
                let video = container(&doc, "Video")?;
                Reply::Video {
                    media_id: required(&mut doc, video, "MediaId")?,
                    title: take_optional(&mut doc, video, "Title"),
                    description: take_optional(&mut doc, video, "Description"),
                }
            }
            "music" => {
                let music = container(&doc, "Music")?;
                Reply::Music {
                    title: take_optional(&mut doc, music, "Title"),
                    description: take_optional(&mut doc, music, "Description"),
                    music_url: take_optional(&mut doc, music, "MusicUrl"),
                    hq_music_url: take_optional(&mut doc, music, "HQMusicUrl"),
                    thumb_media_id: required(&mut doc, music, "ThumbMediaId")?,
                }
            }
            "news" => parse_news(&mut doc)?,
            "transfer_customer_service" => {
                let kf_account = match doc.child(root, "TransInfo") {
                    Some(info) => take_optional(&mut doc, info, "KfAccount"),
                    None => None,
                };
                Reply::TransferCustomerService { kf_account }
            }
            _ => return Err(ParseError::UnknownMsgType { msg_type }),
        };
        Ok((header, reply))
    }
}

/// Writes `<name>` when the value is present.
fn optional(w: &mut XmlWriter<'_>, name: &'static str, value: &Option<String>) {
    if let Some(value) = value {
        w.cdata_element(name, value);
    }
}

/// The text of a required child.
fn required(
    doc: &mut Document<'_>,
    parent: usize,
    field: &'static str,
) -> Result<String, ParseError> {
    doc.child(parent, field)
        .map(|index| doc.take_text(index))
        .ok_or(ParseError::MissingField { field })
}

/// The text of a required child of a required container under the root.
fn required_in(
    doc: &mut Document<'_>,
    container_name: &'static str,
    field: &'static str,
) -> Result<String, ParseError> {
    let parent = container(doc, container_name)?;
    required(doc, parent, field)
}

/// A required container element under the root.
fn container(doc: &Document<'_>, field: &'static str) -> Result<usize, ParseError> {
    doc.child(Document::ROOT, field)
        .ok_or(ParseError::MissingField { field })
}

/// The text of an optional child.
fn take_optional(doc: &mut Document<'_>, parent: usize, field: &str) -> Option<String> {
    doc.child(parent, field).map(|index| doc.take_text(index))
}

/// The articles of a news reply; `ArticleCount` must match them.
fn parse_news(doc: &mut Document<'_>) -> Result<Reply, ParseError> {
    let root = Document::ROOT;
    let count_index = doc
        .child(root, "ArticleCount")
        .ok_or(ParseError::MissingField {
            field: "ArticleCount",
        })?;
    let count_text = doc.text(count_index);
    let count: usize = parse_number(count_text).ok_or_else(|| ParseError::InvalidNumber {
        field: "ArticleCount",
        value: count_text.to_owned(),
    })?;
    let list = container(doc, "Articles")?;
    let items: Vec<usize> = doc
        .children(list)
        .filter(|&item| doc.name(item) == "item")
        .collect();
    if items.len() != count {
        return Err(ParseError::Malformed {
            reason: format!("ArticleCount {count} but {} articles", items.len()),
        });
    }
    let articles = items
        .into_iter()
        .map(|item| Article {
            title: take_optional(doc, item, "Title").unwrap_or_default(),
            description: take_optional(doc, item, "Description").unwrap_or_default(),
            pic_url: take_optional(doc, item, "PicUrl").unwrap_or_default(),
            url: take_optional(doc, item, "Url").unwrap_or_default(),
        })
        .collect();
    Ok(Reply::News { articles })
}
