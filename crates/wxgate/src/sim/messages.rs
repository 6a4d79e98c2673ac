//! The messages the simulator sends: every kind a follower produces, from command-line
//! fields or from a deterministic mix.
//!
//! This module only builds typed [`Inbound`] values; signing and encryption are
//! [`super::wechat`]'s job. The defaults look like real WeChat traffic (the official
//! samples' shapes) so a webhook under test sees nothing exotic unless asked to.

use wechat_proto::{Event, Header, Inbound, Kind};

/// The `ToUserName` used when none is given: a made-up original id.
pub const DEFAULT_TO_USER_NAME: &str = "gh_wxgate_sim";
/// The `FromUserName` used when none is given: a made-up OpenID of 28 characters.
pub const DEFAULT_FROM_USER_NAME: &str = "oWxgateSimFollower0000000001";

/// A real-looking QR ticket (the official sample's).
const SAMPLE_TICKET: &str =
    "gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIEZ23sUwMEmm3sUw==";

/// The header fields of a simulated message.
#[derive(Debug, Clone, clap::Args)]
pub struct HeaderArgs {
    /// `ToUserName`: the account's original id.
    #[arg(long = "to", global = true, default_value = DEFAULT_TO_USER_NAME)]
    pub to_user_name: String,
    /// `FromUserName`: the follower's OpenID.
    #[arg(long = "from", global = true, default_value = DEFAULT_FROM_USER_NAME)]
    pub from_user_name: String,
    /// `MsgId` of a message (ignored for events); random when not given.
    #[arg(long, global = true)]
    pub msg_id: Option<u64>,
    /// `CreateTime` in Unix seconds; now when not given.
    #[arg(long, global = true)]
    pub create_time: Option<i64>,
}

/// What to send: one subcommand per message kind and common event.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KindArgs {
    /// A text message.
    Text {
        /// The text, exactly as typed.
        content: String,
    },
    /// A picture.
    Image {
        /// `PicUrl`.
        #[arg(long, default_value = "http://mmbiz.qpic.cn/mmbiz_jpg/wxgate-sim/0")]
        pic_url: String,
        /// `MediaId`.
        #[arg(long, default_value = "wxgate_sim_image_media_id")]
        media_id: String,
    },
    /// A voice clip, with the speech-recognition text when `--recognition` is given.
    Voice {
        /// `MediaId`.
        #[arg(long, default_value = "wxgate_sim_voice_media_id")]
        media_id: String,
        /// `Format`.
        #[arg(long, default_value = "amr")]
        format: String,
        /// `Recognition`: the speech-recognition result (accounts with it enabled).
        #[arg(long)]
        recognition: Option<String>,
        /// `MediaId16K`.
        #[arg(long)]
        media_id_16k: Option<String>,
    },
    /// A video.
    Video {
        /// `MediaId`.
        #[arg(long, default_value = "wxgate_sim_video_media_id")]
        media_id: String,
        /// `ThumbMediaId`.
        #[arg(long, default_value = "wxgate_sim_thumb_media_id")]
        thumb_media_id: String,
    },
    /// A short video.
    Shortvideo {
        /// `MediaId`.
        #[arg(long, default_value = "wxgate_sim_video_media_id")]
        media_id: String,
        /// `ThumbMediaId`.
        #[arg(long, default_value = "wxgate_sim_thumb_media_id")]
        thumb_media_id: String,
    },
    /// A shared location.
    Location {
        /// `Location_X` (latitude).
        #[arg(long, default_value_t = 23.134521, allow_negative_numbers = true)]
        latitude: f64,
        /// `Location_Y` (longitude).
        #[arg(long, default_value_t = 113.358803, allow_negative_numbers = true)]
        longitude: f64,
        /// `Scale` (map zoom).
        #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
        scale: f64,
        /// `Label`.
        #[arg(long, default_value = "广东省广州市海珠区新港中路397号")]
        label: String,
    },
    /// A shared link.
    Link {
        /// `Url`.
        url: String,
        /// `Title`.
        #[arg(long, default_value = "A shared link")]
        title: String,
        /// `Description`.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// The follow event; with `--scene`, a follow by scanning a parametric QR code.
    Subscribe {
        /// The QR scene (sent as `EventKey` `qrscene_<scene>`, with a `Ticket`).
        #[arg(long)]
        scene: Option<String>,
        /// The QR `Ticket` (with `--scene`).
        #[arg(long)]
        ticket: Option<String>,
    },
    /// The unfollow event.
    Unsubscribe,
    /// `SCAN`: a follower scanned a parametric QR code.
    Scan {
        /// The scene value (`EventKey`, no prefix).
        scene: String,
        /// The QR `Ticket`.
        #[arg(long, default_value = SAMPLE_TICKET)]
        ticket: String,
    },
    /// `LOCATION`: the follower's position, reported on entering the chat.
    LocationEvent {
        /// `Latitude`.
        #[arg(long, default_value_t = 23.137466, allow_negative_numbers = true)]
        latitude: f64,
        /// `Longitude`.
        #[arg(long, default_value_t = 113.352425, allow_negative_numbers = true)]
        longitude: f64,
        /// `Precision`.
        #[arg(long, default_value_t = 119.385040, allow_negative_numbers = true)]
        precision: f64,
    },
    /// `CLICK`: a "click" menu button.
    Click {
        /// The button's `EventKey`.
        key: String,
    },
    /// `VIEW`: a menu link was opened.
    View {
        /// The URL (`EventKey`).
        url: String,
        /// `MenuId`.
        #[arg(long)]
        menu_id: Option<String>,
    },
}

