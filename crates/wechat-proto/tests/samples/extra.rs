//! Typed kinds keep what they do not model (`Inbound::extra`), nested elements included,
//! in the model, in the JSON form and through `to_xml`.
//!
//! The job-finish sample is the one of WeChat's mass-message documentation (事件推送群发
//! 结果), whose `CopyrightCheckResult` and `ArticleUrlResult` no typed field models; the
//! menu-message sample carries the `bizmsgmenuid` a follower's click on a 菜单消息 option
//! adds to an ordinary text message.

use wechat_proto::inbound::{Event, Inbound, Kind};
use wechat_proto::xml::Element;

use super::check_round_trips;

fn leaf(name: &str, text: &str) -> Element {
    Element::leaf(name, text)
}

fn node(name: &str, children: Vec<Element>) -> Element {
    Element {
        name: name.into(),
        text: String::new(),
        children,
    }
}

const MASS_SEND_JOB_FINISH: &str = "<xml>
<ToUserName><![CDATA[gh_a96a4a619366]]></ToUserName>
<FromUserName><![CDATA[oR5Gjjl_eiZoUpGozMo7dbBJ362A]]></FromUserName>
<CreateTime>1394524295</CreateTime>
<MsgType><![CDATA[event]]></MsgType>
<Event><![CDATA[MASSSENDJOBFINISH]]></Event>
<MsgID>1988</MsgID>
<Status><![CDATA[sendsuccess]]></Status>
<TotalCount>100</TotalCount>
<FilterCount>80</FilterCount>
<SentCount>75</SentCount>
<ErrorCount>5</ErrorCount>
<CopyrightCheckResult>
  <Count>2</Count>
  <ResultList>
    <item>
      <ArticleIdx>1</ArticleIdx>
      <UserDeclareState>0</UserDeclareState>
      <AuditState>2</AuditState>
      <OriginalArticleUrl><![CDATA[Url_1]]></OriginalArticleUrl>
      <OriginalArticleType>1</OriginalArticleType>
      <CanReprint>1</CanReprint>
      <NeedReplaceContent>1</NeedReplaceContent>
      <NeedShowReprintSource>1</NeedShowReprintSource>
    </item>
    <item>
      <ArticleIdx>2</ArticleIdx>
      <UserDeclareState>0</UserDeclareState>
      <AuditState>2</AuditState>
      <OriginalArticleUrl><![CDATA[Url_2]]></OriginalArticleUrl>
      <OriginalArticleType>1</OriginalArticleType>
      <CanReprint>1</CanReprint>
      <NeedReplaceContent>1</NeedReplaceContent>
      <NeedShowReprintSource>1</NeedShowReprintSource>
    </item>
  </ResultList>
  <CheckState>2</CheckState>
