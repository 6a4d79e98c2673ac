//! Every `sample_xml` entry of `tests/data/vectors.json`, plus the behaviour the samples
//! do not show (spelling variants, unknown kinds, limits, the reply rules).
//!
//! Inbound samples are parsed and each `expect` key is looked up in the typed model by
//! [`inbound_value`]; a key it does not know fails the test, so nothing is skipped
//! silently. Reply samples are parsed and rendered again, and must come out identical.
//! Envelope samples are parsed and, for the encrypted reply, written again.

use serde_json::Value;
use wechat_proto::dedup::DedupKey;
use wechat_proto::envelope::{EncryptedReply, EnvelopeError, RequestEnvelope};
use wechat_proto::inbound::{Event, Header, Inbound, Kind};
use wechat_proto::reply::{Article, Reply, ReplyError, ReplyHeader, ReplyTarget};
use wechat_proto::xml::{Element, Limits, ParseError};
use wechat_proto::ErrorCode;

/// One `sample_xml` entry.
struct Sample {
    id: String,
    direction: String,
    xml: String,
    expect: Vec<(String, String)>,
}

fn samples() -> Vec<Sample> {
    let vectors: Value =
        serde_json::from_str(include_str!("data/vectors.json")).expect("vectors.json is JSON");
    let entries = vectors["sample_xml"]
        .as_array()
        .expect("sample_xml section");
    entries
        .iter()
        .map(|entry| {
            let text = |field: &str| {
                entry[field]
                    .as_str()
                    .unwrap_or_else(|| panic!("{field} missing in {entry}"))
                    .to_owned()
            };
            let expect = entry["expect"]
                .as_object()
                .unwrap_or_else(|| panic!("expect missing in {entry}"))
                .iter()
                .map(|(key, value)| {
                    let value = value
                        .as_str()
                        .unwrap_or_else(|| panic!("{key} not a string"));
                    (key.clone(), value.to_owned())
                })
                .collect();
            Sample {
                id: text("id"),
                direction: text("direction"),
                xml: text("xml"),
                expect,
            }
        })
        .collect()
}

/// A value of the model, compared with an `expect` string.
#[derive(Debug)]
enum Actual {
    Text(String),
    Number(f64),
    Absent,
}

impl Actual {
    fn text(value: &str) -> Actual {
        Actual::Text(value.to_owned())
    }

    fn matches(&self, expected: &str) -> bool {
        match self {
            Actual::Text(actual) => actual == expected,
            Actual::Number(actual) => expected.parse::<f64>().is_ok_and(|e| e == *actual),
            Actual::Absent => false,
        }
    }
}

