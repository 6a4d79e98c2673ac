//! Property tests of the XML layer: what the writer writes, the reader reads back; and no
//! input makes a parser panic.
//!
//! Strings are drawn from pieces that stress the writer (`]]>`, emoji, `&`, `<`, CR LF,
//! whitespace) plus arbitrary characters. Characters XML forbids are included for replies,
//! where the expected result is the sanitized string; the inbound model is built from
//! XML-legal strings so that the round trip is an identity.

use std::fmt::Write as _;

use proptest::prelude::*;
use quick_xml::events::Event as QxEvent;
use wechat_proto::envelope::{EncryptedReply, RequestEnvelope};
use wechat_proto::inbound::{Event, Header, Inbound, Kind, EVENT_NAMES, MSG_TYPES};
use wechat_proto::reply::{Article, Reply, ReplyError, ReplyHeader, ReplyTarget};
use wechat_proto::xml::{sanitize_xml_text, Element};

/// A string made of writer-stressing pieces, possibly with characters XML forbids.
fn any_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("]]>".to_owned()),
        Just("]]".to_owned()),
        Just("<![CDATA[".to_owned()),
        Just("😀".to_owned()),
        Just("微信".to_owned()),
        Just(" ".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("\t".to_owned()),
        Just("&amp;".to_owned()),
        Just("<".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\u{1f}".to_owned()),
        Just("\u{FFFE}".to_owned()),
        Just("\u{FFFF}".to_owned()),
        any::<char>().prop_map(String::from),
        "[a-zA-Z0-9]{0,6}",
    ];
    prop::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

/// A string XML can carry unchanged.
fn xml_text() -> impl Strategy<Value = String> {
    any_text().prop_map(|text| sanitize_xml_text(&text).into_owned())
}

/// A finite float: NaN has no equality to round-trip to.
fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        (-180.0..180.0f64),
        (0u32..30).prop_map(f64::from),
    ]
}

/// A name that cannot be one of the header or `Event` elements.
fn field_name() -> impl Strategy<Value = String> {
    "[a-z_][a-zA-Z0-9_.-]{0,8}"
}

/// A raw element tree, normalised the way the reader sees it: an element with children
/// has no whitespace-only text.
fn element() -> impl Strategy<Value = Element> {
    let leaf = (field_name(), xml_text()).prop_map(|(name, text)| Element::leaf(name, text));
    leaf.prop_recursive(3, 12, 4, |inner| {
        (field_name(), xml_text(), prop::collection::vec(inner, 0..4)).prop_map(
            |(name, text, children)| {
                let layout_only = text
                    .bytes()
                    .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
                let text = if !children.is_empty() && layout_only {
                    String::new()
                } else {
                    text
                };
                Element {
                    name,
                    text,
                    children,
                }
            },
        )
    })
}

fn fields() -> impl Strategy<Value = Vec<Element>> {
    prop::collection::vec(element(), 0..4)
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(xml_text())
}

/// A value no typed variant claims, compared case-insensitively.
fn unknown_name(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    "[a-zA-Z_]{0,12}".prop_filter("not a known name", move |name| {
        !known.iter().any(|k| k.eq_ignore_ascii_case(name))
    })
}

