//! The console's pages: server-rendered HTML shells, and the one script and style sheet,
//! embedded in the binary with `include_str!` (no CDN, no build step, works offline).
//!
//! Each page is a `<main data-page="…">` that `console.js` fills from the JSON API, so
//! the page and the API never disagree. The debugger's forms are generated here from
//! `wxgate sim send`'s own clap definitions: every kind the CLI knows has a form, with
//! the CLI's defaults and help texts, and a new kind appears without touching the page.
//! Everything dynamic is escaped here or set with `textContent` in the script, which
//! matters because message texts come from followers.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use clap::Args as _;

use super::auth::Authenticated;
use super::Console;

/// The script of every page.
pub const SCRIPT: &str = include_str!("../../assets/console/console.js");
/// The style sheet of every page.
pub const STYLE: &str = include_str!("../../assets/console/console.css");

/// WeChat's own names of the kinds, as its documentation and debugging tool show them.
const KIND_NAMES: [(&str, &str); 13] = [
    ("text", "文本消息 text"),
    ("image", "图片消息 image"),
    ("voice", "语音消息 voice"),
    ("video", "视频消息 video"),
    ("shortvideo", "小视频消息 short video"),
    ("location", "地理位置消息 location"),
    ("link", "链接消息 link"),
    ("subscribe", "关注事件 subscribe"),
    ("unsubscribe", "取消关注事件 unsubscribe"),
    ("scan", "扫描带参数二维码事件 SCAN"),
    ("location-event", "上报地理位置事件 LOCATION"),
    ("click", "点击菜单拉取消息事件 CLICK"),
    ("view", "点击菜单跳转链接事件 VIEW"),
];

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The frame of every page: the navigation, the CSRF token for the script, the content.
fn layout(title: &str, page: &str, csrf: Option<&str>, body: &str) -> String {
    let nav = [
        ("overview", "/console/", "概览 Overview"),
        ("debugger", "/console/debugger", "接口调试 Debugger"),
        ("inbox", "/console/inbox", "消息 Inbox"),
    ];
    let mut links = String::new();
    for (name, href, label) in nav {
        let current = if name == page {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(links, "<a href=\"{href}\"{current}>{label}</a>");
    }
    let csrf_meta = csrf.map_or(String::new(), |csrf| {
        format!("<meta name=\"csrf-token\" content=\"{}\">", escape(csrf))
    });
    let nav = if page == "login" {
        String::new()
    } else {
        format!(
            "<nav aria-label=\"Console\"><span class=\"brand\">wxgate</span>{links}\
             <button type=\"button\" id=\"logout\" class=\"link\">退出 Log out</button></nav>"
        )
    };
    format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         {csrf_meta}<title>{} · wxgate console</title>\
         <link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
         <script src=\"/console/assets/console.js\" defer></script></head>\
         <body><header>{nav}</header><main id=\"main\" data-page=\"{page}\">{body}</main></body></html>",
        escape(title)
    )
}

fn csrf_of(auth: &Authenticated) -> Option<&str> {
    match auth {
        Authenticated::Session { csrf } => Some(csrf),
        Authenticated::Bearer => None,
    }
}

/// The login page, with an error message after a failed try.
pub fn login(error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |text| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(text))
    });
    layout(
        "登录 Log in",
        "login",
        None,
        &format!(
            "<h1>wxgate 控制台 console</h1>{error}\
             <form method=\"post\" action=\"/console/login\" class=\"card narrow\">\
             <label for=\"token\">管理令牌 Admin token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
             <p class=\"hint\">The <code>[console] token</code> of the config (or <code>WXGATE_CONSOLE_TOKEN</code>); the demo prints it.</p>\
             <button type=\"submit\">登录 Log in</button></form>"
        ),
    )
}

fn account_options(console: &Console, with_all: bool) -> String {
    let mut names: Vec<String> = console
        .gateway
        .accounts()
        .iter()
        .map(|a| a.config.name.clone())
        .collect();
    names.sort_unstable();
    let mut out = String::new();
    if with_all {
        out.push_str("<option value=\"\">全部 all</option>");
    }
    for name in names {
        let mode = console
            .gateway
            .account(&name)
            .map_or("", |a| a.config.mode.as_str());
        let _ = write!(
            out,
            "<option value=\"{0}\">{0} ({1})</option>",
            escape(&name),
            mode
        );
    }
    out
}

