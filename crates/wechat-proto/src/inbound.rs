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
//! needs: CDATA is optional, unknown elements are ignored, text is kept byte for byte,
//! `MsgId` and `MsgID` are both accepted, event names match case-insensitively, and a
//! message whose typed numbers (coordinates, picture count) are missing or not numbers is
//! kept as `Unknown` rather than rejected. [`Inbound::to_xml`] writes the XML WeChat would
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
use crate::xml::{parse_number, Document, Element, Limits, ParseError, XmlWriter};

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

impl Inbound {
    /// Parses a decrypted (or plaintext-mode) message with the default [`Limits`].
    pub fn parse(xml: &[u8]) -> Result<Inbound, ParseError> {
        Inbound::parse_with_limits(xml, Limits::default())
    }

    /// Parses a decrypted (or plaintext-mode) message.
    pub fn parse_with_limits(xml: &[u8], limits: Limits) -> Result<Inbound, ParseError> {
        let mut document = Document::parse(xml, limits)?;
        from_document(&mut document)
    }

    /// The wire `MsgType`: `text`, `image`, …, `event`, or the unknown value.
    pub fn msg_type(&self) -> &str {
        match &self.kind {
            Kind::Text { .. } => "text",
            Kind::Image { .. } => "image",
            Kind::Voice { .. } => "voice",
            Kind::Video { .. } => "video",
            Kind::ShortVideo { .. } => "shortvideo",
            Kind::Location { .. } => "location",
            Kind::Link { .. } => "link",
            Kind::Event(_) => "event",
            Kind::Unknown { msg_type, .. } => msg_type,
        }
    }

    /// Whether a user sent this (anything but an event).
    ///
    /// A news reply to a user message may carry one article only (PROTOCOL §7). Message
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
        write_kind(&mut w, &self.kind);
        if let (Some(msg_id), false) = (header.msg_id, matches!(self.kind, Kind::Event(_))) {
            w.uint_element("MsgId", msg_id);
        }
        if let Some(msg_data_id) = &header.msg_data_id {
            w.cdata_element("MsgDataId", msg_data_id);
        }
        if let Some(idx) = header.idx {
            w.uint_element("Idx", u64::from(idx));
        }
        w.end("xml");
    }
}

impl Event {
    /// The wire `Event` value (`subscribe`, `SCAN`, `CLICK`, …), or the unknown value.
    pub fn name(&self) -> &str {
        match self {
            Event::Subscribe { .. } => "subscribe",
            Event::Unsubscribe => "unsubscribe",
            Event::Scan { .. } => "SCAN",
            Event::Location { .. } => "LOCATION",
            Event::Click { .. } => "CLICK",
            Event::View { .. } => "VIEW",
            Event::ScancodePush { .. } => "scancode_push",
            Event::ScancodeWaitmsg { .. } => "scancode_waitmsg",
            Event::PicSysphoto { .. } => "pic_sysphoto",
            Event::PicPhotoOrAlbum { .. } => "pic_photo_or_album",
            Event::PicWeixin { .. } => "pic_weixin",
            Event::LocationSelect { .. } => "location_select",
            Event::ViewMiniprogram { .. } => "view_miniprogram",
            Event::TemplateSendJobFinish { .. } => "TEMPLATESENDJOBFINISH",
            Event::MassSendJobFinish { .. } => "MASSSENDJOBFINISH",
            Event::KfCreateSession { .. } => "kf_create_session",
            Event::KfCloseSession { .. } => "kf_close_session",
            Event::KfSwitchSession { .. } => "kf_switch_session",
            Event::Unknown { event, .. } => event,
        }
    }
}

/// The root element.
const ROOT: usize = Document::ROOT;

/// The header elements found under the root, by index.
#[derive(Debug, Default)]
struct HeaderSlots {
    to_user_name: Option<usize>,
    from_user_name: Option<usize>,
    create_time: Option<usize>,
    msg_type: Option<usize>,
    /// The element and the spelling it used (`MsgId` or `MsgID`).
    msg_id: Option<(usize, &'static str)>,
    msg_data_id: Option<usize>,
    idx: Option<usize>,
}

/// The message types with a typed variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MsgTypeTag {
    Text,
    Image,
    Voice,
    Video,
    ShortVideo,
    Location,
    Link,
    Event,
    Other,
}

