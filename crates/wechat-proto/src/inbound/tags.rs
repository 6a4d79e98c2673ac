//! The fixed sets of the inbound model, each spelled once: the message types and the
//! events with a typed variant, as tables of (tag, wire name). [`super::MSG_TYPES`],
//! [`super::Inbound::msg_type`], [`super::Event::name`] and the parser's lookups all
//! read these tables.

use super::{Event, Kind};

/// The message types with a typed variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MsgTypeTag {
    Text,
    Image,
    Voice,
    Video,
    ShortVideo,
    Location,
    Link,
    Event,
    /// Any other `MsgType`.
    Other,
}

/// Every typed message type with its wire `MsgType`, in [`MsgTypeTag`] order.
pub(super) const MSG_TYPE_TABLE: [(MsgTypeTag, &str); 8] = [
    (MsgTypeTag::Text, "text"),
    (MsgTypeTag::Image, "image"),
    (MsgTypeTag::Voice, "voice"),
    (MsgTypeTag::Video, "video"),
    (MsgTypeTag::ShortVideo, "shortvideo"),
    (MsgTypeTag::Location, "location"),
    (MsgTypeTag::Link, "link"),
    (MsgTypeTag::Event, "event"),
];

impl MsgTypeTag {
    /// The tag of a wire `MsgType`, compared case-insensitively.
    pub(super) fn of(msg_type: &str) -> MsgTypeTag {
        MSG_TYPE_TABLE
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(msg_type))
            .map_or(MsgTypeTag::Other, |&(tag, _)| tag)
    }

    /// The tag of a typed kind; `Other` for [`Kind::Unknown`].
    pub(super) fn of_kind(kind: &Kind) -> MsgTypeTag {
        match kind {
            Kind::Text { .. } => MsgTypeTag::Text,
            Kind::Image { .. } => MsgTypeTag::Image,
            Kind::Voice { .. } => MsgTypeTag::Voice,
            Kind::Video { .. } => MsgTypeTag::Video,
            Kind::ShortVideo { .. } => MsgTypeTag::ShortVideo,
            Kind::Location { .. } => MsgTypeTag::Location,
            Kind::Link { .. } => MsgTypeTag::Link,
            Kind::Event(_) => MsgTypeTag::Event,
            Kind::Unknown { .. } => MsgTypeTag::Other,
        }
    }

    /// The wire `MsgType` of a typed tag.
    pub(super) fn name(self) -> Option<&'static str> {
        MSG_TYPE_TABLE
            .iter()
            .find(|(tag, _)| *tag == self)
            .map(|&(_, name)| name)
    }
}

/// The events with a typed variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventTag {
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
    /// Any other `Event`.
    Other,
}

/// Every typed event with its wire `Event` value in WeChat's own spelling (matched
/// case-insensitively when parsing).
pub(super) const EVENT_TABLE: [(EventTag, &str); 18] = [
    (EventTag::Subscribe, "subscribe"),
    (EventTag::Unsubscribe, "unsubscribe"),
    (EventTag::Scan, "SCAN"),
    (EventTag::Location, "LOCATION"),
    (EventTag::Click, "CLICK"),
    (EventTag::View, "VIEW"),
    (EventTag::ScancodePush, "scancode_push"),
    (EventTag::ScancodeWaitmsg, "scancode_waitmsg"),
    (EventTag::PicSysphoto, "pic_sysphoto"),
    (EventTag::PicPhotoOrAlbum, "pic_photo_or_album"),
    (EventTag::PicWeixin, "pic_weixin"),
    (EventTag::LocationSelect, "location_select"),
    (EventTag::ViewMiniprogram, "view_miniprogram"),
    (EventTag::TemplateSendJobFinish, "TEMPLATESENDJOBFINISH"),
    (EventTag::MassSendJobFinish, "MASSSENDJOBFINISH"),
    (EventTag::KfCreateSession, "kf_create_session"),
    (EventTag::KfCloseSession, "kf_close_session"),
    (EventTag::KfSwitchSession, "kf_switch_session"),
];

impl EventTag {
    /// The tag of a wire `Event` value, compared case-insensitively.
    pub(super) fn of(event: &str) -> EventTag {
        EVENT_TABLE
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(event))
            .map_or(EventTag::Other, |&(tag, _)| tag)
    }

    /// The tag of a typed event; `Other` for [`Event::Unknown`].
    pub(super) fn of_event(event: &Event) -> EventTag {
        match event {
            Event::Subscribe { .. } => EventTag::Subscribe,
            Event::Unsubscribe => EventTag::Unsubscribe,
            Event::Scan { .. } => EventTag::Scan,
            Event::Location { .. } => EventTag::Location,
            Event::Click { .. } => EventTag::Click,
            Event::View { .. } => EventTag::View,
            Event::ScancodePush { .. } => EventTag::ScancodePush,
            Event::ScancodeWaitmsg { .. } => EventTag::ScancodeWaitmsg,
            Event::PicSysphoto { .. } => EventTag::PicSysphoto,
            Event::PicPhotoOrAlbum { .. } => EventTag::PicPhotoOrAlbum,
            Event::PicWeixin { .. } => EventTag::PicWeixin,
            Event::LocationSelect { .. } => EventTag::LocationSelect,
            Event::ViewMiniprogram { .. } => EventTag::ViewMiniprogram,
            Event::TemplateSendJobFinish { .. } => EventTag::TemplateSendJobFinish,
            Event::MassSendJobFinish { .. } => EventTag::MassSendJobFinish,
            Event::KfCreateSession { .. } => EventTag::KfCreateSession,
            Event::KfCloseSession { .. } => EventTag::KfCloseSession,
            Event::KfSwitchSession { .. } => EventTag::KfSwitchSession,
            Event::Unknown { .. } => EventTag::Other,
        }
    }

    /// The wire `Event` value of a typed tag.
    pub(super) fn name(self) -> Option<&'static str> {
        EVENT_TABLE
            .iter()
            .find(|(tag, _)| *tag == self)
            .map(|&(_, name)| name)
    }
}

/// The second column of a table, at compile time.
pub(super) const fn names<T: Copy, const N: usize>(
    table: &[(T, &'static str); N],
) -> [&'static str; N] {
    let mut names = [""; N];
    let mut index = 0;
    while index < N {
        names[index] = table[index].1;
        index += 1;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_has_one_name_and_reads_back() {
        for (tag, name) in MSG_TYPE_TABLE {
            assert_eq!(MsgTypeTag::of(name), tag);
            assert_eq!(MsgTypeTag::of(&name.to_ascii_uppercase()), tag);
            assert_eq!(tag.name(), Some(name));
        }
        assert_eq!(MsgTypeTag::Other.name(), None);
        assert_eq!(MsgTypeTag::of("miniprogrampage"), MsgTypeTag::Other);
        for (tag, name) in EVENT_TABLE {
            assert_eq!(EventTag::of(name), tag);
            assert_eq!(EventTag::of(&name.to_ascii_lowercase()), tag);
            assert_eq!(tag.name(), Some(name));
        }
        assert_eq!(EventTag::Other.name(), None);
    }
}
