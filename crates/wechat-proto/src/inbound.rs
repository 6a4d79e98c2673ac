//! The typed model of every message and event WeChat pushes to the server.
//!
//! An [`Inbound`] is the common [`Header`] plus a [`Kind`]: one variant per message type
//! and, under [`Kind::Event`], one [`Event`] variant per known event. WeChat adds message
//! types and events without notice, so anything not modelled here becomes
//! [`Kind::Unknown`] or [`Event::Unknown`] with every raw element kept: a new event must
//! never fail a request. Only a broken header (a missing `ToUserName`, `FromUserName`,
//! `CreateTime` or `MsgType`, or a non-numeric `CreateTime`, `MsgId` or `Idx`) is an error.
//!
//! Parsing goes through the hardened reader of [`crate::xml`] and is lenient the way WeChat
//! needs: CDATA is optional, elements a typed kind does not model are kept in
//! [`Inbound::extra`] (WeChat adds fields to existing events), text is kept byte for byte,
//! `MsgId` and `MsgID` are both accepted, event names match case-insensitively, and a
//! message whose typed numbers (coordinates, picture count) are missing or not numbers is
//! kept as `Unknown` rather than rejected. Floats must be finite: `NaN`, `inf` or `1e400`
//! are not numbers here (a required coordinate makes the kind `Unknown`, an optional
//! `Scale` or `Precision` is `None`), so the JSON form always round-trips. [`Inbound::to_xml`] writes the XML WeChat would
//! send, with the one writer, so that `Inbound::parse(inbound.to_xml())` gives `inbound`
//! back (text is sanitized by the writer, see [`crate::xml::sanitize_xml_text`]).
//!
//! # JSON form
//!
//! With the `serde` feature (on by default) an `Inbound` has a stable JSON form for
//! upstream services written in other languages:
//!
//! - The header fields are at the top level in snake_case: `to_user_name`,
//!   `from_user_name`, `create_time` (a number), and when present `msg_id` (a **string**,
//!   since a u64 does not fit a JSON number in every language), `msg_data_id`, `idx`.
//! - `"type"` is the message type in lower case: `text`, `image`, `voice`, `video`,
//!   `shortvideo`, `location`, `link`, `event`, or `unknown` (then `msg_type` holds the
//!   wire value and `fields` the raw elements as `{"name","text","children"}` objects).
//! - The kind's fields follow in snake_case; absent optional fields are omitted.
//! - Events add `"event"`: the lower-cased wire name (`subscribe`, `scan`, `click`,
//!   `scancode_push`, `templatesendjobfinish`, …) or `unknown` (then `event_name` holds
//!   the wire value). The `MsgID` of the job-finish events is a job id, not a message id,
//!   and travels as the string `job_id`.
//! - `"extra"`, when a typed kind carried elements it does not model: the list of raw
//!   elements ([`Inbound::extra`]), nested ones included, in the same
//!   `{"name","text","children"}` form.
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! use wechat_proto::inbound::{Inbound, Kind};
//!
//! let xml = b"<xml><ToUserName><![CDATA[gh_1]]></ToUserName>\
//!     <FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1348831860</CreateTime>\
//!     <MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello]]></Content>\
//!     <MsgId>1234567890123456</MsgId></xml>";
//! let inbound = Inbound::parse(xml).unwrap();
//! assert_eq!(inbound.kind, Kind::Text { content: "hello".into() });
//!
//! let json = serde_json::to_string(&inbound).unwrap();
//! assert_eq!(
//!     json,
//!     r#"{"to_user_name":"gh_1","from_user_name":"oUser","create_time":1348831860,"msg_id":"1234567890123456","type":"text","content":"hello"}"#
//! );
//! assert_eq!(serde_json::from_str::<Inbound>(&json).unwrap(), inbound);
//!
//! let event = r#"{"to_user_name":"gh_1","from_user_name":"oUser","create_time":1,"type":"event","event":"subscribe","event_key":"qrscene_7","scene":"7"}"#;
//! let event: Inbound = serde_json::from_str(event).unwrap();
//! assert_eq!(event.msg_type(), "event");
//! # }
//! ```