/// `GET /console/`.
pub async fn overview(Extension(auth): Extension<Authenticated>) -> Html<String> {
    Html(layout(
        "概览 Overview",
        "overview",
        csrf_of(&auth),
        "<h1>概览 Overview</h1>\
         <section aria-labelledby=\"h-health\"><h2 id=\"h-health\">健康 Health</h2><div id=\"health\" class=\"cards\"></div></section>\
         <section aria-labelledby=\"h-accounts\"><h2 id=\"h-accounts\">公众号 Accounts</h2>\
         <div class=\"scroll\"><table id=\"accounts\"><thead><tr><th>名称 Name</th><th>消息加解密方式 Mode</th><th>Policy</th><th>服务器地址 Path</th><th>AppID</th><th>EncodingAESKey</th><th>Rules</th></tr></thead><tbody></tbody></table></div></section>\
         <section aria-labelledby=\"h-charts\"><h2 id=\"h-charts\">最近 15 分钟 Last 15 minutes</h2><div id=\"charts\" class=\"charts\"></div></section>",
    ))
}

/// One form field of a clap argument.
fn field(kind: &str, arg: &clap::Arg) -> String {
    let id = arg.get_id().as_str();
    // The positional URL of link and view is `page_url`: `url` is the webhook's.
    let name = if arg.is_positional() && id == "url" {
        "page_url".to_owned()
    } else {
        arg.get_long()
            .map_or(id.to_owned(), |l| l.replace('-', "_"))
    };
    let input_id = format!("f-{kind}-{name}");
    let default = arg
        .get_default_values()
        .first()
        .and_then(|v| v.to_str())
        .unwrap_or_default();
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let required = if arg.is_required_set() {
        " required"
    } else {
        ""
    };
    let control = if name == "content" {
        format!("<textarea id=\"{input_id}\" name=\"{name}\" rows=\"3\"{required}>你好</textarea>")
    } else {
        format!(
            "<input id=\"{input_id}\" name=\"{name}\" value=\"{}\"{required}>",
            escape(default)
        )
    };
    format!(
        "<div class=\"field\"><label for=\"{input_id}\">{name}</label>{control}<small>{}</small></div>",
        escape(&help)
    )
}

/// The fieldsets of every kind, from the CLI's definitions.
fn kind_forms() -> (String, String) {
    let command = crate::sim::cli::SendArgs::augment_args(clap::Command::new("send"));
    let mut options = String::new();
    let mut fieldsets = String::new();
    for sub in command.get_subcommands() {
        let kind = sub.get_name();
        let label = KIND_NAMES
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(kind, |(_, label)| label);
        let _ = write!(
            options,
            "<option value=\"{kind}\">{}</option>",
            escape(label)
        );
        let fields: String = sub
            .get_arguments()
            .filter(|arg| !["help", "json"].contains(&arg.get_id().as_str()))
            .map(|arg| field(kind, arg))
            .collect();
        let fields = if fields.is_empty() {
            "<p class=\"hint\">No fields.</p>".to_owned()
        } else {
            fields
        };
        let _ = write!(
            fieldsets,
            "<fieldset class=\"kind\" data-kind=\"{kind}\" hidden><legend>{}</legend>{fields}</fieldset>",
            escape(label)
        );
    }
    (options, fieldsets)
}