/// Looks an `expect` key up in the typed model. Panics on a key it does not map.
fn inbound_value(inbound: &Inbound, raw: &Element, key: &str) -> Actual {
    let header = &inbound.header;
    let event = match &inbound.kind {
        Kind::Event(event) => Some(event),
        _ => None,
    };
    let opt = |value: &Option<String>| value.as_deref().map_or(Actual::Absent, Actual::text);
    match (key, &inbound.kind, event) {
        ("ToUserName", ..) => Actual::text(&header.to_user_name),
        ("FromUserName", ..) => Actual::text(&header.from_user_name),
        ("CreateTime", ..) => Actual::Number(header.create_time as f64),
        ("MsgType", ..) => Actual::text(inbound.msg_type()),
        ("MsgId", ..) => header
            .msg_id
            .map_or(Actual::Absent, |id| Actual::Text(id.to_string())),
        ("MsgID", _, Some(Event::TemplateSendJobFinish { msg_id, .. }))
        | ("MsgID", _, Some(Event::MassSendJobFinish { msg_id, .. })) => {
            msg_id.map_or(Actual::Absent, |id| Actual::Text(id.to_string()))
        }
        ("Content", Kind::Text { content }, _) => Actual::text(content),
        ("PicUrl", Kind::Image { pic_url, .. }, _) => Actual::text(pic_url),
        ("MediaId", Kind::Image { media_id, .. } | Kind::Voice { media_id, .. }, _)
        | ("MediaId", Kind::Video { media_id, .. } | Kind::ShortVideo { media_id, .. }, _) => {
            Actual::text(media_id)
        }
        ("Format", Kind::Voice { format, .. }, _) => Actual::text(format),
        ("Recognition", Kind::Voice { recognition, .. }, _) => opt(recognition),
        ("MediaId16K", Kind::Voice { media_id_16k, .. }, _) => opt(media_id_16k),
        (
            "ThumbMediaId",
            Kind::Video { thumb_media_id, .. } | Kind::ShortVideo { thumb_media_id, .. },
            _,
        ) => Actual::text(thumb_media_id),
        ("Location_X", Kind::Location { location_x, .. }, _) => Actual::Number(*location_x),
        ("Location_Y", Kind::Location { location_y, .. }, _) => Actual::Number(*location_y),
        ("Scale", Kind::Location { scale, .. }, _) => scale.map_or(Actual::Absent, Actual::Number),
        ("Label", Kind::Location { label, .. }, _) => Actual::text(label),
        ("Title", Kind::Link { title, .. }, _) => Actual::text(title),
        ("Description", Kind::Link { description, .. }, _) => Actual::text(description),
        ("Url", Kind::Link { url, .. }, _) => Actual::text(url),
        ("Event", _, Some(event)) => Actual::text(event.name()),
        ("EventKey", _, Some(event)) => match event {
            Event::Subscribe { event_key, .. } => opt(event_key),
            Event::Scan { event_key, .. }
            | Event::Click { event_key }
            | Event::View { url: event_key, .. }
            | Event::ViewMiniprogram {
                page_path: event_key,
                ..
            }
            | Event::ScancodePush { event_key, .. }
            | Event::ScancodeWaitmsg { event_key, .. }
            | Event::PicSysphoto { event_key, .. }
            | Event::PicPhotoOrAlbum { event_key, .. }
            | Event::PicWeixin { event_key, .. }
            | Event::LocationSelect { event_key, .. } => Actual::text(event_key),
            other => panic!("EventKey not mapped for {other:?}"),
        },
        ("Ticket", _, Some(Event::Subscribe { ticket, .. } | Event::Scan { ticket, .. })) => {
            opt(ticket)
        }
        ("Latitude", _, Some(Event::Location { latitude, .. })) => Actual::Number(*latitude),
        ("Longitude", _, Some(Event::Location { longitude, .. })) => Actual::Number(*longitude),
        ("Precision", _, Some(Event::Location { precision, .. })) => {
            precision.map_or(Actual::Absent, Actual::Number)
        }
        (
            "MenuId",
            _,
            Some(Event::View { menu_id, .. } | Event::ViewMiniprogram { menu_id, .. }),
        ) => opt(menu_id),
        (
            "ScanCodeInfo/ScanType",
            _,
            Some(Event::ScancodePush { scan_type, .. } | Event::ScancodeWaitmsg { scan_type, .. }),
        ) => Actual::text(scan_type),
        (
            "ScanCodeInfo/ScanResult",
            _,
            Some(
                Event::ScancodePush { scan_result, .. }
                | Event::ScancodeWaitmsg { scan_result, .. },
            ),
        ) => Actual::text(scan_result),
        (
            "SendPicsInfo/Count",
            _,
            Some(
                Event::PicSysphoto { count, .. }
                | Event::PicPhotoOrAlbum { count, .. }
                | Event::PicWeixin { count, .. },
            ),
        ) => Actual::Number(f64::from(*count)),
        (
            "SendPicsInfo/PicList/item/PicMd5Sum",
            _,
            Some(
                Event::PicSysphoto { pic_md5_sums, .. }
                | Event::PicPhotoOrAlbum { pic_md5_sums, .. }
                | Event::PicWeixin { pic_md5_sums, .. },
            ),
        ) => pic_md5_sums
            .first()
            .map_or(Actual::Absent, |sum| Actual::text(sum)),
        ("SendLocationInfo/Location_X", _, Some(Event::LocationSelect { location_x, .. })) => {
            Actual::Number(*location_x)
        }
        ("SendLocationInfo/Location_Y", _, Some(Event::LocationSelect { location_y, .. })) => {
            Actual::Number(*location_y)
        }
        ("SendLocationInfo/Label", _, Some(Event::LocationSelect { label, .. })) => {
            Actual::text(label)
        }
        ("SendLocationInfo/Poiname", _, Some(Event::LocationSelect { poiname, .. })) => {
            Actual::text(poiname)
        }
        (
            "Status",
            _,
            Some(
                Event::TemplateSendJobFinish { status, .. }
                | Event::MassSendJobFinish { status, .. },
            ),
        ) => Actual::text(status),
        // WeCom's `AgentID` is deliberately not in the Official Account model (unknown
        // elements are ignored); it is checked in the raw tree so the sample is still
        // read completely.
        ("AgentID", ..) => raw
            .child("AgentID")
            .map_or(Actual::Absent, |e| Actual::text(&e.text)),
        _ => panic!("expect key {key} is not mapped for {:?}", inbound.kind),
    }
}

