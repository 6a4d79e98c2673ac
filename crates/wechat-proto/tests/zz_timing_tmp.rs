use wechat_proto::*;
#[test]
fn timing_parts() {
    let xml: &[u8] = b"<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[fromUser]]></FromUserName><CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[this is a test]]></Content><MsgId>1234567890123456</MsgId></xml>";
    let v: serde_json::Value = serde_json::from_str(include_str!("data/vectors.json")).unwrap();
    let env = v["sample_xml"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "envelope-safe-mode")
        .unwrap()["xml"]
        .as_str()
        .unwrap()
        .to_owned();
    let n: usize = std::env::var("N")
        .unwrap_or("1000000".into())
        .parse()
        .unwrap();
    let part = std::env::var("PART").unwrap_or("all".into());
    let inbound = Inbound::parse(xml).unwrap();
    let reply = Reply::Text {
        content: "hello 你好".into(),
    };
    let target = ReplyTarget::answering(&inbound, 1);
    let mut out = String::with_capacity(512);
    for p in ["inbound", "envelope", "reply"] {
        if part != "all" && part != p {
            continue;
        }
        let t = std::time::Instant::now();
        for _ in 0..n {
            match p {
                "inbound" => {
                    std::hint::black_box(Inbound::parse(std::hint::black_box(xml)).unwrap());
                }
                "envelope" => {
                    std::hint::black_box(
                        RequestEnvelope::parse(std::hint::black_box(env.as_bytes())).unwrap(),
                    );
                }
                _ => {
                    out.clear();
                    reply.write_into(&target, &mut out).unwrap();
                    std::hint::black_box(&out);
                }
            }
        }
        println!("{p}: {:.0} ns", t.elapsed().as_nanos() as f64 / n as f64);
    }
}
