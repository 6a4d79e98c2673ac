//! `Inbound::parse` on arbitrary bytes must never panic, and whatever it accepts must
//! survive `to_xml` and a second parse unchanged.
//!
//! "Unchanged" has two documented exceptions: floats compare by their printed form (so a
//! `NaN` coordinate equals itself), and characters XML 1.0 forbids are dropped by the
//! writer, so a message holding one only has to be unchanged from its second write on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wechat_proto::Inbound;

fuzz_target!(|data: &[u8]| {
    let Ok(first) = Inbound::parse(data) else {
        return;
    };
    let (second, xml) = write_and_parse(&first);
    let (first_debug, second_debug) = (format!("{first:?}"), format!("{second:?}"));
    if first_debug != second_debug {
        // Only a dropped character may explain a difference. It may even change the kind
        // (an unparsable coordinate becomes a valid one), but what was written once must
        // then be stable.
        assert!(
            may_hold_forbidden_char(&first_debug),
            "round trip changed the message\n{first_debug}\n{second_debug}\n{xml}"
        );
        let (third, xml) = write_and_parse(&second);
        assert_eq!(
            second_debug,
            format!("{third:?}"),
            "second round trip\n{xml}"
        );
    }
});

/// Writes `inbound` and parses it back, which must succeed.
fn write_and_parse(inbound: &Inbound) -> (Inbound, String) {
    let xml = inbound.to_xml();
    let again = Inbound::parse(xml.as_bytes())
        .unwrap_or_else(|error| panic!("to_xml output does not parse: {error}\n{xml}"));
    (again, xml)
}

/// Whether the `Debug` form may hide a character the XML writer drops.
///
/// `Debug` writes NUL as `\0` and every other control or unassigned character as
/// `\u{…}`, which covers all of XML 1.0's forbidden characters (C0 controls but TAB, LF
/// and CR; U+FFFE; U+FFFF). Errs on the side of allowing the difference.
fn may_hold_forbidden_char(debug: &str) -> bool {
    debug.contains("\\u{") || debug.contains("\\0")
}
