//! The `wxgate` binary as an operator runs it: `serve --check` exit codes and output, the
//! demo's listen address, and SIGHUP reload of a real process with a message in flight.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use support::*;
use tokio::sync::Notify;
use wechat_proto::Reply;
use wxgate::config::Mode;
use wxgate::sim::wechat::Verdict;

const BIN: &str = env!("CARGO_BIN_EXE_wxgate");
const NEW_KEY: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut";

fn run(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env_remove("WXGATE_CONFIG");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn account(name: &str, mode: &str, key: &str, extra: &str) -> String {
    format!(
        "[[accounts]]\nname = \"{name}\"\napp_id = \"{APP_ID}\"\ntoken = \"{TOKEN}\"\nencoding_aes_key = \"{key}\"\nmode = \"{mode}\"\nbudget_ms = 4800\n{extra}\n"
    )
}

#[test]
fn serve_check_reports_and_exits_by_validity() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[store]\nbackend = \"memory\"\n{}{}",
            account("a", "safe", KEY, "[[accounts.rules]]\necho = true"),
            account("idle", "plaintext", KEY, "")
        ),
    )
    .unwrap();
    let (code, out, _) = run(
        &["serve", "--check", "--config", good.to_str().unwrap()],
        dir.path(),
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("/wx/a") && out.contains("safe") && out.contains("rules (1)"),
        "{out}"
    );
    assert!(
        out.contains("warning: account idle has neither rules nor a forward"),
        "{out}"
    );

    let (code, out, _) = run(
        &[
            "serve",
            "--check",
            "--json",
            "--listen",
            "127.0.0.1:9911",
            "--config",
            good.to_str().unwrap(),
        ],
        dir.path(),
        &[],
    );
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["listen"], "127.0.0.1:9911");
    assert_eq!(report["accounts"][1]["handler"], "none");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, account("a", "safe", "short", "")).unwrap();
    let (code, _, err) = run(
        &["serve", "--check", "--config", bad.to_str().unwrap()],
        dir.path(),
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("accounts[0].encoding_aes_key"), "{err}");

    let (code, out, _) = run(
        &["serve", "--check", "--json", "--config", "missing.toml"],
        dir.path(),
        &[],
    );
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], false);
    assert!(report["error"]
        .as_str()
        .unwrap()
        .starts_with("config: cannot read missing.toml"));
}

#[test]
fn the_demo_honours_listen_from_the_environment_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("WXGATE_LISTEN", "127.0.0.1:9912")];
    let (code, out, _) = run(&["serve", "--check", "--json"], dir.path(), &env);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["listen"], "127.0.0.1:9912");
    let (_, out, _) = run(
        &["serve", "--check", "--json", "--listen", "127.0.0.1:9913"],
        dir.path(),
        &env,
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["listen"], "127.0.0.1:9913");
}

