//! The XML side of the inbound model: reading a parsed [`Document`] into an [`Inbound`],
//! and writing an [`Inbound`] back the way WeChat would send it.
//!
//! Reading is lenient in the ways docs/protocol.md §5–6 requires (see the parent module); the
//! one rule it enforces is that the header is complete. A known kind whose typed numbers
//! are missing is kept as `Unknown`, which is why numbers are always checked before any
//! text is moved out of the document.

use crate::xml::{parse_number, Document, Element, Number, ParseError, XmlWriter};

use super::tags::{EventTag, MsgTypeTag};
use super::{Event, Header, Inbound, Kind};

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

/// Builds the model from a parsed document.
pub(super) fn from_document(doc: &mut Document<'_>) -> Result<Inbound, ParseError> {
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
    doc.mark_used(create_time_index);
    doc.mark_used(msg_type);
    let tag = MsgTypeTag::of(doc.text(msg_type));

    // Events have no message id: their `MsgID` is a job id, left to the event.
    let msg_id_slot = slots.msg_id.filter(|_| tag != MsgTypeTag::Event);
    let msg_id = match msg_id_slot {
        Some((index, spelling)) => {
            doc.mark_used(index);
            optional_number(doc, index, spelling)?
        }
        None => None,
    };
    let idx = match slots.idx {
        Some(index) => {
            doc.mark_used(index);
            optional_number(doc, index, "Idx")?
        }
        None => None,
    };

    let kind = build_kind(doc, tag, msg_type);
    let typed = !matches!(
        kind,
        Kind::Unknown { .. } | Kind::Event(Event::Unknown { .. })
    );

    let header = Header {
        to_user_name: doc.take_text(to_user_name),
        from_user_name: doc.take_text(from_user_name),
        create_time,
        msg_id,
        msg_data_id: slots.msg_data_id.map(|index| doc.take_text(index)),
        idx,
    };
    // An unknown kind keeps every element in its `fields` already.
    let extra = if typed {
        extra_elements(doc, tag == MsgTypeTag::Event)
    } else {
        Vec::new()
    };
    Ok(Inbound {
        header,
        kind,
        extra,
    })
}

/// Stores `index` in `slot` unless an earlier element already filled it: the first
/// occurrence of a duplicated element wins.
fn first(slot: &mut Option<usize>, index: usize) {
    if slot.is_none() {
        *slot = Some(index);
    }
}