fn event() -> impl Strategy<Value = Event> {
    let pics = || {
        (
            xml_text(),
            any::<u32>(),
            prop::collection::vec(xml_text(), 0..4),
        )
    };
    let scan = || (xml_text(), xml_text(), xml_text());
    prop_oneof![
        (opt_text(), opt_text()).prop_map(|(event_key, ticket)| {
            let scene = event_key
                .as_deref()
                .and_then(|key| key.strip_prefix("qrscene_"))
                .map(str::to_owned);
            Event::Subscribe {
                event_key,
                scene,
                ticket,
            }
        }),
        xml_text().prop_map(|scene| Event::Subscribe {
            event_key: Some(format!("qrscene_{scene}")),
            scene: Some(scene),
            ticket: Some("t".into()),
        }),
        Just(Event::Unsubscribe),
        (xml_text(), opt_text()).prop_map(|(event_key, ticket)| Event::Scan { event_key, ticket }),
        (finite(), finite(), prop::option::of(finite())).prop_map(
            |(latitude, longitude, precision)| {
                Event::Location {
                    latitude,
                    longitude,
                    precision,
                }
            }
        ),
        xml_text().prop_map(|event_key| Event::Click { event_key }),
        (xml_text(), opt_text()).prop_map(|(url, menu_id)| Event::View { url, menu_id }),
        scan().prop_map(|(event_key, scan_type, scan_result)| Event::ScancodePush {
            event_key,
            scan_type,
            scan_result
        }),
        scan().prop_map(
            |(event_key, scan_type, scan_result)| Event::ScancodeWaitmsg {
                event_key,
                scan_type,
                scan_result
            }
        ),
        pics().prop_map(|(event_key, count, pic_md5_sums)| Event::PicSysphoto {
            event_key,
            count,
            pic_md5_sums
        }),
        pics().prop_map(|(event_key, count, pic_md5_sums)| Event::PicPhotoOrAlbum {
            event_key,
            count,
            pic_md5_sums
        }),
        pics().prop_map(|(event_key, count, pic_md5_sums)| Event::PicWeixin {
            event_key,
            count,
            pic_md5_sums
        }),
        (
            xml_text(),
            finite(),
            finite(),
            prop::option::of(finite()),
            xml_text(),
            xml_text()
        )
            .prop_map(
                |(event_key, location_x, location_y, scale, label, poiname)| {
                    Event::LocationSelect {
                        event_key,
                        location_x,
                        location_y,
                        scale,
                        label,
                        poiname,
                    }
                }
            ),
        (xml_text(), opt_text())
            .prop_map(|(page_path, menu_id)| Event::ViewMiniprogram { page_path, menu_id }),
        (prop::option::of(any::<u64>()), xml_text())
            .prop_map(|(msg_id, status)| Event::TemplateSendJobFinish { msg_id, status }),
        (
            prop::option::of(any::<u64>()),
            xml_text(),
            prop::array::uniform4(prop::option::of(any::<u64>())),
        )
            .prop_map(
                |(msg_id, status, [total_count, filter_count, sent_count, error_count])| {
                    Event::MassSendJobFinish {
                        msg_id,
                        status,
                        total_count,
                        filter_count,
                        sent_count,
                        error_count,
                    }
                }
            ),
        xml_text().prop_map(|kf_account| Event::KfCreateSession { kf_account }),
        xml_text().prop_map(|kf_account| Event::KfCloseSession { kf_account }),
        (xml_text(), xml_text()).prop_map(|(from_kf_account, to_kf_account)| {
            Event::KfSwitchSession {
                from_kf_account,
                to_kf_account,
            }
        }),
        (unknown_name(&EVENT_NAMES), fields())
            .prop_map(|(event, fields)| Event::Unknown { event, fields }),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        xml_text().prop_map(|content| Kind::Text { content }),
        (xml_text(), xml_text()).prop_map(|(pic_url, media_id)| Kind::Image { pic_url, media_id }),
        (xml_text(), xml_text(), opt_text(), opt_text()).prop_map(
            |(media_id, format, recognition, media_id_16k)| {
                Kind::Voice {
                    media_id,
                    format,
                    recognition,
                    media_id_16k,
                }
            }
        ),
        (xml_text(), xml_text()).prop_map(|(media_id, thumb_media_id)| Kind::Video {
            media_id,
            thumb_media_id
        }),
        (xml_text(), xml_text()).prop_map(|(media_id, thumb_media_id)| Kind::ShortVideo {
            media_id,
            thumb_media_id
        }),
        (finite(), finite(), prop::option::of(finite()), xml_text()).prop_map(
            |(location_x, location_y, scale, label)| {
                Kind::Location {
                    location_x,
                    location_y,
                    scale,
                    label,
                }
            }
        ),
        (xml_text(), xml_text(), xml_text()).prop_map(|(title, description, url)| Kind::Link {
            title,
            description,
            url
        }),
        event().prop_map(Kind::Event),
        (unknown_name(&MSG_TYPES), fields())
            .prop_map(|(msg_type, fields)| Kind::Unknown { msg_type, fields }),
    ]
}