/// A running `wxgate serve`; its stderr lines arrive on a channel.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Server {
    fn start(config: &Path, dir: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap()])
            .current_dir(dir)
            .env_remove("WXGATE_CONFIG")
            .env("WXGATE_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Server {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// The first log line containing `needle` (the process is given 20 s, a safety net).
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no {needle:?} in:\n{}", self.log.join("\n")));
            self.log.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_rotates_a_key_and_adds_an_account_while_a_message_is_in_flight() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // An upstream that answers only when told to: the message stays in flight.
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let (arrived_tx, arrived) = mpsc::channel::<()>();
    let arrived_tx = Arc::new(std::sync::Mutex::new(arrived_tx));
    let upstream = runtime.block_on(async move {
        let app = axum::Router::new().route(
            "/",
            post(move || {
                let gate = Arc::clone(&gate);
                let _ = arrived_tx.lock().unwrap().send(());
                async move {
                    gate.notified().await;
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        r#"{"type": "text", "content": "late answer"}"#,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wxgate.toml");
    let forward = format!("[accounts.forward]\nurl = \"http://{upstream}/\"");
    let first = format!(
        "listen = \"127.0.0.1:0\"\n[store]\nbackend = \"memory\"\n{}",
        account("s", "safe", KEY, &forward)
    );
    std::fs::write(&config, &first).unwrap();
    let mut server = Server::start(&config, dir.path());
    let serving = server.wait_for("serving");
    let start = serving.find("http://").unwrap();
    let base = serving[start..].split("/wx/").next().unwrap().to_owned();
    let client = reqwest::Client::new();
    let post = |account: &str, side: &wxgate::sim::wechat::WeChatSide, msg_id: u64| {
        let request = side.message(&text(msg_id, "hello"), now(), "5", [4; 16]);
        let client = client.clone();
        let url = format!("{base}/wx/{account}?{}", request.query);
        let body = request.body.clone();
        runtime.spawn(async move {
            let response = client.post(url).body(body).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    };
    let join = |task: tokio::task::JoinHandle<(u16, String)>| runtime.block_on(task).unwrap();
    let upstream_called = || arrived.recv_timeout(Duration::from_secs(20)).unwrap();
    let old_side = side(Mode::Safe);
    let in_flight = post("s", &old_side, 1);
    upstream_called();

    // Rotate s's key (the old one stays accepted as previous) and add account n.
    let rotated = format!(
        "listen = \"127.0.0.1:0\"\n[store]\nbackend = \"memory\"\n{}{}",
        account(
            "s",
            "safe",
            NEW_KEY,
            &format!("previous_encoding_aes_key = \"{KEY}\"\n{forward}")
        ),
        account("n", "plaintext", KEY, "[[accounts.rules]]\necho = true")
    );
    std::fs::write(&config, &rotated).unwrap();
    server.signal("HUP");
    let reloaded = server.wait_for("config reloaded");
    assert!(
        reloaded.contains("added=[\"n\"]") && reloaded.contains("changed=[\"s\"]"),
        "{reloaded}"
    );

    // The in-flight message finishes with the config it started with: its reply is
    // sealed with the key that was current when it arrived.
    release.notify_one();
    let (status, body) = join(in_flight);
    match old_side.judge(status, body.as_bytes(), SENDER) {
        Verdict::Reply(Reply::Text { content }) => assert_eq!(content, "late answer"),
        other => panic!("{other:?}: {body}"),
    }
    // The new account answers; the rotated account's new key works.
    let (status, body) = join(post("n", &side(Mode::Plaintext), 2));
    assert_eq!(status, 200);
    assert!(body.contains("hello"), "{body}");
    let new_side = side_with(Mode::Safe, NEW_KEY, APP_ID);
    let waiting = post("s", &new_side, 3);
    upstream_called();
    release.notify_one();
    let (status, body) = join(waiting);
    assert!(
        matches!(
            new_side.judge(status, body.as_bytes(), SENDER),
            Verdict::Reply(_)
        ),
        "{body}"
    );

    // An invalid config is refused and the running one kept.
    std::fs::write(&config, "[[accounts]]\nname = \"broken\"\n").unwrap();
    server.signal("HUP");
    let refused = server.wait_for("config reload failed");
    assert!(refused.contains("accounts[0].app_id"), "{refused}");
    let (status, _) = join(post("n", &side(Mode::Plaintext), 4));
    assert_eq!(status, 200);

    server.signal("TERM");
    server.wait_for("store flushed");
    let exit = server.child.wait().unwrap();
    assert!(exit.success());
    // Logs off a terminal carry no colour codes, and never the secrets or the OpenID.
    let log = server.log.join("\n");
    assert!(!log.contains('\u{1b}'), "{log}");
    for secret in [TOKEN, KEY, NEW_KEY, SENDER] {
        assert!(!log.contains(secret), "{secret} in {log}");
    }
    drop(runtime);
}

#[test]
fn file_errors_name_the_file_and_the_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(
        &[
            "decrypt",
            "--aes-key",
            KEY,
            "--app-id",
            APP_ID,
            "--body",
            "captured.xml",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "wxgate: reading captured.xml: No such file or directory (os error 2)"
    );
    let (code, _, err) = run(
        &[
            "sim",
            "send",
            "--xml",
            "captured.xml",
            "--url",
            "http://127.0.0.1:1/wx/a",
            "--token",
            "t",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(code, 2);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    let (code, _, err) = run(&["serve", "--config", "nope.toml"], dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("wxgate: config: cannot read nope.toml"),
        "{err}"
    );
}

/// `script` gives the process a terminal for its stderr, as an operator's shell would.
fn on_a_terminal(command: &str, no_color: bool) -> Option<String> {
    let script = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let mut run = Command::new(script);
    run.args(["-qec", command, "/dev/null"])
        .env_remove("NO_COLOR");
    if no_color {
        run.env("NO_COLOR", "1");
    }
    let output = run.output().unwrap();
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn colours_only_on_a_terminal_and_never_with_no_color() {
    // A port already taken: serve logs its start-up warning, then fails to bind and exits.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wxgate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{}\"\n[store]\nbackend = \"memory\"\n{}",
            taken.local_addr().unwrap(),
            account("idle", "plaintext", KEY, "")
        ),
    )
    .unwrap();
    let command = format!("{BIN} serve --config {}", config.display());
    let Some(coloured) = on_a_terminal(&command, false) else {
        // Without `script` the pipe case (sighup test) is the check.
        return;
    };
    assert!(
        coloured.contains("neither rules nor a forward"),
        "{coloured}"
    );
    assert!(
        coloured.contains('\u{1b}'),
        "no colour on a terminal: {coloured}"
    );
    let plain = on_a_terminal(&command, true).unwrap();
    assert!(plain.contains("neither rules nor a forward"), "{plain}");
    assert!(
        !plain.contains('\u{1b}'),
        "colour despite NO_COLOR: {plain}"
    );
    drop(taken);
}