/// A required numeric header field.
fn required_number<T: Number>(
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
fn optional_number<T: Number>(
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
fn build_kind(doc: &mut Document<'_>, tag: MsgTypeTag, msg_type: usize) -> Kind {
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
                float(doc, ROOT, "Location_X"),
                float(doc, ROOT, "Location_Y"),
            ) {
                (Some(location_x), Some(location_y)) => Some(Kind::Location {
                    location_x,
                    location_y,
                    scale: float(doc, ROOT, "Scale"),
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
            let event = typed.unwrap_or_else(|| Event::Unknown {
                event: event
                    .map(|index| doc.text(index).to_owned())
                    .unwrap_or_default(),
                fields: raw_fields(doc, true),
            });
            return Kind::Event(event);
        }
        MsgTypeTag::Other => None,
    };
    typed.unwrap_or_else(|| Kind::Unknown {
        msg_type: doc.text(msg_type).to_owned(),
        fields: raw_fields(doc, false),
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
            latitude: float(doc, ROOT, "Latitude")?,
            longitude: float(doc, ROOT, "Longitude")?,
            precision: float(doc, ROOT, "Precision"),
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
            let info = container(doc, ROOT, "ScanCodeInfo");
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
            doc.mark_used(info);
            // Each `item` holding a `PicMd5Sum` is one picture; an item without one is
            // not part of the model and stays an extra element.
            let items: Vec<(usize, usize)> = match container(doc, info, "PicList") {
                Some(list) => doc
                    .children(list)
                    .filter(|&item| doc.name(item) == "item")
                    .filter_map(|item| Some((item, doc.child(item, "PicMd5Sum")?)))
                    .collect(),
                None => Vec::new(),
            };
            let pic_md5_sums = items
                .into_iter()
                .map(|(item, sum)| {
                    doc.mark_used(item);
                    doc.take_text(sum)
                })
                .collect();
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
            let location_x = float(doc, info, "Location_X")?;
            let location_y = float(doc, info, "Location_Y")?;
            doc.mark_used(info);
            Event::LocationSelect {
                event_key: take(doc, ROOT, "EventKey"),
                location_x,
                location_y,
                scale: float(doc, info, "Scale"),
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
///
/// Only a number that parses is taken: anything else stays an extra element.
fn number<T: Number>(doc: &mut Document<'_>, parent: usize, name: &str) -> Option<T> {
    let index = doc.child(parent, name)?;
    let value = parse_number(doc.text(index))?;
    doc.mark_used(index);
    Some(value)
}

/// Child `name` of `parent`, taken as a container of modelled fields.
fn container(doc: &mut Document<'_>, parent: usize, name: &str) -> Option<usize> {
    let index = doc.child(parent, name)?;
    doc.mark_used(index);
    Some(index)
}

/// The finite float in child `name` of `parent`, `None` when absent, not a number, or
/// not finite.
///
/// Rust's float syntax also accepts `NaN`, `inf` and overflowing values such as `1e400`
/// (parsed as infinity). No coordinate, precision or zoom is infinite or NaN, and the
/// JSON form cannot carry them (serde_json writes `null`, which does not read back), so
/// they are invalid numbers like any other text that is not one.
fn float(doc: &mut Document<'_>, parent: usize, name: &str) -> Option<f64> {
    let index = doc.child(parent, name)?;
    let value = parse_number::<f64>(doc.text(index)).filter(|value| value.is_finite())?;
    doc.mark_used(index);
    Some(value)
}

/// `MenuId`, which the documentation also spells `MenuID`.
fn take_menu_id(doc: &mut Document<'_>) -> Option<String> {
    take_optional(doc, ROOT, "MenuId").or_else(|| take_optional(doc, ROOT, "MenuID"))
}

/// The job id of a job-finish event, `MsgID` or `MsgId`.
fn job_id(doc: &mut Document<'_>) -> Option<u64> {
    number(doc, ROOT, "MsgID").or_else(|| number(doc, ROOT, "MsgId"))
}

/// Every child of the root except the header elements (and `Event` for an event), as raw
/// elements.
///
/// Every occurrence of a header name is left out, not only the one the header was read
/// from: written back after the header, a duplicate would otherwise be read as the header
/// the next time.
fn raw_fields(doc: &Document<'_>, event: bool) -> Vec<Element> {
    doc.children(ROOT)
        .filter(|&child| !is_header_element(doc.name(child), event))
        .map(|child| doc.to_element(child))
        .collect()
}

/// What no typed field took, for a typed kind ([`Inbound::extra`]): every element under
/// the root that the model did not read, whole, and for a container the model did read
/// (`ScanCodeInfo`, `SendPicsInfo`, …) an element of the same name holding only what it
/// did not read, nested ones included. Header elements (every occurrence) are left out,
/// as in [`raw_fields`].
///
/// Among the children of such a partial container, once one `item` is kept, every
/// `item` is: an empty one stands for an item the model took entirely, so that the kept
/// parts stay next to the right picture.
fn extra_elements(doc: &Document<'_>, event: bool) -> Vec<Element> {
    let mut extra = Vec::new();
    for child in doc.children(ROOT) {
        // The common case first: a leaf the model took.
        if doc.is_used(child) && !doc.has_children(child) {
            continue;
        }
        if is_header_element(doc.name(child), event) {
            continue;
        }
        let kept = if doc.is_used(child) {
            leftover(doc, child)
        } else {
            Some(doc.to_element(child))
        };
        extra.extend(kept);
    }
    extra
}

/// What the model did not take of element `index`, which it did take: `None` when that
/// is nothing.
fn leftover(doc: &Document<'_>, index: usize) -> Option<Element> {
    let kept: Vec<(usize, Option<Element>)> = doc
        .children(index)
        .map(|child| {
            let kept = if !doc.is_used(child) {
                Some(doc.to_element(child))
            } else if doc.has_children(child) {
                leftover(doc, child)
            } else {
                None
            };
            (child, kept)
        })
        .collect();
    let positional = kept
        .iter()
        .any(|(child, kept)| kept.is_some() && doc.name(*child) == "item");
    let children: Vec<Element> = kept
        .into_iter()
        .filter_map(|(child, kept)| match kept {
            None if positional && doc.name(child) == "item" => Some(Element {
                name: "item".to_owned(),
                ..Element::default()
            }),
            kept => kept,
        })
        .collect();
    let text = doc.text(index);
    if children.is_empty() && text.is_empty() {
        return None;
    }
    Some(Element {
        name: doc.name(index).to_owned(),
        text: text.to_owned(),
        children,
    })
}

/// Whether an element under the root belongs to the header rather than to the kind.
fn is_header_element(name: &str, event: bool) -> bool {
    match name {
        "ToUserName" | "FromUserName" | "CreateTime" | "MsgType" | "MsgDataId" | "Idx" => true,
        // The `MsgID` of an event is a job id and belongs to the event.
        "MsgId" | "MsgID" => !event,
        "Event" => event,
        _ => false,
    }
}

/// Writes the elements of a kind after `MsgType`.
pub(super) fn write_kind(w: &mut XmlWriter<'_>, kind: &Kind) {
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
