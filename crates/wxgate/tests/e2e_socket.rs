//! End-to-end over real sockets on 127.0.0.1:0 with the embedded SQLite store: the
//! binary's own serving path (`Bound::serve`), a real HTTP client, and a restart in the
//! middle of a handler run.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use wechat_proto::Reply;
use wxgate::config::{Mode, StoreConfig};
use wxgate::serve::Bound;
use wxgate::sim::wechat::Verdict;
use wxgate::store::{InboxQuery, Store};
use wxgate::GatewayBuilder;

fn sqlite_config(path: &std::path::Path) -> wxgate::Config {
    let mut config = config("ack", "");
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.store = StoreConfig::Sqlite {
        path: path.to_owned(),
        retention: wxgate::store::Retention::default(),
        synchronous_full: false,
    };
    config.shutdown_grace = Duration::from_millis(200);
    config
}

struct Running {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(
    config: wxgate::Config,
    store: Arc<dyn Store>,
    build: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> Running {
    let bound = Bound::bind(build(GatewayBuilder::new(config.clone(), store)), config)
        .await
        .unwrap();
    let base = format!("http://{}", bound.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    Running { base, stop, done }
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    account: &str,
    request: &wxgate::sim::wechat::SignedRequest,
) -> (u16, String) {
    let response = client
        .post(format!("{base}/wx/{account}?{}", request.query))
        .body(request.body.clone())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_a_socket_with_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(&dir.path().join("wxgate.db"));
    let store = wxgate::store::open(&config.store, now() * 1000)
        .await
        .unwrap();
    let running = start(config, Arc::clone(&store), |b| b).await;
    let client = reqwest::Client::new();
    let side = side(Mode::Safe);
    let request = side.message(&text(1, "help"), now(), "42", [3; 16]);
    let (status, body) = post(&client, &running.base, "safe", &request).await;
    let verdict = side.judge(status, body.as_bytes(), SENDER);
    assert_eq!(
        reply_text(&verdict),
        Some(format!("help for {SENDER}").as_str())
    );
    let get = side.verification(now(), "9", "echo-me");
    let echoed = client
        .get(format!("{}/wx/safe?{}", running.base, get.query))
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.text().await.unwrap(), "echo-me");
    running.stop.send(()).unwrap();
    running.done.await.unwrap().unwrap();
    assert_eq!(store.list(&InboxQuery::default()).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_flight_records_the_loss_and_keeps_finished_replies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxgate.db");
    let config = sqlite_config(&path);
    let side = side(Mode::Safe);
    let client = reqwest::Client::new();
    let finished = text(10, "help");
    let stuck = text(11, "never finishes");
    let finished_request = side.message(&finished, now(), "1", [1; 16]);
    let stuck_request = side.message(&stuck, now(), "2", [2; 16]);

    // First life, on its own runtime so that ending it is like the process going away:
    // every task (the hung handler included) is dropped and with it the store.
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let hang = move |_ctx, _inbound| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
            Ok(None)
        }
    };
    let first_life = {
        let config = config.clone();
        let side = side.clone();
        let (finished_request, stuck_request) = (finished_request.clone(), stuck_request.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let client = reqwest::Client::new();
                let store = wxgate::store::open(&config.store, now() * 1000)
                    .await
                    .unwrap();
                let mut short = config.clone();
                short.accounts[2].budget = Duration::from_millis(200);
                let running = start(short, store, |b| b.handler("safe", hang)).await;
                let (_, body) = post(&client, &running.base, "safe", &finished_request).await;
                assert_eq!(
                    reply_text(&side.judge(200, body.as_bytes(), SENDER)),
                    Some(format!("help for {SENDER}").as_str())
                );
                let (status, body) = post(&client, &running.base, "safe", &stuck_request).await;
                assert_eq!(
                    side.judge(status, body.as_bytes(), SENDER),
                    Verdict::Acknowledged
                );
                running.stop.send(()).unwrap();
                running.done.await.unwrap().unwrap();
            });
            drop(runtime);
        })
    };
    first_life.join().expect("first life ran");
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // Second life on the same file: retries of both messages.
    let runs_after = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs_after);
    let counting = move |_ctx, _inbound| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(Some(Reply::Text {
                content: "second life".to_owned(),
            }))
        }
    };
    let store = wxgate::store::open(&config.store, now() * 1000)
        .await
        .unwrap();
    let running = start(config.clone(), Arc::clone(&store), |b| {
        b.handler("safe", counting)
    })
    .await;
    let retry = side.message(&finished, now(), "3", [3; 16]);
    let (_, body) = post(&client, &running.base, "safe", &retry).await;
    assert_eq!(
        reply_text(&side.judge(200, body.as_bytes(), SENDER)),
        Some(format!("help for {SENDER}").as_str())
    );
    let retry = side.message(&stuck, now(), "4", [4; 16]);
    let (status, body) = post(&client, &running.base, "safe", &retry).await;
    assert_eq!(
        side.judge(status, body.as_bytes(), SENDER),
        Verdict::Acknowledged
    );
    assert_eq!(
        runs_after.load(Ordering::SeqCst),
        0,
        "no handler ran twice across the restart"
    );
    let entries = store.list(&InboxQuery::default()).await.unwrap();
    let stuck_entry = entries
        .iter()
        .find(|e| e.dedup_key.contains(":11"))
        .expect("stuck message recorded");
    let error = stuck_entry
        .completion
        .as_ref()
        .and_then(|c| c.error.clone())
        .unwrap_or_default();
    assert!(error.contains("interrupted"), "{error}");
    assert_eq!(stuck_entry.attempts, 2);
    running.stop.send(()).unwrap();
    running.done.await.unwrap().unwrap();
}