use sha1::{Digest, Sha1};

use crate::dedup::DedupKey;
use crate::xml::{Document, Element, Limits, ParseError, XmlWriter};

mod codec;
mod tags;

use tags::{EventTag, MsgTypeTag, EVENT_TABLE, MSG_TYPE_TABLE};

/// One message or event pushed by WeChat, after decryption.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Inbound {
    /// The fields every message and event carries.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub header: Header,
    /// What was sent.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub kind: Kind,
    /// The elements of a typed kind that its fields do not model, in document order,
    /// nested ones included: WeChat adds fields to existing messages and events without
    /// notice, and a typed kind must not lose them.
    ///
    /// An element the model did not read at all is kept whole. Of a container the model
    /// did read (`ScanCodeInfo`, `SendPicsInfo`, …), an element of the same name is kept
    /// holding only the parts it did not read. [`Inbound::to_xml`] writes these after the
    /// modelled elements (a partial container becomes a second one), which reads back to
    /// the same value. Always empty for [`Kind::Unknown`] and [`Event::Unknown`], whose
    /// `fields` keep everything; header elements are never kept here.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub extra: Vec<Element>,
}

/// The fields common to every message and event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Header {
    /// The Official Account's original id (`gh_…`), the addressee.
    pub to_user_name: String,
    /// The sender's OpenID.
    pub from_user_name: String,
    /// When WeChat created the message, in Unix seconds.
    pub create_time: i64,
    /// The message id of an ordinary message (`MsgId`, also spelled `MsgID`).
    ///
    /// Always `None` for events: the `MsgID` of job-finish events is a job id and is
    /// carried by the event itself. In JSON it is a string.
    #[cfg_attr(
        feature = "serde",
        serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "u64_as_string"
        )
    )]
    pub msg_id: Option<u64>,
    /// The id of the article the message comes from (`MsgDataId`), if any.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub msg_data_id: Option<String>,
    /// The index (from 1) of the article inside a multi-article post (`Idx`), if any.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub idx: Option<u32>,
}

/// What a message is, with its type-specific fields.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(tag = "type", rename_all = "lowercase")
)]
#[non_exhaustive]
pub enum Kind {
    /// `text`: a chat message.
    Text {
        /// The text, exactly as typed (newlines, leading spaces and emoji included).
        content: String,
    },
    /// `image`: a picture.
    Image {
        /// A WeChat-hosted URL of the picture.
        pic_url: String,
        /// The media id to download it with.
        media_id: String,
    },
    /// `voice`: a voice clip.
    Voice {
        /// The media id of the clip.
        media_id: String,
        /// Its format, e.g. `amr` or `speex`.
        format: String,
        /// The speech recognition result, when enabled for the account; may be empty.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        recognition: Option<String>,
        /// The media id of a 16 kHz rendition (`MediaId16K`), if any.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        media_id_16k: Option<String>,
    },
    /// `video`: a video.
    Video {
        /// The media id of the video.
        media_id: String,
        /// The media id of its thumbnail.
        thumb_media_id: String,
    },
    /// `shortvideo`: a short video.
    ShortVideo {
        /// The media id of the video.
        media_id: String,
        /// The media id of its thumbnail.
        thumb_media_id: String,
    },
    /// `location`: a shared location.
    Location {
        /// Latitude (`Location_X`).
        location_x: f64,
        /// Longitude (`Location_Y`).
        location_y: f64,
        /// The map zoom (`Scale`), integer or float.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        scale: Option<f64>,
        /// The place description, exactly as sent (it may start with a space).
        label: String,
    },
    /// `link`: a shared link.
    Link {
        /// The link title.
        title: String,
        /// The link description.
        description: String,
        /// The URL.
        url: String,
    },
    /// `event`: an event push.
    Event(Event),
    /// Any other `MsgType`, with every element except the header kept raw.
    Unknown {
        /// The `MsgType` as sent.
        msg_type: String,
        /// The other elements, nested ones included, in document order.
        #[cfg_attr(feature = "serde", serde(default))]
        fields: Vec<Element>,
    },
}

