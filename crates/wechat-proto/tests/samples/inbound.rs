//! Inbound behaviour the samples do not show: spelling variants, lenient fields, unknown
//! kinds and events, hostile documents, dedup keys.

use wechat_proto::dedup::DedupKey;
use wechat_proto::envelope::{EnvelopeError, RequestEnvelope};
use wechat_proto::inbound::{Event, Inbound, Kind};
use wechat_proto::xml::{Element, Limits, ParseError};
use wechat_proto::ErrorCode;

use super::{check, check_round_trips, check_with_extra, event, message, HEADER};

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
    #[cfg(feature = "serde")]
    {
        let json = serde_json::to_value(&inbound).unwrap();
        assert_eq!(json["job_id"], "1988");
        assert_eq!(json["event"], "masssendjobfinish");
    }
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
    #[cfg(feature = "serde")]
    {
        let json = serde_json::to_value(&inbound).unwrap();
        assert_eq!(json["event"], "unknown");
        assert_eq!(json["event_name"], "PUBLISHJOBFINISH");
    }
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
fn non_finite_floats_are_not_numbers() {
    for bad in [
        "NaN",
        "nan",
        "inf",
        "-inf",
        "infinity",
        "+Infinity",
        "1e400",
        "-1e309",
    ] {
        // A required coordinate: the kind is kept raw, like any other broken number.
        let xml = message(&format!(
            "<MsgType>location</MsgType><Location_X>23.1</Location_X><Location_Y>{bad}</Location_Y><Label>x</Label>"
        ));
        let inbound = Inbound::parse(xml.as_bytes()).unwrap();
        assert_eq!(
            inbound.kind,
            Kind::Unknown {
                msg_type: "location".into(),
                fields: vec![
                    Element::leaf("Location_X", "23.1"),
                    Element::leaf("Location_Y", bad),
                    Element::leaf("Label", "x"),
                ],
            },
            "{bad}"
        );
        check_round_trips(&inbound);
        let xml = message(&event(
            "LOCATION",
            &format!("<Latitude>{bad}</Latitude><Longitude>113.3</Longitude>"),
        ));
        let inbound = Inbound::parse(xml.as_bytes()).unwrap();
        assert!(
            matches!(&inbound.kind, Kind::Event(Event::Unknown { event, .. }) if event == "LOCATION"),
            "{bad}: {:?}",
            inbound.kind
        );
        check_round_trips(&inbound);
        let xml = message(&event(
            "location_select",
            &format!("<EventKey>k</EventKey><SendLocationInfo><Location_X>{bad}</Location_X><Location_Y>2</Location_Y></SendLocationInfo>"),
        ));
        let inbound = Inbound::parse(xml.as_bytes()).unwrap();
        assert!(
            matches!(&inbound.kind, Kind::Event(Event::Unknown { event, .. }) if event == "location_select"),
            "{bad}: {:?}",
            inbound.kind
        );
        check_round_trips(&inbound);

        // Optional ones are absent.
        let xml = message(&format!(
            "<MsgType>location</MsgType><Location_X>23.1</Location_X><Location_Y>-113</Location_Y><Scale>{bad}</Scale><Label>x</Label>"
        ));
        let inbound = Inbound::parse(xml.as_bytes()).unwrap();
        assert_eq!(
            inbound.kind,
            Kind::Location {
                location_x: 23.1,
                location_y: -113.0,
                scale: None,
                label: "x".into(),
            },
            "{bad}"
        );
        check_round_trips(&inbound);
        let xml = message(&event(
            "LOCATION",
            &format!(
                "<Latitude>23.1</Latitude><Longitude>113.3</Longitude><Precision>{bad}</Precision>"
            ),
        ));
        let inbound = Inbound::parse(xml.as_bytes()).unwrap();
        assert_eq!(
            inbound.kind,
            Kind::Event(Event::Location {
                latitude: 23.1,
                longitude: 113.3,
                precision: None,
            }),
            "{bad}"
        );
        check_round_trips(&inbound);
        let xml = message(&event(
            "location_select",
            &format!("<EventKey>k</EventKey><SendLocationInfo><Location_X>1</Location_X><Location_Y>2</Location_Y><Scale>{bad}</Scale></SendLocationInfo>"),
        ));
        let inbound = Inbound::parse(xml.as_bytes()).unwrap();
        assert!(
            matches!(
                &inbound.kind,
                Kind::Event(Event::LocationSelect { scale: None, .. })
            ),
            "{bad}: {:?}",
            inbound.kind
        );
        check_round_trips(&inbound);
    }
}

#[test]
fn unknown_elements_are_kept_as_extra() {
    check_with_extra(
        "<MsgType>text</MsgType><Extra><Deep>1</Deep></Extra><Content>x</Content><AgentID>1</AgentID>",
        None,
        Kind::Text { content: "x".into() },
        vec![
            Element {
                name: "Extra".into(),
                text: String::new(),
                children: vec![Element::leaf("Deep", "1")],
            },
            Element::leaf("AgentID", "1"),
        ],
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
    assert_eq!(key.stable_text(), "msg:oUser:99");
    // Logs get the masked form.
    assert_eq!(key.to_string(), "msg:…:99");

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
    assert_ne!(first.stable_text(), second.stable_text());
    // A retry is the same bytes, hence the same key.
    let retry = Inbound::parse(subscribe.as_bytes())
        .unwrap()
        .dedup_key(subscribe.as_bytes());
    assert_eq!(first, retry);
    let text = first.stable_text();
    assert!(text.starts_with("evt:oUser:1700000000:"), "{text}");
    assert_eq!(text.len(), "evt:oUser:1700000000:".len() + 40);
    assert_eq!(text.parse::<DedupKey>().unwrap(), first);
}