fn inbound() -> impl Strategy<Value = Inbound> {
    (
        xml_text(),
        xml_text(),
        any::<i64>(),
        prop::option::of(any::<u64>()),
        opt_text(),
        prop::option::of(any::<u32>()),
        kind(),
        fields(),
    )
        .prop_map(
            |(to_user_name, from_user_name, create_time, msg_id, msg_data_id, idx, kind, extra)| {
                // Events carry no message id (see `Header::msg_id`).
                let msg_id = if matches!(kind, Kind::Event(_)) {
                    None
                } else {
                    msg_id
                };
                // An unknown kind keeps everything in its `fields`; only a typed kind has
                // extra elements (see `Inbound::extra`).
                let extra = match &kind {
                    Kind::Unknown { .. } | Kind::Event(Event::Unknown { .. }) => Vec::new(),
                    _ => extra,
                };
                Inbound {
                    header: Header {
                        to_user_name,
                        from_user_name,
                        create_time,
                        msg_id,
                        msg_data_id,
                        idx,
                    },
                    kind,
                    extra,
                }
            },
        )
}

fn opt_any_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(any_text())
}

fn reply() -> impl Strategy<Value = Reply> {
    let article = (any_text(), any_text(), any_text(), any_text()).prop_map(
        |(title, description, pic_url, url)| Article {
            title,
            description,
            pic_url,
            url,
        },
    );
    prop_oneof![
        Just(Reply::Success),
        any_text().prop_map(|content| Reply::Text { content }),
        any_text().prop_map(|media_id| Reply::Image { media_id }),
        any_text().prop_map(|media_id| Reply::Voice { media_id }),
        (any_text(), opt_any_text(), opt_any_text()).prop_map(|(media_id, title, description)| {
            Reply::Video {
                media_id,
                title,
                description,
            }
        }),
        (
            opt_any_text(),
            opt_any_text(),
            opt_any_text(),
            opt_any_text(),
            any_text()
        )
            .prop_map(
                |(title, description, music_url, hq_music_url, thumb_media_id)| Reply::Music {
                    title,
                    description,
                    music_url,
                    hq_music_url,
                    thumb_media_id,
                }
            ),
        prop::collection::vec(article, 1..9).prop_map(|articles| Reply::News { articles }),
        opt_any_text().prop_map(|kf_account| Reply::TransferCustomerService { kf_account }),
    ]
}

fn clean(text: &str) -> String {
    sanitize_xml_text(text).into_owned()
}

fn clean_opt(text: &Option<String>) -> Option<String> {
    text.as_deref().map(clean)
}

/// What a reply reads back as: every string sanitized.
fn sanitized(reply: &Reply) -> Reply {
    match reply {
        Reply::Text { content } => Reply::Text {
            content: clean(content),
        },
        Reply::Image { media_id } => Reply::Image {
            media_id: clean(media_id),
        },
        Reply::Voice { media_id } => Reply::Voice {
            media_id: clean(media_id),
        },
        Reply::Video {
            media_id,
            title,
            description,
        } => Reply::Video {
            media_id: clean(media_id),
            title: clean_opt(title),
            description: clean_opt(description),
        },
        Reply::Music {
            title,
            description,
            music_url,
            hq_music_url,
            thumb_media_id,
        } => Reply::Music {
            title: clean_opt(title),
            description: clean_opt(description),
            music_url: clean_opt(music_url),
            hq_music_url: clean_opt(hq_music_url),
            thumb_media_id: clean(thumb_media_id),
        },
        Reply::News { articles } => Reply::News {
            articles: articles
                .iter()
                .map(|a| Article {
                    title: clean(&a.title),
                    description: clean(&a.description),
                    pic_url: clean(&a.pic_url),
                    url: clean(&a.url),
                })
                .collect(),
        },
        Reply::TransferCustomerService { kf_account } => Reply::TransferCustomerService {
            kf_account: clean_opt(kf_account),
        },
        other => other.clone(),
    }
}

/// Byte soup that looks enough like XML to reach deep into the parser.
fn xmlish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"<xml>".to_vec()),
        Just(b"</xml>".to_vec()),
        Just(b"<MsgType>".to_vec()),
        Just(b"</MsgType>".to_vec()),
        Just(b"<Encrypt>".to_vec()),
        Just(b"</Encrypt>".to_vec()),
        Just(
            b"<ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>"
                .to_vec()
        ),
        Just(b"event".to_vec()),
        Just(b"<Event>subscribe</Event>".to_vec()),
        Just(b"<![CDATA[".to_vec()),
        Just(b"]]>".to_vec()),
        Just(b"<!--".to_vec()),
        Just(b"-->".to_vec()),
        Just(b"<!DOCTYPE".to_vec()),
        Just(b"<!ENTITY".to_vec()),
        Just(b"<?xml version=\"1.0\"?>".to_vec()),
        Just(b"&amp;".to_vec()),
        Just(b"&#x0;".to_vec()),
        Just(b"&#99999999;".to_vec()),
        Just(b"&".to_vec()),
        Just(b"<a/>".to_vec()),
        Just(b"<a b='c'>".to_vec()),
        Just(b"</a>".to_vec()),
        Just(b"<".to_vec()),
        Just(b">".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        Just("😀".as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..512), xmlish_bytes()]
}