/// An event push (`MsgType` `event`), by its `Event` value.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(tag = "event")
)]
#[non_exhaustive]
pub enum Event {
    /// `subscribe`: the user followed the account, possibly by scanning a QR code.
    #[cfg_attr(feature = "serde", serde(rename = "subscribe"))]
    Subscribe {
        /// The raw `EventKey`, e.g. `qrscene_123`; absent for a plain follow.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        event_key: Option<String>,
        /// The QR scene: `event_key` without its `qrscene_` prefix, when it has one.
        ///
        /// Derived from `event_key` when parsing; [`Inbound::to_xml`] only uses it when
        /// `event_key` is `None`.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        scene: Option<String>,
        /// The QR code ticket, for a follow through a QR code.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        ticket: Option<String>,
    },
    /// `unsubscribe`: the user unfollowed; replies are not shown.
    #[cfg_attr(feature = "serde", serde(rename = "unsubscribe"))]
    Unsubscribe,
    /// `SCAN`: a follower scanned a parametric QR code.
    #[cfg_attr(feature = "serde", serde(rename = "scan"))]
    Scan {
        /// The scene value (no prefix): a scene id or a scene string.
        event_key: String,
        /// The QR code ticket.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        ticket: Option<String>,
    },
    /// `LOCATION`: the user's position, reported on session entry or periodically.
    #[cfg_attr(feature = "serde", serde(rename = "location"))]
    Location {
        /// Latitude.
        latitude: f64,
        /// Longitude.
        longitude: f64,
        /// Accuracy, if sent.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        precision: Option<f64>,
    },
    /// `CLICK`: a "click" menu button.
    #[cfg_attr(feature = "serde", serde(rename = "click"))]
    Click {
        /// The button's key.
        event_key: String,
    },
    /// `VIEW`: a menu link was opened.
    #[cfg_attr(feature = "serde", serde(rename = "view"))]
    View {
        /// The URL (`EventKey`).
        url: String,
        /// The menu (`MenuId`), for personalised menus.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        menu_id: Option<String>,
    },
    /// `scancode_push`: a menu scan whose result the client handles.
    #[cfg_attr(feature = "serde", serde(rename = "scancode_push"))]
    ScancodePush {
        /// The button's key.
        event_key: String,
        /// `ScanCodeInfo/ScanType`, e.g. `qrcode`.
        scan_type: String,
        /// `ScanCodeInfo/ScanResult`.
        scan_result: String,
    },
    /// `scancode_waitmsg`: a menu scan whose result the account answers.
    #[cfg_attr(feature = "serde", serde(rename = "scancode_waitmsg"))]
    ScancodeWaitmsg {
        /// The button's key.
        event_key: String,
        /// `ScanCodeInfo/ScanType`, e.g. `qrcode`.
        scan_type: String,
        /// `ScanCodeInfo/ScanResult`.
        scan_result: String,
    },
    /// `pic_sysphoto`: pictures taken with the camera from a menu button.
    #[cfg_attr(feature = "serde", serde(rename = "pic_sysphoto"))]
    PicSysphoto {
        /// The button's key.
        event_key: String,
        /// `SendPicsInfo/Count`.
        count: u32,
        /// `SendPicsInfo/PicList/item/PicMd5Sum`, in order.
        pic_md5_sums: Vec<String>,
    },
    /// `pic_photo_or_album`: pictures from the camera or the album.
    #[cfg_attr(feature = "serde", serde(rename = "pic_photo_or_album"))]
    PicPhotoOrAlbum {
        /// The button's key.
        event_key: String,
        /// `SendPicsInfo/Count`.
        count: u32,
        /// `SendPicsInfo/PicList/item/PicMd5Sum`, in order.
        pic_md5_sums: Vec<String>,
    },
    /// `pic_weixin`: pictures from the WeChat album.
    #[cfg_attr(feature = "serde", serde(rename = "pic_weixin"))]
    PicWeixin {
        /// The button's key.
        event_key: String,
        /// `SendPicsInfo/Count`.
        count: u32,
        /// `SendPicsInfo/PicList/item/PicMd5Sum`, in order.
        pic_md5_sums: Vec<String>,
    },
    /// `location_select`: a location picked from a menu button.
    #[cfg_attr(feature = "serde", serde(rename = "location_select"))]
    LocationSelect {
        /// The button's key.
        event_key: String,
        /// `SendLocationInfo/Location_X` (latitude).
        location_x: f64,
        /// `SendLocationInfo/Location_Y` (longitude).
        location_y: f64,
        /// `SendLocationInfo/Scale`.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        scale: Option<f64>,
        /// `SendLocationInfo/Label`, exactly as sent.
        label: String,
        /// `SendLocationInfo/Poiname`; often empty.
        poiname: String,
    },
    /// `view_miniprogram`: a menu button opened a mini program.
    #[cfg_attr(feature = "serde", serde(rename = "view_miniprogram"))]
    ViewMiniprogram {
        /// The mini program page path (`EventKey`).
        page_path: String,
        /// The menu (`MenuId`).
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        menu_id: Option<String>,
    },
    /// `TEMPLATESENDJOBFINISH`: the outcome of a template message.
    #[cfg_attr(feature = "serde", serde(rename = "templatesendjobfinish"))]
    TemplateSendJobFinish {
        /// The job id (`MsgID`); `job_id` in JSON, as a string.
        #[cfg_attr(
            feature = "serde",
            serde(
                rename = "job_id",
                default,
                skip_serializing_if = "Option::is_none",
                with = "u64_as_string"
            )
        )]
        msg_id: Option<u64>,
        /// `success`, `failed:user block`, `failed: system failed`, …
        status: String,
    },
    /// `MASSSENDJOBFINISH`: the outcome of a mass message.
    #[cfg_attr(feature = "serde", serde(rename = "masssendjobfinish"))]
    MassSendJobFinish {
        /// The job id (`MsgID`); `job_id` in JSON, as a string.
        #[cfg_attr(
            feature = "serde",
            serde(
                rename = "job_id",
                default,
                skip_serializing_if = "Option::is_none",
                with = "u64_as_string"
            )
        )]
        msg_id: Option<u64>,
        /// `send success`, `err(30003)`, …
        status: String,
        /// `TotalCount`.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        total_count: Option<u64>,
        /// `FilterCount`.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        filter_count: Option<u64>,
        /// `SentCount`.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        sent_count: Option<u64>,
        /// `ErrorCount`.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        error_count: Option<u64>,
    },
    /// `kf_create_session`: a customer-service agent took the conversation.
    #[cfg_attr(feature = "serde", serde(rename = "kf_create_session"))]
    KfCreateSession {
        /// The agent (`KfAccount`).
        kf_account: String,
    },
    /// `kf_close_session`: a customer-service agent closed the conversation.
    #[cfg_attr(feature = "serde", serde(rename = "kf_close_session"))]
    KfCloseSession {
        /// The agent (`KfAccount`).
        kf_account: String,
    },
    /// `kf_switch_session`: the conversation moved to another agent.
    #[cfg_attr(feature = "serde", serde(rename = "kf_switch_session"))]
    KfSwitchSession {
        /// The previous agent (`FromKfAccount`).
        from_kf_account: String,
        /// The new agent (`ToKfAccount`).
        to_kf_account: String,
    },
    /// Any other event, with every element except the header and `Event` kept raw.
    #[cfg_attr(feature = "serde", serde(rename = "unknown"))]
    Unknown {
        /// The `Event` value as sent (`event_name` in JSON).
        #[cfg_attr(feature = "serde", serde(rename = "event_name"))]
        event: String,
        /// The other elements, nested ones included, in document order.
        #[cfg_attr(feature = "serde", serde(default))]
        fields: Vec<Element>,
    },
}