impl KindArgs {
    /// The typed kind.
    pub fn to_kind(&self) -> Kind {
        match self.clone() {
            KindArgs::Text { content } => Kind::Text { content },
            KindArgs::Image { pic_url, media_id } => Kind::Image { pic_url, media_id },
            KindArgs::Voice {
                media_id,
                format,
                recognition,
                media_id_16k,
            } => Kind::Voice {
                media_id,
                format,
                recognition,
                media_id_16k,
            },
            KindArgs::Video {
                media_id,
                thumb_media_id,
            } => Kind::Video {
                media_id,
                thumb_media_id,
            },
            KindArgs::Shortvideo {
                media_id,
                thumb_media_id,
            } => Kind::ShortVideo {
                media_id,
                thumb_media_id,
            },
            KindArgs::Location {
                latitude,
                longitude,
                scale,
                label,
            } => Kind::Location {
                location_x: latitude,
                location_y: longitude,
                scale: Some(scale),
                label,
            },
            KindArgs::Link {
                url,
                title,
                description,
            } => Kind::Link {
                title,
                description,
                url,
            },
            KindArgs::Subscribe { scene, ticket } => Kind::Event(match scene {
                Some(scene) => Event::Subscribe {
                    event_key: Some(format!("qrscene_{scene}")),
                    scene: Some(scene),
                    ticket: Some(ticket.unwrap_or_else(|| SAMPLE_TICKET.to_owned())),
                },
                None => Event::Subscribe {
                    event_key: None,
                    scene: None,
                    ticket,
                },
            }),
            KindArgs::Unsubscribe => Kind::Event(Event::Unsubscribe),
            KindArgs::Scan { scene, ticket } => Kind::Event(Event::Scan {
                event_key: scene,
                ticket: Some(ticket),
            }),
            KindArgs::LocationEvent {
                latitude,
                longitude,
                precision,
            } => Kind::Event(Event::Location {
                latitude,
                longitude,
                precision: Some(precision),
            }),
            KindArgs::Click { key } => Kind::Event(Event::Click { event_key: key }),
            KindArgs::View { url, menu_id } => Kind::Event(Event::View { url, menu_id }),
        }
    }
}

/// A message with the given header fields; events get no `MsgId`, as WeChat sends them.
pub fn inbound(
    to_user_name: &str,
    from_user_name: &str,
    create_time: i64,
    msg_id: u64,
    kind: Kind,
) -> Inbound {
    let is_event = matches!(kind, Kind::Event(_));
    Inbound {
        header: Header {
            to_user_name: to_user_name.to_owned(),
            from_user_name: from_user_name.to_owned(),
            create_time,
            msg_id: (!is_event).then_some(msg_id),
            msg_data_id: None,
            idx: None,
        },
        kind,
        extra: Vec::new(),
    }
}

