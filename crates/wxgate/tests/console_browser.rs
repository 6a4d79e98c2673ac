//! The console in a real headless Chromium, driven over WebDriver (chromedriver +
//! fantoccini): log in with the keyboard, send a text from the debugger to a local
//! safe-mode account and read the verdict and the decrypted reply, watch it arrive in
//! the inbox without a reload, open its detail, send to a broken webhook and read why it
//! fails, log out. Every page is saved as a screenshot into docs/console/.
//!
//! Every wait polls the DOM (or the driver's port) with a bound; nothing sleeps a fixed
//! time. Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).

mod console_support;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use console_support::*;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::json;

/// The bound of every wait.
const WAIT: Duration = Duration::from_secs(30);

/// chromedriver on a free loopback port, killed (by its own handle) when dropped.
struct Driver {
    _child: tokio::process::Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Driver {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is installed (apt-get install chromium chromium-driver)");
        // Poll the port until the driver listens, within the bound.
        tokio::time::timeout(WAIT, async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("chromedriver listens within the bound");
        Driver {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            _profile: tempfile::tempdir().unwrap(),
        }
    }

    async fn browser(&self) -> Client {
        let profile = self._profile.path().display().to_string();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={profile}"),
                ]
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

/// Where the screenshots go: docs/console/ at the repository's root.
fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves the screenshot and reports the page's load time (navigation start to the load
/// event), a figure for the record, not an assertion.
async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
    let load = browser
        .execute(
            "const n = performance.getEntriesByType('navigation')[0]; return n ? n.loadEventEnd - n.startTime : null;",
            vec![],
        )
        .await
        .unwrap();
    eprintln!("console page {name}: loaded in {load} ms");
}

async fn wait_for(browser: &Client, locator: Locator<'_>) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(WAIT)
        .every(Duration::from_millis(50))
        .for_element(locator)
        .await
        .unwrap_or_else(|e| panic!("waiting for {locator:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let running = start().await;
    let broken = broken_webhook().await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    let walked = AssertUnwindSafe(walk(&browser, &running.base, broken))
        .catch_unwind()
        .await;
    // The session ends (and Chromium with it) whether or not a step failed.
    if let Err(e) = browser.close().await {
        eprintln!("closing the browser session: {e}");
    }
    drop(driver);
    if let Err(panic) = walked {
        std::panic::resume_unwind(panic);
    }
    running.shutdown().await;
}

/// Every step, as a person would take them.
async fn walk(browser: &Client, base: &str, broken: SocketAddr) {
    // Log in, with the keyboard: the console sends to the login page first.
    browser
        .goto(&format!("{base}/console/inbox"))
        .await
        .unwrap();
    let token = wait_for(browser, Locator::Css("input#token")).await;
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/console/login"
    );
    screenshot(browser, "login").await;
    token
        .send_keys(&format!("{CONSOLE_TOKEN}\u{E007}"))
        .await
        .unwrap();
    wait_for(
        browser,
        Locator::XPath("//table[@id='accounts']//td[text()='safe']"),
    )
    .await;
    let rotation = browser
        .find(Locator::XPath(
            "//table[@id='accounts']//tr[td[text()='safe']]",
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        rotation.contains("安全模式 safe") && rotation.contains("rotating"),
        "{rotation}"
    );
    wait_for(browser, Locator::Css("#charts figure svg polyline")).await;

    // The inbox in this tab, marked so that a reload would show.
    browser
        .goto(&format!("{base}/console/inbox"))
        .await
        .unwrap();
    wait_for(
        browser,
        Locator::XPath("//span[@id='live' and contains(., 'live')]"),
    )
    .await;
    browser
        .execute("window.__notReloaded = 'still here'; return true;", vec![])
        .await
        .unwrap();
    let inbox_tab = browser.window().await.unwrap();

    // The debugger in a second tab: a text to the safe-mode account.
    let debugger_tab = browser.new_window(true).await.unwrap().handle;
    browser
        .switch_to_window(debugger_tab.clone())
        .await
        .unwrap();
    browser
        .goto(&format!("{base}/console/debugger"))
        .await
        .unwrap();
    wait_for(browser, Locator::Css("#f-account"))
        .await
        .select_by_value("safe")
        .await
        .unwrap();
    let content = browser.find(Locator::Css("#f-text-content")).await.unwrap();
    content.clear().await.unwrap();
    content
        .send_keys("hello from the browser 你好")
        .await
        .unwrap();
    browser
        .find(Locator::Css("#send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let verdict = wait_for(browser, Locator::Css("#verdict.ok")).await;
    let verdict = verdict.text().await.unwrap();
    assert!(verdict.contains("OK"), "{verdict}");
    assert!(verdict.contains("hello from the browser 你好"), "{verdict}");
    let decrypted = wait_for(browser, Locator::Css("pre[aria-label='Decrypted reply']")).await;
    let decrypted = decrypted.text().await.unwrap();
    assert!(
        decrypted.contains("<Content><![CDATA[hello from the browser 你好]]></Content>"),
        "{decrypted}"
    );
    screenshot(browser, "debugger").await;

    // Back in the inbox: the message arrived through the event stream, no reload.
    browser.switch_to_window(inbox_tab).await.unwrap();
    let row = "//table[@id='messages']//tr[td[contains(@class,'summary') and contains(., 'hello from the browser')]]";
    wait_for(browser, Locator::XPath(row)).await;
    let marker = browser
        .execute("return window.__notReloaded;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, json!("still here"));
    let row_text = browser
        .find(Locator::XPath(row))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        row_text.contains("safe") && row_text.contains("replied"),
        "{row_text}"
    );
    screenshot(browser, "inbox").await;
    browser.set_window_size(390, 844).await.unwrap();
    screenshot(browser, "inbox-phone").await;
    browser.set_window_size(1280, 1000).await.unwrap();

    // Its detail.
    browser
        .find(Locator::XPath(&format!("{row}//a")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let handler = wait_for(browser, Locator::Css("#handler")).await;
    assert!(handler.text().await.unwrap().contains("ok"));
    let xml = browser
        .find(Locator::Css("pre[aria-label='Message XML']"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(xml.contains("hello from the browser 你好"), "{xml}");
    let attempts = browser
        .find(Locator::Css("#attempts"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(attempts.contains("replied on attempt 1"), "{attempts}");
    let attempt_list = browser
        .find(Locator::Css("#attempt-list"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        attempt_list.contains("attempt 1") && attempt_list.contains("replied"),
        "every attempt with its time: {attempt_list}"
    );
    screenshot(browser, "message").await;

    // A broken webhook: a failing verdict that says why.
    browser.switch_to_window(debugger_tab).await.unwrap();
    browser
        .find(Locator::Css("#t-url"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Css("#f-url"))
        .await
        .unwrap()
        .send_keys(&format!("http://{broken}/wechat"))
        .await
        .unwrap();
    browser
        .find(Locator::Css("#f-token"))
        .await
        .unwrap()
        .send_keys("anytoken")
        .await
        .unwrap();
    browser
        .find(Locator::Css("#f-mode"))
        .await
        .unwrap()
        .select_by_value("plaintext")
        .await
        .unwrap();
    browser
        .find(Locator::Css("#send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let failed = wait_for(browser, Locator::Css("#verdict.fail")).await;
    let failed = failed.text().await.unwrap();
    assert!(failed.contains("FAILED"), "{failed}");
    assert!(failed.contains("该公众号暂时无法提供服务"), "{failed}");
    assert!(
        failed.contains("because") && failed.contains("XML"),
        "{failed}"
    );
    screenshot(browser, "debugger-failure").await;

    // The overview's charts count what was sent (they refresh every 5 s).
    browser.goto(&format!("{base}/console/")).await.unwrap();
    wait_for(
        browser,
        Locator::XPath("//figure[figcaption[starts-with(., 'Answers by kind')]]//span[starts-with(., 'replied')]"),
    )
    .await;
    screenshot(browser, "overview").await;

    // Log out: the console is closed again.
    browser
        .find(Locator::Css("#logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(browser, Locator::Css("input#token")).await;
    browser
        .goto(&format!("{base}/console/inbox"))
        .await
        .unwrap();
    wait_for(browser, Locator::Css("input#token")).await;
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/console/login"
    );
}