/// Parses an inbound sample and checks every expected field; also checks the XML and
/// JSON round trips.
fn check_inbound(sample: &Sample) {
    let inbound =
        Inbound::parse(sample.xml.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", sample.id));
    let raw = Element::parse(sample.xml.as_bytes()).unwrap();
    for (key, expected) in &sample.expect {
        if key == "Encrypt" {
            // Compatible mode: checked through the envelope by `check_request_envelope`.
            continue;
        }
        let actual = inbound_value(&inbound, &raw, key);
        assert!(
            actual.matches(expected),
            "{}: {key} expected {expected:?}, got {actual:?}",
            sample.id
        );
    }
    assert!(
        !matches!(inbound.kind, Kind::Unknown { .. }),
        "{}: {inbound:?}",
        sample.id
    );
    check_round_trips(&inbound);
}

/// `parse(to_xml(x)) == x`, and the JSON form reads back to the same value.
fn check_round_trips(inbound: &Inbound) {
    let xml = inbound.to_xml();
    assert_eq!(&Inbound::parse(xml.as_bytes()).unwrap(), inbound, "{xml}");
    let json = serde_json::to_string(inbound).unwrap();
    assert_eq!(
        &serde_json::from_str::<Inbound>(&json).unwrap(),
        inbound,
        "{json}"
    );
}

/// Removes layout whitespace between elements, for samples written one element a line.
fn compact(xml: &str) -> String {
    if !xml.contains('\n') {
        return xml.to_owned();
    }
    xml.lines().map(str::trim).collect()
}

fn check_reply(sample: &Sample) {
    let (header, reply) =
        Reply::parse(sample.xml.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", sample.id));
    let target = ReplyTarget {
        to_user_name: &header.to_user_name,
        from_user_name: &header.from_user_name,
        create_time: header.create_time,
        max_articles: 8,
    };
    let rendered = reply.render(&target).unwrap();
    assert_eq!(
        rendered,
        compact(&sample.xml),
        "{} is not reproduced",
        sample.id
    );

    let raw = Element::parse(rendered.as_bytes()).unwrap();
    for (key, expected) in &sample.expect {
        let actual = reply_value(&reply, &raw, key);
        assert_eq!(&actual, expected, "{}: {key}", sample.id);
    }
    let json = serde_json::to_string(&reply).unwrap();
    assert_eq!(
        serde_json::from_str::<Reply>(&json).unwrap(),
        reply,
        "{json}"
    );
}

/// Looks an `expect` key of a reply sample up in the typed reply. Panics on a key it does
/// not map.
fn reply_value(reply: &Reply, raw: &Element, key: &str) -> String {
    let value = match (key, reply) {
        ("MsgType", _) => Some(reply.msg_type().to_owned()),
        ("Content", Reply::Text { content }) => Some(content.clone()),
        ("Image/MediaId", Reply::Image { media_id })
        | ("Voice/MediaId", Reply::Voice { media_id })
        | ("Video/MediaId", Reply::Video { media_id, .. }) => Some(media_id.clone()),
        ("Music/ThumbMediaId", Reply::Music { thumb_media_id, .. }) => Some(thumb_media_id.clone()),
        ("ArticleCount", Reply::News { articles }) => Some(articles.len().to_string()),
        ("Articles/item/Title", Reply::News { articles }) => {
            articles.first().map(|a| a.title.clone())
        }
        ("TransInfo/KfAccount", Reply::TransferCustomerService { kf_account }) => {
            kf_account.clone()
        }
        _ => panic!("reply expect key {key} is not mapped for {reply:?}"),
    };
    // The rendered XML must agree with the model.
    let path: Vec<&str> = key.split('/').collect();
    assert_eq!(
        raw.find(&path).map(|e| e.text.clone()),
        value,
        "rendered {key}"
    );
    value.unwrap_or_default()
}

fn check_request_envelope(sample: &Sample) {
    let envelope = RequestEnvelope::parse(sample.xml.as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", sample.id));
    let inbound = Inbound::parse(sample.xml.as_bytes());
    let raw = Element::parse(sample.xml.as_bytes()).unwrap();
    for (key, expected) in &sample.expect {
        match key.as_str() {
            "Encrypt" => assert_eq!(&envelope.encrypt, expected, "{}", sample.id),
            "ToUserName" => assert_eq!(
                envelope.to_user_name.as_ref(),
                Some(expected),
                "{}",
                sample.id
            ),
            // The clear fields of compatible mode are a whole message.
            other => {
                let inbound = inbound.as_ref().expect("compatible body is a message");
                let actual = inbound_value(inbound, &raw, other);
                assert!(
                    actual.matches(expected),
                    "{}: {other}: {actual:?}",
                    sample.id
                );
            }
        }
    }
    let again = RequestEnvelope::parse(envelope.to_xml().as_bytes()).unwrap();
    assert_eq!(again, envelope);
    if let Ok(inbound) = inbound {
        let body = RequestEnvelope::compatible_body(&inbound.to_xml(), &envelope.encrypt);
        assert_eq!(
            RequestEnvelope::parse(body.as_bytes()).unwrap().encrypt,
            envelope.encrypt
        );
        assert_eq!(Inbound::parse(body.as_bytes()).unwrap(), inbound);
    }
}

fn check_encrypted_reply(sample: &Sample) {
    let reply = EncryptedReply::parse(sample.xml.as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", sample.id));
    for (key, expected) in &sample.expect {
        let actual = match key.as_str() {
            "MsgSignature" => &reply.msg_signature,
            "TimeStamp" => &reply.timestamp,
            "Nonce" => &reply.nonce,
            "Encrypt" => &reply.encrypt,
            other => panic!("encrypted reply expect key {other} is not mapped"),
        };
        assert_eq!(actual, expected, "{}: {key}", sample.id);
    }
    assert_eq!(
        reply.to_xml(),
        sample.xml,
        "{} is not reproduced",
        sample.id
    );
}

#[test]
fn every_sample_xml_entry() {
    let samples = samples();
    assert_eq!(samples.len(), 33, "sample_xml entries");
    let mut checked = 0;
    for sample in &samples {
        if sample.id == "envelope-encrypted-reply" {
            check_encrypted_reply(sample);
        } else if sample.direction.starts_with("inbound POST body") {
            check_request_envelope(sample);
        } else if sample.direction.starts_with("inbound") {
            check_inbound(sample);
        } else if sample.direction == "outbound" {
            check_reply(sample);
        } else {
            panic!(
                "{}: direction {:?} is not handled",
                sample.id, sample.direction
            );
        }
        checked += 1;
    }
    assert_eq!(checked, samples.len());
}

// ---------------------------------------------------------------------------------------
// Inbound behaviour the samples do not show.

const HEADER: &str = "<ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1700000000</CreateTime>";

fn message(body: &str) -> String {
    format!("<xml>{HEADER}{body}</xml>")
}

fn header(msg_id: Option<u64>) -> Header {
    Header {
        to_user_name: "gh_1".into(),
        from_user_name: "oUser".into(),
        create_time: 1700000000,
        msg_id,
        msg_data_id: None,
        idx: None,
    }
}

/// Parses `body` under the standard header and compares the whole model.
fn check(body: &str, msg_id: Option<u64>, kind: Kind) {
    let xml = message(body);
    let inbound = Inbound::parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{xml}: {e}"));
    assert_eq!(
        inbound,
        Inbound {
            header: header(msg_id),
            kind
        },
        "{xml}"
    );
    check_round_trips(&inbound);
}

fn event(name: &str, rest: &str) -> String {
    format!("<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{name}]]></Event>{rest}")
}

#[test]
fn msg_id_is_accepted_in_both_spellings() {
    let text = |id: &str| format!("<MsgType>text</MsgType><Content>x</Content>{id}");
    let kind = || Kind::Text {
        content: "x".into(),
    };
    check(
        &text("<MsgId>6054768590064713728</MsgId>"),
        Some(6054768590064713728),
        kind(),
    );
    check(
        &text("<MsgID>18446744073709551615</MsgID>"),
        Some(u64::MAX),
        kind(),
    );
    check(&text("<MsgId></MsgId>"), None, kind());
    assert_eq!(
        Inbound::parse(message(&text("<MsgId>12a</MsgId>")).as_bytes()),
        Err(ParseError::InvalidNumber {
            field: "MsgId",
            value: "12a".into()
        })
    );
    assert_eq!(
        Inbound::parse(message(&text("<MsgID>-1</MsgID>")).as_bytes()),
        Err(ParseError::InvalidNumber {
            field: "MsgID",
            value: "-1".into()
        })
    );
}

#[test]
fn msg_data_id_and_idx_are_optional_header_fields() {
    let xml = message(
        "<MsgType>text</MsgType><Content>x</Content><MsgDataId>2247483</MsgDataId><Idx>2</Idx>",
    );
    let inbound = Inbound::parse(xml.as_bytes()).unwrap();
    assert_eq!(inbound.header.msg_data_id.as_deref(), Some("2247483"));
    assert_eq!(inbound.header.idx, Some(2));
    check_round_trips(&inbound);
    assert!(matches!(
        Inbound::parse(message("<MsgType>text</MsgType><Idx>x</Idx>").as_bytes()),
        Err(ParseError::InvalidNumber { field: "Idx", .. })
    ));
}

#[test]
fn header_fields_are_required() {
    let full = [
        "<ToUserName>a</ToUserName>",
        "<FromUserName>b</FromUserName>",
        "<CreateTime>1</CreateTime>",
        "<MsgType>text</MsgType>",
    ];
    for (missing, field) in ["ToUserName", "FromUserName", "CreateTime", "MsgType"]
        .into_iter()
        .enumerate()
    {
        let body: String = full
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != missing)
            .map(|(_, e)| *e)
            .collect();
        let xml = format!("<xml>{body}</xml>");
        let error = Inbound::parse(xml.as_bytes()).unwrap_err();
        assert_eq!(error, ParseError::MissingField { field }, "{xml}");
        assert_eq!(error.code(), ErrorCode::ParseXml);
        assert_eq!(error.code().as_i32(), -40002);
    }
    let xml = "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>yesterday</CreateTime><MsgType>text</MsgType></xml>";
    assert_eq!(
        Inbound::parse(xml.as_bytes()),
        Err(ParseError::InvalidNumber {
            field: "CreateTime",
            value: "yesterday".into()
        })
    );
    assert_eq!(Inbound::parse(b"<message/>"), Err(ParseError::WrongRoot));
}

#[test]
fn empty_recognition_is_present() {
    let voice = |extra: &str| {
        format!("<MsgType>voice</MsgType><MediaId>m</MediaId><Format>amr</Format>{extra}")
    };
    let kind = |recognition: Option<&str>| Kind::Voice {
        media_id: "m".into(),
        format: "amr".into(),
        recognition: recognition.map(str::to_owned),
        media_id_16k: None,
    };
    check(
        &voice("<Recognition><![CDATA[]]></Recognition>"),
        None,
        kind(Some("")),
    );
    check(&voice("<Recognition/>"), None, kind(Some("")));
    check(&voice(""), None, kind(None));
}

#[test]
fn text_is_preserved_byte_for_byte() {
    for content in [
        " leading",
        "trailing \n",
        "two\nlines\r\n",
        "emoji 😀👍🏽",
        "tab\there",
        "  ",
        "a]]b",
        "<&>",
    ] {
        let escaped = content
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        for body in [
            format!("<Content><![CDATA[{content}]]></Content>"),
            format!("<Content>{escaped}</Content>"),
        ] {
            check(
                &format!("<MsgType>text</MsgType>{body}"),
                None,
                Kind::Text {
                    content: content.into(),
                },
            );
        }
    }
}

#[test]
fn location_scale_is_lenient() {
    let location = |scale: &str| {
        format!("<MsgType>location</MsgType><Location_X>23.1</Location_X><Location_Y>-113</Location_Y>{scale}<Label> 广州</Label>")
    };
    let kind = |scale: Option<f64>| Kind::Location {
        location_x: 23.1,
        location_y: -113.0,
        scale,
        label: " 广州".into(),
    };
    check(&location("<Scale>20</Scale>"), None, kind(Some(20.0)));
    check(
        &location("<Scale><![CDATA[15.5]]></Scale>"),
        None,
        kind(Some(15.5)),
    );
    check(&location(""), None, kind(None));
    let xml = message(&location("<Scale>big</Scale>"));
    assert_eq!(Inbound::parse(xml.as_bytes()).unwrap().kind, kind(None));
}

#[test]
fn qrscene_prefix_is_stripped() {
    check(
        &event(
            "subscribe",
            "<EventKey><![CDATA[qrscene_123123]]></EventKey><Ticket>T</Ticket>",
        ),
        None,
        Kind::Event(Event::Subscribe {
            event_key: Some("qrscene_123123".into()),
            scene: Some("123123".into()),
            ticket: Some("T".into()),
        }),
    );
    check(
        &event("subscribe", "<EventKey><![CDATA[]]></EventKey>"),
        None,
        Kind::Event(Event::Subscribe {
            event_key: Some(String::new()),
            scene: None,
            ticket: None,
        }),
    );
    check(
        &event("subscribe", ""),
        None,
        Kind::Event(Event::Subscribe {
            event_key: None,
            scene: None,
            ticket: None,
        }),
    );
}

#[test]
fn event_names_match_case_insensitively() {
    for name in ["SCAN", "scan", "Scan"] {
        let xml = message(&event(name, "<EventKey>7</EventKey>"));
        let inbound = Inbound::parse(xml.as_bytes()).unwrap();
        assert_eq!(
            inbound.kind,
            Kind::Event(Event::Scan {
                event_key: "7".into(),
                ticket: None
            })
        );
    }
    for name in [
        "SUBSCRIBE",
        "Unsubscribe",
        "click",
        "Location_Select",
        "templateSendJobFinish",
    ] {
        let xml = message(&event(name, "<SendLocationInfo><Location_X>1</Location_X><Location_Y>2</Location_Y></SendLocationInfo>"));
        let inbound = Inbound::parse(xml.as_bytes()).unwrap();
        let Kind::Event(parsed) = &inbound.kind else {
            panic!("{inbound:?}")
        };
        assert!(
            !matches!(parsed, Event::Unknown { .. }),
            "{name}: {parsed:?}"
        );
        assert!(parsed.name().eq_ignore_ascii_case(name));
    }
    assert!(matches!(
        Inbound::parse(message("<MsgType>TEXT</MsgType>").as_bytes())
            .unwrap()
            .kind,
        Kind::Text { .. }
    ));
}

#[test]
fn job_finish_events_carry_their_job_id_not_a_msg_id() {
    let xml = message(&event(
        "MASSSENDJOBFINISH",
        "<MsgID>1988</MsgID><Status><![CDATA[sendsuccess]]></Status><TotalCount>100</TotalCount><FilterCount>80</FilterCount><SentCount>75</SentCount><ErrorCount>5</ErrorCount><CopyrightCheckResult><Count>0</Count></CopyrightCheckResult>",
    ));
    let inbound = Inbound::parse(xml.as_bytes()).unwrap();
    assert_eq!(inbound.header.msg_id, None);
    assert_eq!(
        inbound.kind,
        Kind::Event(Event::MassSendJobFinish {
            msg_id: Some(1988),
            status: "sendsuccess".into(),
            total_count: Some(100),
            filter_count: Some(80),
            sent_count: Some(75),
            error_count: Some(5),
        })
    );
    check_round_trips(&inbound);
    assert!(matches!(
        inbound.dedup_key(xml.as_bytes()),
        DedupKey::Event { .. }
    ));
    let json = serde_json::to_value(&inbound).unwrap();
    assert_eq!(json["job_id"], "1988");
    assert_eq!(json["event"], "masssendjobfinish");
}

#[test]
fn every_typed_event_round_trips() {
    let events = [
        event("unsubscribe", ""),
        event("LOCATION", "<Latitude>23.137466</Latitude><Longitude>113.352425</Longitude>"),
        event("VIEW", "<EventKey>u</EventKey><MenuID>9</MenuID>"),
        event("pic_weixin", "<EventKey>6</EventKey><SendPicsInfo><Count>2</Count><PicList><item><PicMd5Sum>a</PicMd5Sum></item><item><PicMd5Sum>b</PicMd5Sum></item></PicList></SendPicsInfo>"),
        event("kf_create_session", "<KfAccount>test1@test</KfAccount>"),
        event("kf_close_session", "<KfAccount>test1@test</KfAccount>"),
        event("kf_switch_session", "<FromKfAccount>a@t</FromKfAccount><ToKfAccount>b@t</ToKfAccount>"),
    ];
    for body in events {
        let inbound = Inbound::parse(message(&body).as_bytes()).unwrap();
        let Kind::Event(parsed) = &inbound.kind else {
            panic!()
        };
        assert!(
            !matches!(parsed, Event::Unknown { .. }),
            "{body}: {parsed:?}"
        );
        check_round_trips(&inbound);
    }
}

#[test]
fn unknown_msg_type_keeps_every_raw_field() {
    let xml = message(
        "<MsgType><![CDATA[miniprogrampage]]></MsgType><Title> t </Title><AppId>wx1</AppId>\
         <Nested>\n  <A>1</A>\n  <B><C><![CDATA[deep]]></C></B>\n</Nested><MsgId>42</MsgId>",
    );
    let inbound = Inbound::parse(xml.as_bytes()).unwrap();
    assert_eq!(inbound.header.msg_id, Some(42));
    assert_eq!(inbound.msg_type(), "miniprogrampage");
    assert!(inbound.is_user_message());
    assert_eq!(
        inbound.kind,
        Kind::Unknown {
            msg_type: "miniprogrampage".into(),
            fields: vec![
                Element::leaf("Title", " t "),
                Element::leaf("AppId", "wx1"),
                Element {
                    name: "Nested".into(),
                    text: String::new(),
                    children: vec![
                        Element::leaf("A", "1"),
                        Element {
                            name: "B".into(),
                            text: String::new(),
                            children: vec![Element::leaf("C", "deep")],
                        },
                    ],
                },
            ],
        }
    );
    check_round_trips(&inbound);
}

#[test]
fn unknown_event_keeps_every_raw_field() {
    let xml = message(&event(
        "PUBLISHJOBFINISH",
        "<PublishEventInfo><publish_id>2247503051</publish_id><publish_status>0</publish_status>\
         <article_detail><count>1</count><item><idx>1</idx><article_url><![CDATA[https://x]]></article_url></item></article_detail>\
         </PublishEventInfo>",
    ));
    let inbound = Inbound::parse(xml.as_bytes()).unwrap();
    let Kind::Event(Event::Unknown { event, fields }) = &inbound.kind else {
        panic!("{inbound:?}")
    };
    assert_eq!(event, "PUBLISHJOBFINISH");
    assert_eq!(fields.len(), 1);
    let info = &fields[0];
    assert_eq!(info.find(&["publish_id"]).unwrap().text, "2247503051");
    assert_eq!(
        info.find(&["article_detail", "item", "article_url"])
            .unwrap()
            .text,
        "https://x"
    );
    assert!(!inbound.is_user_message());
    check_round_trips(&inbound);
    let json = serde_json::to_value(&inbound).unwrap();
    assert_eq!(json["event"], "unknown");
    assert_eq!(json["event_name"], "PUBLISHJOBFINISH");
}

#[test]
fn known_kind_without_its_numbers_is_kept_raw() {
    let xml = message("<MsgType>location</MsgType><Location_X>north</Location_X><Label>x</Label>");
    let inbound = Inbound::parse(xml.as_bytes()).unwrap();
    assert_eq!(
        inbound.kind,
        Kind::Unknown {
            msg_type: "location".into(),
            fields: vec![
                Element::leaf("Location_X", "north"),
                Element::leaf("Label", "x")
            ],
        }
    );
    let xml = message(&event("pic_sysphoto", "<EventKey>6</EventKey>"));
    let inbound = Inbound::parse(xml.as_bytes()).unwrap();
    assert!(
        matches!(&inbound.kind, Kind::Event(Event::Unknown { event, .. }) if event == "pic_sysphoto")
    );
    check_round_trips(&inbound);
}

#[test]
fn unknown_elements_are_ignored() {
    check(
        "<MsgType>text</MsgType><Extra><Deep>1</Deep></Extra><Content>x</Content><AgentID>1</AgentID>",
        None,
        Kind::Text { content: "x".into() },
    );
}

#[test]
fn hostile_documents_are_rejected() {
    for xml in [
        "<!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml><Content>&xxe;</Content></xml>".to_owned(),
        format!("<!-- hi --><!DOCTYPE xml><xml>{HEADER}<MsgType>text</MsgType></xml>"),
        format!("<xml>{HEADER}<Content><![CDATA[ok]]></Content><!ENTITY a \"b\"><MsgType>text</MsgType></xml>"),
    ] {
        assert_eq!(Inbound::parse(xml.as_bytes()), Err(ParseError::Doctype), "{xml}");
        assert!(matches!(
            RequestEnvelope::parse(xml.as_bytes()),
            Err(EnvelopeError::Xml(ParseError::Doctype))
        ));
    }
    let deep = format!(
        "<xml>{HEADER}<MsgType>x</MsgType>{}{}</xml>",
        "<a>".repeat(20),
        "</a>".repeat(20)
    );
    assert_eq!(
        Inbound::parse(deep.as_bytes()),
        Err(ParseError::TooDeep { max: 16 })
    );
    let limits = Limits {
        max_bytes: 64,
        max_depth: 16,
    };
    assert!(matches!(
        Inbound::parse_with_limits(message("<MsgType>text</MsgType>").as_bytes(), limits),
        Err(ParseError::TooLarge { max: 64, .. })
    ));
}

#[test]
fn dedup_keys() {
    let text = message("<MsgType>text</MsgType><Content>x</Content><MsgId>99</MsgId>");
    let inbound = Inbound::parse(text.as_bytes()).unwrap();
    let key = inbound.dedup_key(text.as_bytes());
    assert_eq!(
        key,
        DedupKey::Message {
            from_user_name: "oUser".into(),
            msg_id: 99
        }
    );
    assert_eq!(key.to_string(), "msg:oUser:99");

    // Two different events of one user in the same second.
    let subscribe = message(&event("subscribe", ""));
    let location = message(&event(
        "LOCATION",
        "<Latitude>1</Latitude><Longitude>2</Longitude>",
    ));
    let first = Inbound::parse(subscribe.as_bytes())
        .unwrap()
        .dedup_key(subscribe.as_bytes());
    let second = Inbound::parse(location.as_bytes())
        .unwrap()
        .dedup_key(location.as_bytes());
    assert_ne!(first, second);
    assert_ne!(first.to_string(), second.to_string());
    // A retry is the same bytes, hence the same key.
    let retry = Inbound::parse(subscribe.as_bytes())
        .unwrap()
        .dedup_key(subscribe.as_bytes());
    assert_eq!(first, retry);
    let text = first.to_string();
    assert!(text.starts_with("evt:oUser:1700000000:"), "{text}");
    assert_eq!(text.len(), "evt:oUser:1700000000:".len() + 40);
    assert_eq!(text.parse::<DedupKey>().unwrap(), first);
}

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
