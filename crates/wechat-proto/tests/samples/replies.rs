//! Envelopes and replies: what the samples do not show, and the JSON forms.

use wechat_proto::envelope::{EncryptedReply, EnvelopeError, RequestEnvelope};
use wechat_proto::inbound::Inbound;
use wechat_proto::reply::{Article, Reply, ReplyError, ReplyHeader, ReplyTarget};
use wechat_proto::xml::ParseError;
use wechat_proto::ErrorCode;

use super::{event, message};

// ---------------------------------------------------------------------------------------
// Envelopes.

#[test]
fn envelope_requires_encrypt_and_keeps_it_exactly() {
    let error = RequestEnvelope::parse(b"<xml><ToUserName>gh</ToUserName></xml>").unwrap_err();
    assert_eq!(error, EnvelopeError::MissingEncrypt);
    assert_eq!(error.code(), ErrorCode::ParseXml);
    let envelope =
        RequestEnvelope::parse(b"<xml><Encrypt>\n  a+b/c= \n</Encrypt><Other><X/></Other></xml>")
            .unwrap();
    assert_eq!(
        envelope,
        RequestEnvelope {
            to_user_name: None,
            encrypt: "\n  a+b/c= \n".into()
        }
    );
    assert!(matches!(
        RequestEnvelope::parse(b"not xml"),
        Err(EnvelopeError::Xml(_))
    ));
    assert!(matches!(
        EncryptedReply::parse(
            b"<xml><Encrypt>a</Encrypt><TimeStamp>1</TimeStamp><Nonce>n</Nonce></xml>"
        ),
        Err(EnvelopeError::MissingField {
            field: "MsgSignature"
        })
    ));
}

#[test]
fn encrypted_reply_escapes_its_values() {
    let reply = EncryptedReply {
        encrypt: "a]]>b".into(),
        msg_signature: "s".into(),
        timestamp: "1<2".into(),
        nonce: "n\u{0}".into(),
    };
    let xml = reply.to_xml();
    assert!(xml.contains("<TimeStamp>1&lt;2</TimeStamp>"), "{xml}");
    let parsed = EncryptedReply::parse(xml.as_bytes()).unwrap();
    assert_eq!(
        parsed,
        EncryptedReply {
            nonce: "n".into(),
            ..reply
        }
    );
}

// ---------------------------------------------------------------------------------------
// Replies.

fn target(max_articles: usize) -> ReplyTarget<'static> {
    ReplyTarget {
        to_user_name: "oUser",
        from_user_name: "gh_1",
        create_time: 1,
        max_articles,
    }
}

fn text_reply(len: usize) -> Reply {
    Reply::Text {
        content: "字".repeat(len / 3) + &"a".repeat(len % 3),
    }
}

#[test]
fn text_reply_is_limited_to_2048_bytes() {
    assert!(text_reply(2048).render(&target(1)).is_ok());
    let error = text_reply(2049).render(&target(1)).unwrap_err();
    assert_eq!(
        error,
        ReplyError::TextTooLong {
            len: 2049,
            max: 2048
        }
    );
    assert_eq!(error.code(), ErrorCode::GenReturnXml);
    assert_eq!(error.code().as_i32(), -40011);
    // Characters that are dropped do not count.
    let content = "a".repeat(2048) + "\u{1}";
    assert!(Reply::Text { content }.render(&target(1)).is_ok());
}

#[test]
fn article_count_depends_on_what_is_answered() {
    let news = |n: usize| Reply::News {
        articles: (0..n)
            .map(|i| Article {
                title: format!("t{i}"),
                ..Article::default()
            })
            .collect(),
    };
    let text =
        Inbound::parse(message("<MsgType>text</MsgType><Content>x</Content>").as_bytes()).unwrap();
    let click =
        Inbound::parse(message(&event("CLICK", "<EventKey>k</EventKey>")).as_bytes()).unwrap();
    let to_text = ReplyTarget::answering(&text, 5);
    let to_click = ReplyTarget::answering(&click, 5);
    assert_eq!(
        (
            to_text.to_user_name,
            to_text.from_user_name,
            to_text.create_time
        ),
        ("oUser", "gh_1", 5)
    );
    assert_eq!(to_text.max_articles, 1);
    assert_eq!(to_click.max_articles, 8);

    assert!(news(1).render(&to_text).is_ok());
    assert_eq!(
        news(2).render(&to_text),
        Err(ReplyError::TooManyArticles { count: 2, max: 1 })
    );
    assert!(news(8).render(&to_click).is_ok());
    assert_eq!(
        news(9).render(&to_click),
        Err(ReplyError::TooManyArticles { count: 9, max: 8 })
    );
    assert_eq!(news(0).render(&to_click), Err(ReplyError::NoArticles));
}