/// `GET /console/debugger`.
pub async fn debugger(
    State(console): State<Arc<Console>>,
    Extension(auth): Extension<Authenticated>,
) -> Html<String> {
    let (kinds, fieldsets) = kind_forms();
    let accounts = account_options(&console, false);
    let body = format!(
        "<h1>接口调试 Debugger</h1>\
<form id=\"sim\" class=\"grid\">\
<fieldset><legend>目标 Target</legend>\
<div class=\"choice\"><input type=\"radio\" id=\"t-account\" name=\"target\" value=\"account\" checked><label for=\"t-account\">本网关的公众号 This gateway's account</label></div>\
<div class=\"field\" data-target=\"account\"><label for=\"f-account\">account</label><select id=\"f-account\" name=\"account\">{accounts}</select><small>Its Token and EncodingAESKey stay on the server.</small></div>\
<div class=\"choice\"><input type=\"radio\" id=\"t-url\" name=\"target\" value=\"url\"><label for=\"t-url\">任意 URL Any URL</label></div>\
<div data-target=\"url\" hidden>\
<div class=\"field\"><label for=\"f-url\">URL 服务器地址</label><input id=\"f-url\" name=\"url\" type=\"url\" placeholder=\"http://127.0.0.1:9000/wechat\"></div>\
<div class=\"field\"><label for=\"f-token\">Token 令牌</label><input id=\"f-token\" name=\"token\" autocomplete=\"off\"></div>\
<div class=\"field\"><label for=\"f-app_id\">AppID</label><input id=\"f-app_id\" name=\"app_id\" autocomplete=\"off\"></div>\
<div class=\"field\"><label for=\"f-aes_key\">EncodingAESKey 消息加解密密钥</label><input id=\"f-aes_key\" name=\"aes_key\" autocomplete=\"off\" maxlength=\"43\"></div>\
</div>\
<div class=\"field\"><label for=\"f-mode\">消息加解密方式 Mode</label><select id=\"f-mode\" name=\"mode\">\
<option value=\"\">(the account's own)</option><option value=\"plaintext\">明文模式 plaintext</option>\
<option value=\"compatible\">兼容模式 compatible</option><option value=\"safe\">安全模式 safe</option></select></div>\
</fieldset>\
<fieldset><legend>消息 Message</legend>\
<div class=\"field\"><label for=\"f-kind\">消息类型 Kind</label><select id=\"f-kind\" name=\"kind\">{kinds}<option value=\"xml\">原始 XML raw XML</option></select></div>\
{fieldsets}\
<fieldset class=\"kind\" data-kind=\"xml\" hidden><legend>原始 XML raw XML</legend><div class=\"field\"><label for=\"f-xml\">xml</label>\
<textarea id=\"f-xml\" name=\"xml\" rows=\"8\">&lt;xml&gt;&lt;ToUserName&gt;&lt;![CDATA[gh_wxgate_sim]]&gt;&lt;/ToUserName&gt;&lt;FromUserName&gt;&lt;![CDATA[oWxgateSimFollower0000000001]]&gt;&lt;/FromUserName&gt;&lt;CreateTime&gt;1700000000&lt;/CreateTime&gt;&lt;MsgType&gt;&lt;![CDATA[text]]&gt;&lt;/MsgType&gt;&lt;Content&gt;&lt;![CDATA[hello]]&gt;&lt;/Content&gt;&lt;MsgId&gt;1234567890123456&lt;/MsgId&gt;&lt;/xml&gt;</textarea></div></fieldset>\
<details><summary>Header 消息头</summary>\
<div class=\"field\"><label for=\"f-to\">to (ToUserName)</label><input id=\"f-to\" name=\"to\" value=\"gh_wxgate_sim\"></div>\
<div class=\"field\"><label for=\"f-from\">from (FromUserName)</label><input id=\"f-from\" name=\"from\" value=\"oWxgateSimFollower0000000001\"></div>\
<div class=\"field\"><label for=\"f-msg_id\">msg_id (MsgId)</label><input id=\"f-msg_id\" name=\"msg_id\" inputmode=\"numeric\" placeholder=\"random\"></div>\
<div class=\"field\"><label for=\"f-create_time\">create_time (CreateTime)</label><input id=\"f-create_time\" name=\"create_time\" inputmode=\"numeric\" placeholder=\"now\"></div>\
</details>\
</fieldset>\
<fieldset><legend>发送 Send</legend>\
<div class=\"choice\"><input type=\"checkbox\" id=\"f-retry\" name=\"retry\"><label for=\"f-retry\">微信重试 WeChat's retry timing (3 retries)</label></div>\
<div class=\"field\"><label for=\"f-timeout_ms\">timeout_ms (per attempt)</label><input id=\"f-timeout_ms\" name=\"timeout_ms\" inputmode=\"numeric\" value=\"5000\"></div>\
<div class=\"buttons\"><button type=\"submit\" id=\"send\">发送 Send</button>\
<button type=\"button\" id=\"verify\" class=\"secondary\">验证 URL Verify (sim verify)</button></div>\
</fieldset>\
</form>\
<section aria-labelledby=\"h-result\" aria-live=\"polite\"><h2 id=\"h-result\">结果 Result</h2><div id=\"result\"><p class=\"hint\">Nothing sent yet.</p></div></section>"
    );
    Html(layout(
        "接口调试 Debugger",
        "debugger",
        csrf_of(&auth),
        &body,
    ))
}