/// The wire `MsgType` values this crate types; any other value parses as [`Kind::Unknown`].
pub const MSG_TYPES: [&str; 8] = tags::names(&MSG_TYPE_TABLE);

/// The wire `Event` values this crate types, in WeChat's spelling (matched
/// case-insensitively); any other value parses as [`Event::Unknown`].
pub const EVENT_NAMES: [&str; 18] = tags::names(&EVENT_TABLE);

impl Inbound {
    /// Parses a decrypted (or plaintext-mode) message with the default [`Limits`].
    pub fn parse(xml: &[u8]) -> Result<Inbound, ParseError> {
        Inbound::parse_with_limits(xml, Limits::default())
    }

    /// Parses a decrypted (or plaintext-mode) message.
    pub fn parse_with_limits(xml: &[u8], limits: Limits) -> Result<Inbound, ParseError> {
        let mut document = Document::parse(xml, limits)?;
        codec::from_document(&mut document)
    }

    /// The wire `MsgType`: `text`, `image`, …, `event`, or the unknown value.
    pub fn msg_type(&self) -> &str {
        match &self.kind {
            Kind::Unknown { msg_type, .. } => msg_type,
            kind => MsgTypeTag::of_kind(kind).name().unwrap_or_default(),
        }
    }

    /// Whether a user sent this (anything but an event).
    ///
    /// A news reply to a user message may carry one article only (docs/protocol.md §7). Message
    /// types unknown to this crate count as user messages, since the stricter limit is the
    /// safe one.
    pub fn is_user_message(&self) -> bool {
        !matches!(self.kind, Kind::Event(_))
    }