#[test]
fn required_media_ids_must_not_be_empty() {
    let music = Reply::Music {
        title: None,
        description: None,
        music_url: None,
        hq_music_url: None,
        thumb_media_id: String::new(),
    };
    assert_eq!(
        music.render(&target(8)),
        Err(ReplyError::MissingField {
            field: "ThumbMediaId"
        })
    );
    let image = Reply::Image {
        media_id: "\u{0}".into(),
    };
    assert_eq!(
        image.render(&target(8)),
        Err(ReplyError::MissingField { field: "MediaId" })
    );
}

#[test]
fn success_is_the_bare_acknowledgement() {
    assert_eq!(Reply::Success.render(&target(1)).unwrap(), "success");
    for body in [&b"success"[..], b"", b"  success\n"] {
        assert_eq!(
            Reply::parse(body).unwrap(),
            (ReplyHeader::default(), Reply::Success)
        );
    }
    let mut out = String::from("prefix:");
    Reply::Text {
        content: "x".into(),
    }
    .write_into(&target(1), &mut out)
    .unwrap();
    assert!(out.starts_with("prefix:<xml>"));
    assert!(text_reply(3000).write_into(&target(1), &mut out).is_err());
    assert!(out.ends_with("</xml>"), "nothing appended on error");
}

#[test]
fn reply_parse_rejects_incomplete_replies() {
    let head = "<ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>";
    for (body, error) in [
        (
            "<MsgType>image</MsgType>",
            ParseError::MissingField { field: "Image" },
        ),
        (
            "<MsgType>image</MsgType><Image/>",
            ParseError::MissingField { field: "MediaId" },
        ),
        (
            "<MsgType>text</MsgType>",
            ParseError::MissingField { field: "Content" },
        ),
        (
            "<MsgType>json</MsgType>",
            ParseError::UnknownMsgType {
                msg_type: "json".into(),
            },
        ),
    ] {
        assert_eq!(
            Reply::parse(format!("<xml>{head}{body}</xml>").as_bytes()),
            Err(error),
            "{body}"
        );
    }
    let news = format!("<xml>{head}<MsgType>news</MsgType><ArticleCount>2</ArticleCount><Articles><item/></Articles></xml>");
    assert!(matches!(
        Reply::parse(news.as_bytes()),
        Err(ParseError::Malformed { .. })
    ));
}

#[cfg(feature = "serde")]
#[test]
fn reply_json_form() {
    for (reply, json) in [
        (Reply::Success, r#"{"type":"success"}"#),
        (
            Reply::Text {
                content: "hi".into(),
            },
            r#"{"type":"text","content":"hi"}"#,
        ),
        (
            Reply::Image {
                media_id: "m".into(),
            },
            r#"{"type":"image","media_id":"m"}"#,
        ),
        (
            Reply::Video {
                media_id: "m".into(),
                title: Some("t".into()),
                description: None,
            },
            r#"{"type":"video","media_id":"m","title":"t"}"#,
        ),
        (
            Reply::News {
                articles: vec![Article {
                    title: "t".into(),
                    description: "d".into(),
                    pic_url: "p".into(),
                    url: "u".into(),
                }],
            },
            r#"{"type":"news","articles":[{"title":"t","description":"d","pic_url":"p","url":"u"}]}"#,
        ),
        (
            Reply::TransferCustomerService { kf_account: None },
            r#"{"type":"transfer_customer_service"}"#,
        ),
        (
            Reply::TransferCustomerService {
                kf_account: Some("a@b".into()),
            },
            r#"{"type":"transfer_customer_service","kf_account":"a@b"}"#,
        ),
    ] {
        assert_eq!(serde_json::to_string(&reply).unwrap(), json);
        assert_eq!(serde_json::from_str::<Reply>(json).unwrap(), reply);
    }
}

#[cfg(feature = "serde")]
#[test]
fn inbound_json_form() {
    let xml = message("<MsgType>voice</MsgType><MediaId>m</MediaId><Format>amr</Format><Recognition></Recognition><MsgId>18446744073709551615</MsgId>");
    let inbound = Inbound::parse(xml.as_bytes()).unwrap();
    let json = serde_json::to_string(&inbound).unwrap();
    assert_eq!(
        json,
        r#"{"to_user_name":"gh_1","from_user_name":"oUser","create_time":1700000000,"msg_id":"18446744073709551615","type":"voice","media_id":"m","format":"amr","recognition":""}"#
    );
    // A number is accepted for msg_id too.
    let numeric = json.replace(r#""18446744073709551615""#, "18446744073709551615");
    assert_eq!(serde_json::from_str::<Inbound>(&numeric).unwrap(), inbound);
    let xml = message(&event("scancode_push", "<EventKey>6</EventKey><ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>1</ScanResult></ScanCodeInfo>"));
    let value = serde_json::to_value(Inbound::parse(xml.as_bytes()).unwrap()).unwrap();
    assert_eq!(value["type"], "event");
    assert_eq!(value["event"], "scancode_push");
    assert_eq!(value["scan_result"], "1");
}