/// Writes one raw HTTP/1.1 POST of `request` to `account`, or only the first `body_bytes`
/// of its body.
async fn write_raw(
    stream: &mut tokio::net::TcpStream,
    account: &str,
    request: &wxgate::sim::wechat::SignedRequest,
    body_bytes: usize,
) {
    use tokio::io::AsyncWriteExt;
    let head = format!(
        "POST /wx/{account}?{} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n",
        request.query,
        request.body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&request.body.as_bytes()[..body_bytes])
        .await
        .unwrap();
    stream.flush().await.unwrap();
}

/// Cancel safety, over real sockets: connections dropped mid-body, right after the body,
/// at a jittered point (while the claim is being written) and while the handler runs.
/// Then every message is retried as WeChat would. Every handler ran exactly once, and
/// every retry got its handler's reply: no claim was ever left without its handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_never_strand_a_message() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::sync::{mpsc, Semaphore};

    const MESSAGES: u64 = 160;
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(&dir.path().join("wxgate.db"));
    let store = wxgate::store::open(&config.store, now() * 1000)
        .await
        .unwrap();
    let runs: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    // Handlers of every fourth message wait here until the test has dropped their
    // connection.
    let release = Arc::new(Semaphore::new(0));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<u64>();
    let handler = {
        let (runs, release) = (Arc::clone(&runs), Arc::clone(&release));
        move |_ctx, inbound: wechat_proto::Inbound| {
            let (runs, release, started) =
                (Arc::clone(&runs), Arc::clone(&release), started_tx.clone());
            async move {
                let msg_id = inbound.header.msg_id.unwrap_or_default();
                *runs.lock().unwrap().entry(msg_id).or_default() += 1;
                if msg_id % 4 == 3 {
                    let _ = started.send(msg_id);
                    release.acquire().await.unwrap().forget();
                }
                Ok(Some(Reply::Text {
                    content: format!("r{msg_id}"),
                }))
            }
        }
    };
    let running = start(config, Arc::clone(&store), |b| b.handler("plain", handler)).await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    let side = side(Mode::Plaintext);
    let requests: Vec<_> = (0..MESSAGES)
        .map(|id| side.message(&text(id, "ping"), now(), &format!("n{id}"), [0; 16]))
        .collect();

    for (id, request) in (0..MESSAGES).zip(&requests) {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        match id % 4 {
            // Mid-body: the message never fully arrived.
            0 => write_raw(&mut stream, "plain", request, request.body.len() / 2).await,
            // Right after the body.
            1 => write_raw(&mut stream, "plain", request, request.body.len()).await,
            // A little later, while the claim is on its way to the file.
            2 => {
                write_raw(&mut stream, "plain", request, request.body.len()).await;
                for _ in 0..(id * 7919 % 13) {
                    tokio::task::yield_now().await;
                }
            }
            // While the handler runs.
            _ => {
                write_raw(&mut stream, "plain", request, request.body.len()).await;
                assert_eq!(started_rx.recv().await, Some(id));
            }
        }
        drop(stream);
    }
    release.add_permits(MESSAGES as usize);

    let client = reqwest::Client::new();
    for (id, request) in (0..MESSAGES).zip(&requests) {
        let (status, body) = post(&client, &running.base, "plain", request).await;
        let verdict = side.judge(status, body.as_bytes(), SENDER);
        assert_eq!(
            reply_text(&verdict),
            Some(format!("r{id}").as_str()),
            "the retry of message {id} got its handler's reply"
        );
    }
    let runs = runs.lock().unwrap().clone();
    for id in 0..MESSAGES {
        assert_eq!(runs.get(&id), Some(&1), "message {id}'s handler ran once");
    }
    running.stop.send(()).unwrap();
    running.done.await.unwrap().unwrap();
}