/// Writes `element` as XML in one of many equivalent spellings chosen by `choices`: text
/// as CDATA, escaped, character references or a mix; comments and layout whitespace
/// between children; attributes; `<a/>` for empty leaves. Every spelling must read back
/// as `element`.
fn write_styled(element: &Element, choices: &mut impl Iterator<Item = u8>, out: &mut String) {
    fn pick(choices: &mut impl Iterator<Item = u8>, n: u8) -> u8 {
        choices.next().unwrap_or(0) % n
    }
    let mut choose = |n: u8| pick(choices, n);
    let attribute = match choose(4) {
        0 => " id=\"a>b/\"",
        1 => " x='1'",
        _ => "",
    };
    if element.text.is_empty() && element.children.is_empty() && choose(2) == 0 {
        write!(out, "<{}{attribute}/>", element.name).unwrap();
        return;
    }
    write!(out, "<{}{attribute}>", element.name).unwrap();
    for c in element.text.chars() {
        match (c, choose(4)) {
            ('<', 0 | 1) => out.push_str("&lt;"),
            ('&', 0 | 1) => out.push_str("&amp;"),
            ('>', 0) => out.push_str("&gt;"),
            (_, 2) => write!(out, "&#x{:X};", u32::from(c)).unwrap(),
            (_, 3) => write!(out, "&#{};", u32::from(c)).unwrap(),
            ('<' | '&', _) => write!(out, "&#{};", u32::from(c)).unwrap(),
            // `]]>` must not appear in plain text either.
            ('>', _) => out.push_str("&gt;"),
            _ if choose(3) == 0 => {
                let mut cdata = String::new();
                wechat_proto::xml::XmlWriter::new(&mut cdata).cdata(&c.to_string());
                out.push_str(&cdata);
            }
            _ => out.push(c),
        }
    }
    for child in &element.children {
        if element.text.is_empty() {
            out.push_str(["", "\n  ", "\t", " \r\n"][usize::from(pick(choices, 4))]);
        }
        if pick(choices, 5) == 0 {
            out.push_str("<!-- a comment with <tags> & ]]> -->");
        }
        write_styled(child, choices, out);
    }
    write!(out, "</{}>", element.name).unwrap();
}

/// A reference reader built on quick-xml, with this crate's rules: text and CDATA
/// joined, layout whitespace of elements with children and all text of the root dropped,
/// comments and processing instructions skipped. Returns `None` wherever quick-xml
/// reports an error or the document is not a single element.
fn reference_parse(bytes: &[u8]) -> Option<Element> {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        match reader.read_event().ok()? {
            QxEvent::Start(start) => {
                let name = std::str::from_utf8(start.name().as_ref()).ok()?.to_owned();
                stack.push(Element {
                    name,
                    ..Element::default()
                });
            }
            QxEvent::Empty(start) => {
                let name = std::str::from_utf8(start.name().as_ref()).ok()?.to_owned();
                let element = Element {
                    name,
                    ..Element::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None if root.is_none() => root = Some(element),
                    None => return None,
                }
            }
            QxEvent::End(_) => {
                let mut element = stack.pop()?;
                if !element.children.is_empty()
                    && element.text.bytes().all(|b| b" \t\r\n".contains(&b))
                {
                    element.text.clear();
                }
                // Text directly inside the root is layout, never content.
                if stack.is_empty() {
                    element.text.clear();
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None if root.is_none() => root = Some(element),
                    None => return None,
                }
            }
            QxEvent::Text(text) => {
                let text = text.unescape().ok()?;
                match stack.last_mut() {
                    Some(element) => element.text.push_str(&text),
                    None if text.bytes().all(|b| b" \t\r\n".contains(&b)) => {}
                    None => return None,
                }
            }
            QxEvent::CData(cdata) => {
                let text = std::str::from_utf8(&cdata).ok()?.to_owned();
                stack.last_mut()?.text.push_str(&text);
            }
            QxEvent::DocType(_) => return None,
            QxEvent::Comment(_) | QxEvent::PI(_) | QxEvent::Decl(_) => {}
            QxEvent::Eof => break,
        }
    }
    if stack.is_empty() {
        root
    } else {
        None
    }
}