    /// The key WeChat's retries of this message share.
    ///
    /// `plaintext_xml` is the decrypted XML this message was parsed from: events have no
    /// id, so their key includes its SHA-1 to tell two events of the same second apart.
    pub fn dedup_key(&self, plaintext_xml: &[u8]) -> DedupKey {
        match (self.header.msg_id, &self.kind) {
            (Some(msg_id), kind) if !matches!(kind, Kind::Event(_)) => DedupKey::Message {
                from_user_name: self.header.from_user_name.clone(),
                msg_id,
            },
            _ => DedupKey::Event {
                from_user_name: self.header.from_user_name.clone(),
                create_time: self.header.create_time,
                xml_sha1: Sha1::digest(plaintext_xml).into(),
            },
        }
    }

    /// The XML WeChat would send for this message (plaintext form).
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(256);
        self.write_into(&mut out);
        out
    }

    /// Appends the XML of [`Inbound::to_xml`] to `out`.
    pub fn write_into(&self, out: &mut String) {
        let mut w = XmlWriter::new(out);
        let header = &self.header;
        w.start("xml");
        w.cdata_element("ToUserName", &header.to_user_name);
        w.cdata_element("FromUserName", &header.from_user_name);
        w.int_element("CreateTime", header.create_time);
        w.cdata_element("MsgType", self.msg_type());
        codec::write_kind(&mut w, &self.kind);
        if let (Some(msg_id), false) = (header.msg_id, matches!(self.kind, Kind::Event(_))) {
            w.uint_element("MsgId", msg_id);
        }
        if let Some(msg_data_id) = &header.msg_data_id {
            w.cdata_element("MsgDataId", msg_data_id);
        }
        if let Some(idx) = header.idx {
            w.uint_element("Idx", u64::from(idx));
        }
        for element in &self.extra {
            w.element(element);
        }
        w.end("xml");
    }
}

impl Event {
    /// The wire `Event` value (`subscribe`, `SCAN`, `CLICK`, …), or the unknown value.
    pub fn name(&self) -> &str {
        match self {
            Event::Unknown { event, .. } => event,
            event => EventTag::of_event(event).name().unwrap_or_default(),
        }
    }
}

/// Serde helpers writing a `u64` as a JSON string, since JavaScript and other languages
/// lose precision on integers above 2^53. Deserialization also accepts a number.
#[cfg(feature = "serde")]
mod u64_as_string {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(
        value: &Option<u64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.collect_str(value),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        deserializer.deserialize_option(OptionalU64)
    }

    /// Accepts `null`, a decimal string or a non-negative integer.
    struct OptionalU64;

    impl<'de> Visitor<'de> for OptionalU64 {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a u64 as a decimal string")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(self)
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
            Ok(Some(value))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
            u64::try_from(value)
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(value), &self))
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            value
                .parse()
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Str(value), &self))
        }
    }
}