impl MsgTypeTag {
    fn of(msg_type: &str) -> MsgTypeTag {
        const TAGS: [(&str, MsgTypeTag); 8] = [
            ("text", MsgTypeTag::Text),
            ("image", MsgTypeTag::Image),
            ("voice", MsgTypeTag::Voice),
            ("video", MsgTypeTag::Video),
            ("shortvideo", MsgTypeTag::ShortVideo),
            ("location", MsgTypeTag::Location),
            ("link", MsgTypeTag::Link),
            ("event", MsgTypeTag::Event),
        ];
        TAGS.iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(msg_type))
            .map_or(MsgTypeTag::Other, |&(_, tag)| tag)
    }
}

/// The events with a typed variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventTag {
    Subscribe,
    Unsubscribe,
    Scan,
    Location,
    Click,
    View,
    ScancodePush,
    ScancodeWaitmsg,
    PicSysphoto,
    PicPhotoOrAlbum,
    PicWeixin,
    LocationSelect,
    ViewMiniprogram,
    TemplateSendJobFinish,
    MassSendJobFinish,
    KfCreateSession,
    KfCloseSession,
    KfSwitchSession,
    Other,
}

impl EventTag {
    fn of(event: &str) -> EventTag {
        const TAGS: [(&str, EventTag); 18] = [
            ("subscribe", EventTag::Subscribe),
            ("unsubscribe", EventTag::Unsubscribe),
            ("scan", EventTag::Scan),
            ("location", EventTag::Location),
            ("click", EventTag::Click),
            ("view", EventTag::View),
            ("scancode_push", EventTag::ScancodePush),
            ("scancode_waitmsg", EventTag::ScancodeWaitmsg),
            ("pic_sysphoto", EventTag::PicSysphoto),
            ("pic_photo_or_album", EventTag::PicPhotoOrAlbum),
            ("pic_weixin", EventTag::PicWeixin),
            ("location_select", EventTag::LocationSelect),
            ("view_miniprogram", EventTag::ViewMiniprogram),
            ("templatesendjobfinish", EventTag::TemplateSendJobFinish),
            ("masssendjobfinish", EventTag::MassSendJobFinish),
            ("kf_create_session", EventTag::KfCreateSession),
            ("kf_close_session", EventTag::KfCloseSession),
            ("kf_switch_session", EventTag::KfSwitchSession),
        ];
        TAGS.iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(event))
            .map_or(EventTag::Other, |&(_, tag)| tag)
    }
}

/// Builds the model from a parsed document.
fn from_document(doc: &mut Document<'_>) -> Result<Inbound, ParseError> {
    let mut slots = HeaderSlots::default();
    for child in doc.children(ROOT) {
        let name = doc.name(child);
        match name {
            "ToUserName" => first(&mut slots.to_user_name, child),
            "FromUserName" => first(&mut slots.from_user_name, child),
            "CreateTime" => first(&mut slots.create_time, child),
            "MsgType" => first(&mut slots.msg_type, child),
            "MsgId" | "MsgID" if slots.msg_id.is_none() => {
                let spelling = if name == "MsgId" { "MsgId" } else { "MsgID" };
                slots.msg_id = Some((child, spelling));
            }
            "MsgDataId" => first(&mut slots.msg_data_id, child),
            "Idx" => first(&mut slots.idx, child),
            _ => {}
        }
    }

    let to_user_name = slots.to_user_name.ok_or(ParseError::MissingField {
        field: "ToUserName",
    })?;
    let from_user_name = slots.from_user_name.ok_or(ParseError::MissingField {
        field: "FromUserName",
    })?;
    let create_time_index = slots.create_time.ok_or(ParseError::MissingField {
        field: "CreateTime",
    })?;
    let msg_type = slots
        .msg_type
        .ok_or(ParseError::MissingField { field: "MsgType" })?;
    let create_time = required_number(doc, create_time_index, "CreateTime")?;
    let tag = MsgTypeTag::of(doc.text(msg_type));

    // Events have no message id: their `MsgID` is a job id, left to the event.
    let msg_id_slot = slots.msg_id.filter(|_| tag != MsgTypeTag::Event);
    let msg_id = match msg_id_slot {
        Some((index, spelling)) => optional_number(doc, index, spelling)?,
        None => None,
    };
    let idx = match slots.idx {
        Some(index) => optional_number(doc, index, "Idx")?,
        None => None,
    };

    let consumed = [
        Some(to_user_name),
        Some(from_user_name),
        Some(create_time_index),
        Some(msg_type),
        msg_id_slot.map(|(index, _)| index),
        slots.msg_data_id,
        slots.idx,
    ];
    let kind = build_kind(doc, tag, msg_type, &consumed);

    let header = Header {
        to_user_name: doc.take_text(to_user_name),
        from_user_name: doc.take_text(from_user_name),
        create_time,
        msg_id,
        msg_data_id: slots.msg_data_id.map(|index| doc.take_text(index)),
        idx,
    };
    Ok(Inbound { header, kind })
}