/// One element of a generated message: every name the model reads (and some it does
/// not), with values that are valid, empty, padded or garbage, duplicates allowed.
fn message_element() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "ToUserName",
        "FromUserName",
        "CreateTime",
        "MsgType",
        "MsgId",
        "MsgID",
        "MsgDataId",
        "Idx",
        "Event",
        "EventKey",
        "Ticket",
        "Content",
        "PicUrl",
        "MediaId",
        "Format",
        "Recognition",
        "MediaId16K",
        "ThumbMediaId",
        "Location_X",
        "Location_Y",
        "Scale",
        "Label",
        "Title",
        "Description",
        "Url",
        "Latitude",
        "Longitude",
        "Precision",
        "MenuId",
        "MenuID",
        "Status",
        "TotalCount",
        "KfAccount",
        "FromKfAccount",
        "Other",
    ]);
    let value = prop::sample::select(vec![
        "",
        "1",
        " 42 ",
        "-7",
        "18446744073709551616",
        "2.5",
        "1e400",
        "abc",
        "text",
        "TEXT",
        "event",
        "location",
        "voice",
        "miniprogrampage",
        "subscribe",
        "SCAN",
        "location_select",
        "pic_weixin",
        "qrscene_9",
        "LOCATION",
        "templatesendjobfinish",
        "kf_switch_session",
        "Click",
        "view",
        "scancode_push",
        "unknown_event",
        " spaced ",
        "a]]>b",
    ]);
    let nested = prop::sample::select(vec![
        "<ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>1</ScanResult></ScanCodeInfo>",
        "<SendPicsInfo><Count>2</Count><PicList><item><PicMd5Sum>a</PicMd5Sum></item><item/></PicList></SendPicsInfo>",
        "<SendPicsInfo><Count>x</Count></SendPicsInfo>",
        "<SendLocationInfo><Location_X>1</Location_X><Location_Y><![CDATA[2]]></Location_Y><Poiname/></SendLocationInfo>",
        "<Deep><A>1</A><B> <C>2</C> </B></Deep>",
    ]);
    prop_oneof![
        4 => (name, value, any::<bool>()).prop_map(|(name, value, cdata)| {
            let mut out = String::new();
            let mut w = wechat_proto::xml::XmlWriter::new(&mut out);
            if cdata {
                w.cdata_element(name, value);
            } else {
                w.escaped_element(name, value);
            }
            out
        }),
        1 => nested.prop_map(str::to_owned),
    ]
}

/// A message: usually a complete header first, then any elements.
fn message_xml() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        prop::sample::select(vec!["text", "event", "location", "voice", "other", "EVENT"]),
        prop::collection::vec(message_element(), 0..10),
    )
        .prop_map(|(header, msg_type, elements)| {
            let mut xml = String::from("<xml>");
            if header {
                xml.push_str("<ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>");
                xml.push_str(&format!("<MsgType>{msg_type}</MsgType>"));
            }
            xml.push_str(&elements.concat());
            xml.push_str("</xml>");
            xml
        })
}

/// A longer text: several [`any_text`]s, so that both the short and the long paths of the
/// writer's checks run.
fn long_text() -> impl Strategy<Value = String> {
    prop::collection::vec(any_text(), 0..16).prop_map(|texts| texts.concat())
}

/// The definition the writer's byte-level checks must agree with.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// The cipher and token of the sealing properties.
fn cipher_and_token() -> (wechat_proto::MessageCipher, wechat_proto::Token) {
    let key = wechat_proto::AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
    let app_id = wechat_proto::AppId::new("wx2c2769f8efd9abc2").unwrap();
    (
        wechat_proto::MessageCipher::new(&key, app_id),
        wechat_proto::Token::new("spamtest").unwrap(),
    )
}