/// `GET /console/inbox`.
pub async fn inbox(
    State(console): State<Arc<Console>>,
    Extension(auth): Extension<Authenticated>,
) -> Html<String> {
    let accounts = account_options(&console, true);
    let mut kinds = String::from(
        "<option value=\"\">全部 all</option><option value=\"event\">事件 every event</option>",
    );
    for (kind, label) in KIND_NAMES {
        let value = match kind {
            "subscribe" | "unsubscribe" | "scan" | "click" | "view" => {
                format!("event:{kind}")
            }
            "location-event" => "event:location".to_owned(),
            other => other.to_owned(),
        };
        let _ = write!(
            kinds,
            "<option value=\"{value}\">{}</option>",
            escape(label)
        );
    }
    let answers: String = super::api::ANSWERS
        .iter()
        .map(|a| format!("<option value=\"{a}\">{a}</option>"))
        .collect();
    let body = format!(
        "<h1>消息 Inbox <span id=\"live\" class=\"badge\">connecting…</span></h1>\
<form id=\"filters\" class=\"filters\">\
<div class=\"field\"><label for=\"q-account\">account</label><select id=\"q-account\" name=\"account\">{accounts}</select></div>\
<div class=\"field\"><label for=\"q-kind\">kind</label><select id=\"q-kind\" name=\"kind\">{kinds}</select></div>\
<div class=\"field\"><label for=\"q-answer\">answer</label><select id=\"q-answer\" name=\"answer\"><option value=\"\">全部 all</option>{answers}</select></div>\
<div class=\"field\"><label for=\"q-sender\">sender (OpenID)</label><input id=\"q-sender\" name=\"sender\"></div>\
<div class=\"field\"><label for=\"q-text\">text</label><input id=\"q-text\" name=\"text\" type=\"search\"></div>\
<div class=\"field\"><label for=\"q-since\">since</label><input id=\"q-since\" name=\"since\" type=\"datetime-local\"></div>\
<div class=\"field\"><label for=\"q-until\">until</label><input id=\"q-until\" name=\"until\" type=\"datetime-local\"></div>\
<div class=\"buttons\"><button type=\"submit\">筛选 Filter</button></div></form>\
<div class=\"scroll\"><table id=\"messages\"><thead><tr><th>时间 Time</th><th>Account</th><th>Kind</th><th>Sender</th><th>Summary</th><th>Attempts</th><th>Answer</th><th>Handler</th></tr></thead><tbody></tbody></table></div>\
<p><button type=\"button\" id=\"more\" class=\"secondary\" hidden>更多 Load more</button></p>"
    );
    Html(layout("消息 Inbox", "inbox", csrf_of(&auth), &body))
}

/// `GET /console/message?account=…&key=…`.
pub async fn message(Extension(auth): Extension<Authenticated>) -> Html<String> {
    Html(layout(
        "消息详情 Message",
        "message",
        csrf_of(&auth),
        "<h1>消息详情 Message</h1><p><a href=\"/console/inbox\">← 消息 Inbox</a></p><div id=\"detail\"><p class=\"hint\">Loading…</p></div>",
    ))
}

/// `GET /console/assets/{file}`: the embedded script and style sheet.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cli_kind_has_a_form_and_a_chinese_name() {
        let (options, fieldsets) = kind_forms();
        let command = crate::sim::cli::SendArgs::augment_args(clap::Command::new("send"));
        for sub in command.get_subcommands() {
            let kind = sub.get_name();
            assert!(options.contains(&format!("value=\"{kind}\"")), "{kind}");
            assert!(
                fieldsets.contains(&format!("data-kind=\"{kind}\"")),
                "{kind}"
            );
            assert!(KIND_NAMES.iter().any(|(k, _)| *k == kind), "{kind}");
        }
        assert!(fieldsets.contains("name=\"page_url\""));
        assert!(fieldsets.contains("value=\"amr\""));
        assert_eq!(
            escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
