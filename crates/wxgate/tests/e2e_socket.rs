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
    let store = wxgate::store::open(&config.store, now() * 1000).await.unwrap();
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
                let store = wxgate::store::open(&config.store, now() * 1000).await.unwrap();
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
    let store = wxgate::store::open(&config.store, now() * 1000).await.unwrap();
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