/// Runs every parser on `bytes`; the property is that none panics.
fn parse_everything(bytes: &[u8]) {
    let _ = Inbound::parse(bytes);
    let _ = RequestEnvelope::parse(bytes);
    let _ = EncryptedReply::parse(bytes);
    let _ = Reply::parse(bytes);
    let _ = Element::parse(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn reply_render_then_parse_gives_the_sanitized_reply(
        reply in reply(),
        to in any_text(),
        from in any_text(),
        create_time in any::<i64>(),
    ) {
        let target = ReplyTarget { to_user_name: &to, from_user_name: &from, create_time, max_articles: 8 };
        match reply.render(&target) {
            Ok(xml) => {
                let (header, parsed) = Reply::parse(xml.as_bytes()).unwrap();
                prop_assert_eq!(parsed, sanitized(&reply));
                if reply != Reply::Success {
                    prop_assert_eq!(header, ReplyHeader {
                        to_user_name: clean(&to),
                        from_user_name: clean(&from),
                        create_time,
                    });
                }
            }
            // Only an empty required media id is refused here (the texts are short).
            Err(ReplyError::MissingField { .. }) => {
                let empty = match &reply {
                    Reply::Image { media_id } | Reply::Voice { media_id } | Reply::Video { media_id, .. } => clean(media_id).is_empty(),
                    Reply::Music { thumb_media_id, .. } => clean(thumb_media_id).is_empty(),
                    _ => false,
                };
                prop_assert!(empty, "{:?}", reply);
            }
            Err(error) => prop_assert!(false, "{:?}: {}", reply, error),
        }
    }

    #[test]
    fn inbound_to_xml_then_parse_is_identity(inbound in inbound()) {
        let xml = inbound.to_xml();
        let parsed = Inbound::parse(xml.as_bytes());
        prop_assert_eq!(parsed.as_ref(), Ok(&inbound), "{}", xml);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn inbound_json_round_trips(inbound in inbound()) {
        let json = serde_json::to_string(&inbound).unwrap();
        let parsed: Inbound = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(parsed, inbound, "{}", json);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn reply_json_round_trips(reply in reply()) {
        let json = serde_json::to_string(&reply).unwrap();
        prop_assert_eq!(serde_json::from_str::<Reply>(&json).unwrap(), reply);
    }

    #[test]
    fn envelopes_round_trip(to in opt_any_text(), encrypt in any_text(), signature in any_text(), timestamp in any_text(), nonce in any_text()) {
        let envelope = RequestEnvelope { to_user_name: to, encrypt };
        let parsed = RequestEnvelope::parse(envelope.to_xml().as_bytes()).unwrap();
        prop_assert_eq!(parsed, RequestEnvelope {
            to_user_name: clean_opt(&envelope.to_user_name),
            encrypt: clean(&envelope.encrypt),
        });
        let reply = EncryptedReply { encrypt: envelope.encrypt.clone(), msg_signature: signature, timestamp, nonce };
        let parsed = EncryptedReply::parse(reply.to_xml().as_bytes()).unwrap();
        prop_assert_eq!(parsed, EncryptedReply {
            encrypt: clean(&reply.encrypt),
            msg_signature: clean(&reply.msg_signature),
            timestamp: clean(&reply.timestamp),
            nonce: clean(&reply.nonce),
        });
    }

    #[test]
    fn writer_checks_agree_with_the_definition(text in long_text()) {
        let expected: String = text.chars().filter(|&c| is_xml_char(c)).collect();
        prop_assert_eq!(sanitize_xml_text(&text), expected.as_str());
        let mut out = String::new();
        wechat_proto::xml::XmlWriter::new(&mut out).cdata_element("A", &text);
        let split = expected.replace("]]>", "]]]]><![CDATA[>");
        prop_assert_eq!(&out, &format!("<A><![CDATA[{split}]]></A>"));
        let root = Element::parse(format!("<xml>{out}</xml>").as_bytes()).unwrap();
        prop_assert_eq!(&root.child("A").unwrap().text, &expected);
        out.clear();
        wechat_proto::xml::XmlWriter::new(&mut out).escaped_element("A", &text);
        let escaped = expected.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        prop_assert_eq!(&out, &format!("<A>{escaped}</A>"));
    }

    #[test]
    fn sealed_replies_are_the_owned_path_byte_for_byte(
        reply in reply(),
        to in any_text(),
        from in any_text(),
        create_time in any::<i64>(),
        timestamp in any_text(),
        nonce in any_text(),
        random in any::<[u8; 16]>(),
    ) {
        use wechat_proto::Signature;
        let (cipher, token) = cipher_and_token();
        let target = ReplyTarget { to_user_name: &to, from_user_name: &from, create_time, max_articles: 8 };
        let sealed = EncryptedReply::seal_reply(&cipher, &token, &timestamp, &nonce, &reply, &target, random);
        let plaintext = match reply.render(&target) {
            Ok(plaintext) => plaintext,
            Err(error) => {
                prop_assert_eq!(sealed, Err(error));
                return Ok(());
            }
        };
        let encrypt = cipher.encrypt(plaintext.as_bytes(), random);
        prop_assert_eq!(encrypt.len(), cipher.encrypted_len(plaintext.len()));
        let msg_signature = Signature::message(&token, &timestamp, &nonce, &encrypt);
        let owned = EncryptedReply {
            encrypt: encrypt.clone(),
            msg_signature: msg_signature.to_hex(),
            timestamp: timestamp.clone(),
            nonce: nonce.clone(),
        }
        .to_xml();
        prop_assert_eq!(sealed.as_ref(), Ok(&owned));
        let plain = plaintext.as_bytes();
        prop_assert_eq!(&EncryptedReply::seal(&cipher, &token, &timestamp, &nonce, plain, random), &owned);
        let mut appended = String::from("before");
        EncryptedReply::seal_into(&cipher, &token, &timestamp, &nonce, plain, random, &mut appended);
        prop_assert_eq!(&appended, &format!("before{owned}"));
        let mut parts = String::from("before");
        EncryptedReply::write_parts(&encrypt, &msg_signature, &timestamp, &nonce, &mut parts);
        prop_assert_eq!(&parts, &format!("before{owned}"));
    }

    #[test]
    fn borrowed_envelopes_are_the_owned_ones(
        to in opt_any_text(),
        encrypt in any_text(),
        bytes in xmlish_bytes(),
    ) {
        let body = RequestEnvelope { to_user_name: to, encrypt }.to_xml();
        for input in [body.as_bytes(), &bytes] {
            let borrowed = RequestEnvelope::parse_borrowed(input).map(|e| e.into_owned());
            prop_assert_eq!(borrowed, RequestEnvelope::parse(input));
        }
    }

    #[test]
    fn every_spelling_of_a_document_reads_the_same(
        children in fields(),
        choices in prop::collection::vec(any::<u8>(), 64),
        declaration in any::<bool>(),
    ) {
        let root = Element { name: "xml".into(), text: String::new(), children };
        let mut xml = String::new();
        if declaration {
            xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c -->");
        }
        write_styled(&root, &mut choices.iter().copied().cycle(), &mut xml);
        let ours = Element::parse(xml.as_bytes());
        prop_assert_eq!(ours.as_ref(), Ok(&root), "{}", xml);
        let reference = reference_parse(xml.as_bytes());
        prop_assert_eq!(reference.as_ref(), Some(&root), "quick-xml: {}", xml);
    }

    #[test]
    fn reader_agrees_with_quick_xml_where_both_accept(bytes in xmlish_bytes()) {
        if let (Ok(ours), Some(reference)) = (Element::parse(&bytes), reference_parse(&bytes)) {
            prop_assert_eq!(ours, reference, "{}", String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn whatever_parses_writes_back_to_itself(xml in message_xml()) {
        if let Ok(first) = Inbound::parse(xml.as_bytes()) {
            let written = first.to_xml();
            let second = Inbound::parse(written.as_bytes());
            // `Debug` rather than `==`, so that a NaN coordinate compares equal to itself.
            prop_assert_eq!(
                format!("{:?}", second),
                format!("{:?}", Ok::<_, ()>(&first)),
                "{} was written as {}", xml, written
            );
            // Whatever parses also has a JSON form that reads back (no NaN or infinity,
            // which JSON writes as `null`).
            #[cfg(feature = "serde")]
            {
                let json = serde_json::to_string(&first).unwrap();
                let parsed: Inbound = serde_json::from_str(&json)
                    .map_err(|e| TestCaseError::fail(format!("{json}: {e}")))?;
                prop_assert_eq!(parsed, first, "{} as JSON {}", xml, json);
            }
        }
    }

    #[test]
    fn parsers_never_panic(bytes in bytes()) {
        parse_everything(&bytes);
    }

    #[test]
    fn parsers_never_panic_on_mutated_messages(
        inbound in inbound(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = inbound.to_xml().into_bytes();
        for (at, byte, action) in edits {
            let position = at.index(bytes.len() + 1);
            match action {
                0 => bytes.insert(position, byte),
                1 if position < bytes.len() => { bytes.remove(position); }
                _ => if let Some(slot) = bytes.get_mut(position) { *slot = byte },
            }
        }
        parse_everything(&bytes);
    }
}