/// Stores `index` in `slot` unless an earlier element already filled it: the first
/// occurrence of a duplicated element wins.
fn first(slot: &mut Option<usize>, index: usize) {
    if slot.is_none() {
        *slot = Some(index);
    }
}

/// A required numeric header field.
fn required_number<T: std::str::FromStr>(
    doc: &Document<'_>,
    index: usize,
    field: &'static str,
) -> Result<T, ParseError> {
    let text = doc.text(index);
    parse_number(text).ok_or_else(|| ParseError::InvalidNumber {
        field,
        value: text.to_owned(),
    })
}

/// An optional numeric header field: empty means absent, anything else must be a number.
fn optional_number<T: std::str::FromStr>(
    doc: &Document<'_>,
    index: usize,
    field: &'static str,
) -> Result<Option<T>, ParseError> {
    if doc.text(index).trim().is_empty() {
        Ok(None)
    } else {
        required_number(doc, index, field).map(Some)
    }
}

/// Builds the kind; a known kind whose typed numbers are missing falls back to `Unknown`.
///
/// Numbers are checked before any text is taken out of the document, so the fallback
/// still sees every field intact.
fn build_kind(
    doc: &mut Document<'_>,
    tag: MsgTypeTag,
    msg_type: usize,
    consumed: &[Option<usize>],
) -> Kind {
    let typed = match tag {
        MsgTypeTag::Text => Some(Kind::Text {
            content: take(doc, ROOT, "Content"),
        }),
        MsgTypeTag::Image => Some(Kind::Image {
            pic_url: take(doc, ROOT, "PicUrl"),
            media_id: take(doc, ROOT, "MediaId"),
        }),
        MsgTypeTag::Voice => Some(Kind::Voice {
            media_id: take(doc, ROOT, "MediaId"),
            format: take(doc, ROOT, "Format"),
            recognition: take_optional(doc, ROOT, "Recognition"),
            media_id_16k: take_optional(doc, ROOT, "MediaId16K"),
        }),
        MsgTypeTag::Video => Some(Kind::Video {
            media_id: take(doc, ROOT, "MediaId"),
            thumb_media_id: take(doc, ROOT, "ThumbMediaId"),
        }),
        MsgTypeTag::ShortVideo => Some(Kind::ShortVideo {
            media_id: take(doc, ROOT, "MediaId"),
            thumb_media_id: take(doc, ROOT, "ThumbMediaId"),
        }),
        MsgTypeTag::Location => {
            match (
                number(doc, ROOT, "Location_X"),
                number(doc, ROOT, "Location_Y"),
            ) {
                (Some(location_x), Some(location_y)) => Some(Kind::Location {
                    location_x,
                    location_y,
                    scale: number(doc, ROOT, "Scale"),
                    label: take(doc, ROOT, "Label"),
                }),
                _ => None,
            }
        }
        MsgTypeTag::Link => Some(Kind::Link {
            title: take(doc, ROOT, "Title"),
            description: take(doc, ROOT, "Description"),
            url: take(doc, ROOT, "Url"),
        }),
        MsgTypeTag::Event => {
            let event = doc.child(ROOT, "Event");
            let event_tag = event.map_or(EventTag::Other, |index| EventTag::of(doc.text(index)));
            let typed = build_event(doc, event_tag);
            let event = typed.unwrap_or_else(|| {
                let mut consumed = consumed.to_vec();
                consumed.push(event);
                Event::Unknown {
                    event: event
                        .map(|index| doc.text(index).to_owned())
                        .unwrap_or_default(),
                    fields: raw_fields(doc, &consumed),
                }
            });
            return Kind::Event(event);
        }
        MsgTypeTag::Other => None,
    };
    typed.unwrap_or_else(|| Kind::Unknown {
        msg_type: doc.text(msg_type).to_owned(),
        fields: raw_fields(doc, consumed),
    })
}