</CopyrightCheckResult>
<ArticleUrlResult>
  <Count>1</Count>
  <ResultList>
    <item>
      <ArticleIdx>1</ArticleIdx>
      <ArticleUrl><![CDATA[http://mp.weixin.qq.com/s/sssss]]></ArticleUrl>
    </item>
  </ResultList>
</ArticleUrlResult>
</xml>";

fn copyright_item(index: &str) -> Element {
    node(
        "item",
        vec![
            leaf("ArticleIdx", index),
            leaf("UserDeclareState", "0"),
            leaf("AuditState", "2"),
            leaf("OriginalArticleUrl", &format!("Url_{index}")),
            leaf("OriginalArticleType", "1"),
            leaf("CanReprint", "1"),
            leaf("NeedReplaceContent", "1"),
            leaf("NeedShowReprintSource", "1"),
        ],
    )
}

#[test]
fn a_mass_send_job_finish_keeps_its_copyright_check_result() {
    let inbound = Inbound::parse(MASS_SEND_JOB_FINISH.as_bytes()).unwrap();
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
    assert_eq!(
        inbound.extra,
        vec![
            node(
                "CopyrightCheckResult",
                vec![
                    leaf("Count", "2"),
                    node("ResultList", vec![copyright_item("1"), copyright_item("2")]),
                    leaf("CheckState", "2"),
                ],
            ),
            node(
                "ArticleUrlResult",
                vec![
                    leaf("Count", "1"),
                    node(
                        "ResultList",
                        vec![node(
                            "item",
                            vec![
                                leaf("ArticleIdx", "1"),
                                leaf("ArticleUrl", "http://mp.weixin.qq.com/s/sssss"),
                            ],
                        )],
                    ),
                ],
            ),
        ]
    );
    let second_url = inbound.extra[0].find(&["ResultList"]).unwrap().children[1]
        .child("OriginalArticleUrl")
        .unwrap();
    assert_eq!(second_url.text, "Url_2");
    check_round_trips(&inbound);
}

#[cfg(feature = "serde")]
#[test]
fn extra_elements_travel_in_the_json_form() {
    let inbound = Inbound::parse(MASS_SEND_JOB_FINISH.as_bytes()).unwrap();
    let json: serde_json::Value = serde_json::to_value(&inbound).unwrap();
    assert_eq!(json["event"], "masssendjobfinish");
    assert_eq!(json["job_id"], "1988");
    assert_eq!(json["extra"][0]["name"], "CopyrightCheckResult");
    assert_eq!(json["extra"][0]["children"][2]["name"], "CheckState");
    assert_eq!(json["extra"][0]["children"][2]["text"], "2");
    assert_eq!(
        json["extra"][0]["children"][1]["children"][1]["children"][3],
        serde_json::json!({"name": "OriginalArticleUrl", "text": "Url_2"})
    );
    // Without extra elements the key is left out, as before.
    let plain = Inbound::parse(
        b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName>\
          <CreateTime>1</CreateTime><MsgType>text</MsgType><Content>x</Content></xml>",
    )
    .unwrap();
    assert!(serde_json::to_value(&plain).unwrap().get("extra").is_none());
}

#[test]
fn a_menu_message_click_keeps_its_bizmsgmenuid() {
    let xml = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName>\
        <FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1700000000</CreateTime>\
        <MsgType><![CDATA[text]]></MsgType><Content><![CDATA[满意]]></Content>\
        <MsgId>24411111111111111</MsgId><bizmsgmenuid>101</bizmsgmenuid></xml>";
    let inbound = Inbound::parse(xml.as_bytes()).unwrap();
    assert_eq!(
        inbound.kind,
        Kind::Text {
            content: "满意".into()
        }
    );
    assert_eq!(inbound.header.msg_id, Some(24411111111111111));
    assert_eq!(inbound.extra, vec![leaf("bizmsgmenuid", "101")]);
    // Written after the modelled elements.
    assert!(
        inbound.to_xml().ends_with(
            "<MsgId>24411111111111111</MsgId><bizmsgmenuid><![CDATA[101]]></bizmsgmenuid></xml>"
        ),
        "{}",
        inbound.to_xml()
    );
    check_round_trips(&inbound);
}

#[test]
fn unmodelled_parts_of_a_modelled_container_are_kept_under_its_name() {
    // A hypothetical new field inside `SendLocationInfo`, and one inside the second
    // picture of a `SendPicsInfo`: the typed fields read as before, the rest is kept.
    let location = "<xml><ToUserName>gh_1</ToUserName><FromUserName>oUser</FromUserName>\
        <CreateTime>1</CreateTime><MsgType>event</MsgType><Event>location_select</Event>\
        <EventKey>6</EventKey><SendLocationInfo><Location_X>23</Location_X>\
        <Location_Y>113</Location_Y><Scale>15</Scale><Label> 广州</Label><Poiname></Poiname>\
        <Precision>30</Precision></SendLocationInfo></xml>";
    let inbound = Inbound::parse(location.as_bytes()).unwrap();
    assert!(matches!(
        &inbound.kind,
        Kind::Event(Event::LocationSelect { label, scale: Some(scale), .. })
            if label == " 广州" && *scale == 15.0
    ));
    assert_eq!(
        inbound.extra,
        vec![node("SendLocationInfo", vec![leaf("Precision", "30")])]
    );
    check_round_trips(&inbound);

    let pictures = "<xml><ToUserName>gh_1</ToUserName><FromUserName>oUser</FromUserName>\
        <CreateTime>1</CreateTime><MsgType>event</MsgType><Event>pic_weixin</Event>\
        <EventKey>p</EventKey><SendPicsInfo><Count>2</Count><PicList>\
        <item><PicMd5Sum>aaa</PicMd5Sum></item>\
        <item><PicMd5Sum>bbb</PicMd5Sum><Width>640</Width></item>\
        </PicList></SendPicsInfo></xml>";
    let inbound = Inbound::parse(pictures.as_bytes()).unwrap();
    assert_eq!(
        inbound.kind,
        Kind::Event(Event::PicWeixin {
            event_key: "p".into(),
            count: 2,
            pic_md5_sums: vec!["aaa".into(), "bbb".into()],
        })
    );
    // The first item is kept empty, so that `Width` stays with the second picture.
    assert_eq!(
        inbound.extra,
        vec![node(
            "SendPicsInfo",
            vec![node(
                "PicList",
                vec![leaf("item", ""), node("item", vec![leaf("Width", "640")])],
            )],
        )]
    );
    check_round_trips(&inbound);
}

#[test]
fn a_value_the_model_cannot_read_is_kept_rather_than_lost() {
    // `TotalCount` is not a number: the typed field is `None` and the text survives.
    let xml = "<xml><ToUserName>gh_1</ToUserName><FromUserName>oUser</FromUserName>\
        <CreateTime>1</CreateTime><MsgType>event</MsgType><Event>MASSSENDJOBFINISH</Event>\
        <MsgID>7</MsgID><Status>send fail</Status><TotalCount>many</TotalCount></xml>";
    let inbound = Inbound::parse(xml.as_bytes()).unwrap();
    assert!(matches!(
        inbound.kind,
        Kind::Event(Event::MassSendJobFinish {
            total_count: None,
            msg_id: Some(7),
            ..
        })
    ));
    assert_eq!(inbound.extra, vec![leaf("TotalCount", "many")]);
    check_round_trips(&inbound);
}

#[test]
fn unknown_kinds_keep_everything_in_fields_and_nothing_in_extra() {
    let xml = "<xml><ToUserName>gh_1</ToUserName><FromUserName>oUser</FromUserName>\
        <CreateTime>1</CreateTime><MsgType>event</MsgType><Event>debug_demo</Event>\
        <debug_str>hello world</debug_str></xml>";
    let inbound = Inbound::parse(xml.as_bytes()).unwrap();
    assert_eq!(
        inbound.kind,
        Kind::Event(Event::Unknown {
            event: "debug_demo".into(),
            fields: vec![leaf("debug_str", "hello world")],
        })
    );
    assert!(inbound.extra.is_empty());
}
