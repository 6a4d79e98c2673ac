//! Every `sample_xml` entry of `tests/data/vectors.json`, plus the behaviour the samples
//! do not show, in `samples/inbound.rs` (spelling variants, unknown kinds, limits, dedup
//! keys), `samples/replies.rs` (envelopes, the reply rules, the JSON forms) and
//! `samples/extra.rs` (typed kinds keeping the elements they do not model).
//!
//! Inbound samples are parsed and each `expect` key is looked up in the typed model by
//! [`inbound_value`]; a key it does not know fails the test, so nothing is skipped
//! silently. Reply samples are parsed and rendered again, and must come out identical.
//! Envelope samples are parsed and, for the encrypted reply, written again.

// The crate root of a test looks for modules beside it, where every file is a test.
#[path = "samples/extra.rs"]
mod extra;
#[path = "samples/inbound.rs"]
mod inbound;
#[path = "samples/replies.rs"]
mod replies;

use serde_json::Value;
use wechat_proto::envelope::{EncryptedReply, RequestEnvelope};
use wechat_proto::inbound::{Event, Header, Inbound, Kind};
use wechat_proto::reply::{Reply, ReplyTarget};
use wechat_proto::xml::Element;

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

/// `parse(to_xml(x)) == x`, and the JSON form (with `serde`) reads back to the same value.
fn check_round_trips(inbound: &Inbound) {
    let xml = inbound.to_xml();
    assert_eq!(&Inbound::parse(xml.as_bytes()).unwrap(), inbound, "{xml}");
    #[cfg(feature = "serde")]
    {
        let json = serde_json::to_string(inbound).unwrap();
        assert_eq!(
            &serde_json::from_str::<Inbound>(&json).unwrap(),
            inbound,
            "{json}"
        );
    }
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
    #[cfg(feature = "serde")]
    {
        let json = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            serde_json::from_str::<Reply>(&json).unwrap(),
            reply,
            "{json}"
        );
    }
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
        // The clear copy of a compatible-mode body keeps `Encrypt` as an extra element;
        // rebuilding the body appends it again.
        let encrypt = Element::leaf("Encrypt", envelope.encrypt.clone());
        assert_eq!(inbound.extra, vec![encrypt], "{}", sample.id);
        let mut clear = inbound.clone();
        clear.extra.clear();
        let body = RequestEnvelope::compatible_body(&clear.to_xml(), &envelope.encrypt);
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
// Helpers shared by the behaviour tests.

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
    check_with_extra(body, msg_id, kind, Vec::new());
}

/// [`check`] for a message that carries elements its kind does not model.
fn check_with_extra(body: &str, msg_id: Option<u64>, kind: Kind, extra: Vec<Element>) {
    let xml = message(body);
    let inbound = Inbound::parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{xml}: {e}"));
    assert_eq!(
        inbound,
        Inbound {
            header: header(msg_id),
            kind,
            extra,
        },
        "{xml}"
    );
    check_round_trips(&inbound);
}

fn event(name: &str, rest: &str) -> String {
    format!("<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{name}]]></Event>{rest}")
}