/// Builds a known event, or `None` when it is unknown or its typed numbers are missing.
fn build_event(doc: &mut Document<'_>, tag: EventTag) -> Option<Event> {
    let event = match tag {
        EventTag::Subscribe => {
            let event_key = take_optional(doc, ROOT, "EventKey");
            let scene = event_key
                .as_deref()
                .and_then(|key| key.strip_prefix("qrscene_"))
                .map(str::to_owned);
            Event::Subscribe {
                event_key,
                scene,
                ticket: take_optional(doc, ROOT, "Ticket"),
            }
        }
        EventTag::Unsubscribe => Event::Unsubscribe,
        EventTag::Scan => Event::Scan {
            event_key: take(doc, ROOT, "EventKey"),
            ticket: take_optional(doc, ROOT, "Ticket"),
        },
        EventTag::Location => Event::Location {
            latitude: number(doc, ROOT, "Latitude")?,
            longitude: number(doc, ROOT, "Longitude")?,
            precision: number(doc, ROOT, "Precision"),
        },
        EventTag::Click => Event::Click {
            event_key: take(doc, ROOT, "EventKey"),
        },
        EventTag::View => Event::View {
            url: take(doc, ROOT, "EventKey"),
            menu_id: take_menu_id(doc),
        },
        EventTag::ScancodePush | EventTag::ScancodeWaitmsg => {
            let event_key = take(doc, ROOT, "EventKey");
            let info = doc.child(ROOT, "ScanCodeInfo");
            let scan_type = info
                .map(|info| take(doc, info, "ScanType"))
                .unwrap_or_default();
            let scan_result = info
                .map(|info| take(doc, info, "ScanResult"))
                .unwrap_or_default();
            if tag == EventTag::ScancodePush {
                Event::ScancodePush {
                    event_key,
                    scan_type,
                    scan_result,
                }
            } else {
                Event::ScancodeWaitmsg {
                    event_key,
                    scan_type,
                    scan_result,
                }
            }
        }
        EventTag::PicSysphoto | EventTag::PicPhotoOrAlbum | EventTag::PicWeixin => {
            let info = doc.child(ROOT, "SendPicsInfo")?;
            let count = number(doc, info, "Count")?;
            let sums: Vec<usize> = match doc.child(info, "PicList") {
                Some(list) => doc
                    .children(list)
                    .filter(|&item| doc.name(item) == "item")
                    .filter_map(|item| doc.child(item, "PicMd5Sum"))
                    .collect(),
                None => Vec::new(),
            };
            let pic_md5_sums = sums.into_iter().map(|sum| doc.take_text(sum)).collect();
            let event_key = take(doc, ROOT, "EventKey");
            match tag {
                EventTag::PicSysphoto => Event::PicSysphoto {
                    event_key,
                    count,
                    pic_md5_sums,
                },
                EventTag::PicPhotoOrAlbum => Event::PicPhotoOrAlbum {
                    event_key,
                    count,
                    pic_md5_sums,
                },
                _ => Event::PicWeixin {
                    event_key,
                    count,
                    pic_md5_sums,
                },
            }
        }
        EventTag::LocationSelect => {
            let info = doc.child(ROOT, "SendLocationInfo")?;
            let location_x = number(doc, info, "Location_X")?;
            let location_y = number(doc, info, "Location_Y")?;
            Event::LocationSelect {
                event_key: take(doc, ROOT, "EventKey"),
                location_x,
                location_y,
                scale: number(doc, info, "Scale"),
                label: take(doc, info, "Label"),
                poiname: take(doc, info, "Poiname"),
            }
        }
        EventTag::ViewMiniprogram => Event::ViewMiniprogram {
            page_path: take(doc, ROOT, "EventKey"),
            menu_id: take_menu_id(doc),
        },
        EventTag::TemplateSendJobFinish => Event::TemplateSendJobFinish {
            msg_id: job_id(doc),
            status: take(doc, ROOT, "Status"),
        },
        EventTag::MassSendJobFinish => Event::MassSendJobFinish {
            msg_id: job_id(doc),
            status: take(doc, ROOT, "Status"),
            total_count: number(doc, ROOT, "TotalCount"),
            filter_count: number(doc, ROOT, "FilterCount"),
            sent_count: number(doc, ROOT, "SentCount"),
            error_count: number(doc, ROOT, "ErrorCount"),
        },
        EventTag::KfCreateSession => Event::KfCreateSession {
            kf_account: take(doc, ROOT, "KfAccount"),
        },
        EventTag::KfCloseSession => Event::KfCloseSession {
            kf_account: take(doc, ROOT, "KfAccount"),
        },
        EventTag::KfSwitchSession => Event::KfSwitchSession {
            from_kf_account: take(doc, ROOT, "FromKfAccount"),
            to_kf_account: take(doc, ROOT, "ToKfAccount"),
        },
        EventTag::Other => return None,
    };
    Some(event)
}