/// How many different shapes [`mixed_kind`] cycles through.
pub const MIXED_KINDS: usize = 15;

/// The `n`-th message of a storm or a mixed load: every kind and common event in turn,
/// each carrying `n` so that no two are alike (events have no `MsgId`, and WeChat's dedup
/// key for them hashes the whole XML).
pub fn mixed_kind(n: u64) -> Kind {
    let event = Kind::Event;
    match n % MIXED_KINDS as u64 {
        0 => Kind::Text {
            content: format!("你好，第 {n} 条消息"),
        },
        1 => Kind::Image {
            pic_url: format!("http://mmbiz.qpic.cn/mmbiz_jpg/wxgate-sim/{n}"),
            media_id: format!("image_{n}"),
        },
        2 => Kind::Voice {
            media_id: format!("voice_{n}"),
            format: "amr".to_owned(),
            recognition: Some(format!("语音识别结果 {n}")),
            media_id_16k: None,
        },
        3 => Kind::Voice {
            media_id: format!("voice_{n}"),
            format: "speex".to_owned(),
            recognition: None,
            media_id_16k: None,
        },
        4 => Kind::Video {
            media_id: format!("video_{n}"),
            thumb_media_id: format!("thumb_{n}"),
        },
        5 => Kind::ShortVideo {
            media_id: format!("shortvideo_{n}"),
            thumb_media_id: format!("thumb_{n}"),
        },
        6 => Kind::Location {
            location_x: 23.134521,
            location_y: 113.358803,
            scale: Some(20.0),
            label: format!("广州市海珠区 {n} 号"),
        },
        7 => Kind::Link {
            title: format!("链接 {n}"),
            description: "A shared link".to_owned(),
            url: format!("https://example.com/{n}"),
        },
        8 => event(Event::Subscribe {
            event_key: None,
            scene: None,
            ticket: None,
        }),
        9 => event(Event::Subscribe {
            event_key: Some(format!("qrscene_{n}")),
            scene: Some(n.to_string()),
            ticket: Some(SAMPLE_TICKET.to_owned()),
        }),
        10 => event(Event::Unsubscribe),
        11 => event(Event::Scan {
            event_key: n.to_string(),
            ticket: Some(SAMPLE_TICKET.to_owned()),
        }),
        12 => event(Event::Location {
            latitude: 23.137466,
            longitude: 113.352425,
            precision: Some(119.385040),
        }),
        13 => event(Event::Click {
            event_key: format!("MENU_{n}"),
        }),
        _ => event(Event::View {
            url: format!("https://example.com/menu/{n}"),
            menu_id: Some("1".to_owned()),
        }),
    }
}

/// A short label of a message kind: `text`, `voice`, `event:subscribe`, …
pub fn kind_label(kind: &Kind) -> String {
    match kind {
        Kind::Event(event) => format!("event:{}", event.name().to_ascii_lowercase()),
        Kind::Text { .. } => "text".to_owned(),
        Kind::Image { .. } => "image".to_owned(),
        Kind::Voice {
            recognition: Some(_),
            ..
        } => "voice+recognition".to_owned(),
        Kind::Voice { .. } => "voice".to_owned(),
        Kind::Video { .. } => "video".to_owned(),
        Kind::ShortVideo { .. } => "shortvideo".to_owned(),
        Kind::Location { .. } => "location".to_owned(),
        Kind::Link { .. } => "link".to_owned(),
        Kind::Unknown { msg_type, .. } => msg_type.clone(),
        _ => "other".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_covers_distinct_kinds_and_round_trips() {
        let labels: std::collections::BTreeSet<String> = (0..MIXED_KINDS as u64)
            .map(|n| kind_label(&mixed_kind(n)))
            .collect();
        // Two subscribes (plain and QR) share a label.
        assert_eq!(labels.len(), MIXED_KINDS - 1);
        for n in 0..MIXED_KINDS as u64 * 2 {
            let message = inbound("gh_1", "o1", 1, n, mixed_kind(n));
            let parsed = Inbound::parse(message.to_xml().as_bytes()).unwrap();
            assert_eq!(parsed.to_xml(), message.to_xml());
        }
    }
}