/// The text of child `name` of `parent`, empty when absent.
fn take(doc: &mut Document<'_>, parent: usize, name: &str) -> String {
    take_optional(doc, parent, name).unwrap_or_default()
}

/// The text of child `name` of `parent`, `None` when absent (present and empty is `Some("")`).
fn take_optional(doc: &mut Document<'_>, parent: usize, name: &str) -> Option<String> {
    doc.child(parent, name).map(|index| doc.take_text(index))
}

/// The number in child `name` of `parent`, `None` when absent or not a number.
fn number<T: std::str::FromStr>(doc: &Document<'_>, parent: usize, name: &str) -> Option<T> {
    doc.child(parent, name)
        .and_then(|index| parse_number(doc.text(index)))
}

/// `MenuId`, which the documentation also spells `MenuID`.
fn take_menu_id(doc: &mut Document<'_>) -> Option<String> {
    take_optional(doc, ROOT, "MenuId").or_else(|| take_optional(doc, ROOT, "MenuID"))
}

/// The job id of a job-finish event, `MsgID` or `MsgId`.
fn job_id(doc: &Document<'_>) -> Option<u64> {
    number(doc, ROOT, "MsgID").or_else(|| number(doc, ROOT, "MsgId"))
}

/// Every child of the root not in `consumed`, as raw elements.
fn raw_fields(doc: &Document<'_>, consumed: &[Option<usize>]) -> Vec<Element> {
    doc.children(ROOT)
        .filter(|child| !consumed.contains(&Some(*child)))
        .map(|child| doc.to_element(child))
        .collect()
}

/// Writes the elements of a kind after `MsgType`.
fn write_kind(w: &mut XmlWriter<'_>, kind: &Kind) {
    match kind {
        Kind::Text { content } => w.cdata_element("Content", content),
        Kind::Image { pic_url, media_id } => {
            w.cdata_element("PicUrl", pic_url);
            w.cdata_element("MediaId", media_id);
        }
        Kind::Voice {
            media_id,
            format,
            recognition,
            media_id_16k,
        } => {
            w.cdata_element("MediaId", media_id);
            w.cdata_element("Format", format);
            if let Some(recognition) = recognition {
                w.cdata_element("Recognition", recognition);
            }
            if let Some(media_id_16k) = media_id_16k {
                w.cdata_element("MediaId16K", media_id_16k);
            }
        }
        Kind::Video {
            media_id,
            thumb_media_id,
        }
        | Kind::ShortVideo {
            media_id,
            thumb_media_id,
        } => {
            w.cdata_element("MediaId", media_id);
            w.cdata_element("ThumbMediaId", thumb_media_id);
        }
        Kind::Location {
            location_x,
            location_y,
            scale,
            label,
        } => {
            w.float_element("Location_X", *location_x);
            w.float_element("Location_Y", *location_y);
            if let Some(scale) = scale {
                w.float_element("Scale", *scale);
            }
            w.cdata_element("Label", label);
        }
        Kind::Link {
            title,
            description,
            url,
        } => {
            w.cdata_element("Title", title);
            w.cdata_element("Description", description);
            w.cdata_element("Url", url);
        }
        Kind::Event(event) => {
            w.cdata_element("Event", event.name());
            write_event(w, event);
        }
        Kind::Unknown { fields, .. } => {
            for field in fields {
                w.element(field);
            }
        }
    }
}

/// Writes the elements of an event after `Event`.
fn write_event(w: &mut XmlWriter<'_>, event: &Event) {
    match event {
        Event::Subscribe {
            event_key,
            scene,
            ticket,
        } => {
            match (event_key, scene) {
                (Some(event_key), _) => w.cdata_element("EventKey", event_key),
                (None, Some(scene)) => w.cdata_element("EventKey", &format!("qrscene_{scene}")),
                (None, None) => {}
            }
            if let Some(ticket) = ticket {
                w.cdata_element("Ticket", ticket);
            }
        }
        Event::Unsubscribe => {}
        Event::Scan { event_key, ticket } => {
            w.cdata_element("EventKey", event_key);
            if let Some(ticket) = ticket {
                w.cdata_element("Ticket", ticket);
            }
        }
        Event::Location {
            latitude,
            longitude,
            precision,
        } => {
            w.float_element("Latitude", *latitude);
            w.float_element("Longitude", *longitude);
            if let Some(precision) = precision {
                w.float_element("Precision", *precision);
            }
        }
        Event::Click { event_key } => w.cdata_element("EventKey", event_key),
        Event::View {
            url: event_key,
            menu_id,
        }
        | Event::ViewMiniprogram {
            page_path: event_key,
            menu_id,
        } => {
            w.cdata_element("EventKey", event_key);
            if let Some(menu_id) = menu_id {
                w.cdata_element("MenuId", menu_id);
            }
        }
        Event::ScancodePush {
            event_key,
            scan_type,
            scan_result,
        }
        | Event::ScancodeWaitmsg {
            event_key,
            scan_type,
            scan_result,
        } => {
            w.cdata_element("EventKey", event_key);
            w.start("ScanCodeInfo");
            w.cdata_element("ScanType", scan_type);
            w.cdata_element("ScanResult", scan_result);
            w.end("ScanCodeInfo");
        }
        Event::PicSysphoto {
            event_key,
            count,
            pic_md5_sums,
        }
        | Event::PicPhotoOrAlbum {
            event_key,
            count,
            pic_md5_sums,
        }
        | Event::PicWeixin {
            event_key,
            count,
            pic_md5_sums,
        } => {
            w.cdata_element("EventKey", event_key);
            w.start("SendPicsInfo");
            w.uint_element("Count", u64::from(*count));
            w.start("PicList");
            for sum in pic_md5_sums {
                w.start("item");
                w.cdata_element("PicMd5Sum", sum);
                w.end("item");
            }
            w.end("PicList");
            w.end("SendPicsInfo");
        }
        Event::LocationSelect {
            event_key,
            location_x,
            location_y,
            scale,
            label,
            poiname,
        } => {
            w.cdata_element("EventKey", event_key);
            w.start("SendLocationInfo");
            w.float_cdata_element("Location_X", *location_x);
            w.float_cdata_element("Location_Y", *location_y);
            if let Some(scale) = scale {
                w.float_cdata_element("Scale", *scale);
            }
            w.cdata_element("Label", label);
            w.cdata_element("Poiname", poiname);
            w.end("SendLocationInfo");
        }
        Event::TemplateSendJobFinish { msg_id, status } => {
            if let Some(msg_id) = msg_id {
                w.uint_element("MsgID", *msg_id);
            }
            w.cdata_element("Status", status);
        }
        Event::MassSendJobFinish {
            msg_id,
            status,
            total_count,
            filter_count,
            sent_count,
            error_count,
        } => {
            if let Some(msg_id) = msg_id {
                w.uint_element("MsgID", *msg_id);
            }
            w.cdata_element("Status", status);
            for (name, value) in [
                ("TotalCount", total_count),
                ("FilterCount", filter_count),
                ("SentCount", sent_count),
                ("ErrorCount", error_count),
            ] {
                if let Some(value) = value {
                    w.uint_element(name, *value);
                }
            }
        }
        Event::KfCreateSession { kf_account } | Event::KfCloseSession { kf_account } => {
            w.cdata_element("KfAccount", kf_account);
        }
        Event::KfSwitchSession {
            from_kf_account,
            to_kf_account,
        } => {
            w.cdata_element("FromKfAccount", from_kf_account);
            w.cdata_element("ToKfAccount", to_kf_account);
        }
        Event::Unknown { fields, .. } => {
            for field in fields {
                w.element(field);
            }
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
