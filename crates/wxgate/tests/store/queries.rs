//! The inbox queries suite (filters, cursor paging, one entry by key), run unchanged over
//! every backend: what the console and `wxgate inbox` ask of the inbox.

use super::fixtures::T0;
use super::*;

/// One stored message: account, sender, msg id, kind, content, received, answer, error.
type Row = (
    &'static str,
    &'static str,
    u64,
    &'static str,
    &'static str,
    i64,
    Option<AnswerKind>,
    Option<&'static str>,
);

/// Seven messages on two accounts.
async fn fill(store: &dyn Store) {
    let rows: [Row; 7] = [
        (
            "a",
            "oAlice",
            1,
            "text",
            "apple",
            T0,
            Some(AnswerKind::Replied),
            None,
        ),
        (
            "a",
            "oBob",
            2,
            "text",
            "banana",
            T0 + 1_000,
            Some(AnswerKind::Success),
            Some("boom"),
        ),
        (
            "b",
            "oAlice",
            3,
            "event:click",
            "MENU_1",
            T0 + 2_000,
            Some(AnswerKind::Acked),
            None,
        ),
        (
            "b",
            "oCarol",
            4,
            "image",
            "cherry",
            T0 + 3_000,
            Some(AnswerKind::Held),
            None,
        ),
        // Two in one millisecond: the later claim is newer.
        (
            "a",
            "oCarol",
            5,
            "text",
            "date 枣",
            T0 + 4_000,
            Some(AnswerKind::StillWorking),
            None,
        ),
        (
            "a",
            "oCarol",
            6,
            "event:subscribe",
            "",
            T0 + 4_000,
            None,
            None,
        ),
        (
            "b",
            "oBob",
            7,
            "text:odd",
            "elder",
            T0 + 5_000,
            Some(AnswerKind::Replied),
            None,
        ),
    ];
    for (account, sender, msg_id, kind, content, at, answer, error) in rows {
        let key = StoreKey {
            account: account.to_owned(),
            dedup: DedupKey::Message {
                from_user_name: sender.to_owned(),
                msg_id,
            },
        };
        store
            .claim(&NewMessage {
                key: key.clone(),
                from_user_name: sender.to_owned(),
                kind: kind.to_owned(),
                inbound_json: format!(r#"{{"content":"{content}"}}"#),
                received_at_ms: at,
            })
            .await
            .unwrap();
        if let Some(answer) = answer {
            store
                .complete(
                    &key,
                    &Completion {
                        reply: None,
                        error: error.map(str::to_owned),
                        handler_ms: 3,
                    },
                )
                .await
                .unwrap();
            store.record_answer(&key, answer, 1, at).await.unwrap();
        }
    }
    store.flush().await.unwrap();
}

async fn ids(store: &dyn Store, query: InboxQuery) -> Vec<String> {
    store
        .page(&query)
        .await
        .unwrap()
        .entries
        .iter()
        .map(|e| e.dedup_key.rsplit(':').next().unwrap().to_owned())
        .collect()
}

fn q() -> InboxQuery {
    InboxQuery::default()
}

async fn check(store: Arc<dyn Store>) {
    fill(&*store).await;
    let s = &*store;
    let some = |v: &str| Some(v.to_owned());
    assert_eq!(ids(s, q()).await, ["7", "6", "5", "4", "3", "2", "1"]);
    assert_eq!(
        ids(
            s,
            InboxQuery {
                account: some("b"),
                ..q()
            }
        )
        .await,
        ["7", "4", "3"]
    );
    // A kind, a family before its colon, and no prefix match without the colon.
    assert_eq!(
        ids(
            s,
            InboxQuery {
                kind: some("text"),
                ..q()
            }
        )
        .await,
        ["7", "5", "2", "1"]
    );
    assert_eq!(
        ids(
            s,
            InboxQuery {
                kind: some("event"),
                ..q()
            }
        )
        .await,
        ["6", "3"]
    );
    assert_eq!(
        ids(
            s,
            InboxQuery {
                kind: some("event:click"),
                ..q()
            }
        )
        .await,
        ["3"]
    );
    assert_eq!(
        ids(
            s,
            InboxQuery {
                kind: some("tex"),
                ..q()
            }
        )
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        ids(
            s,
            InboxQuery {
                answer: some("replied"),
                ..q()
            }
        )
        .await,
        ["7", "1"]
    );
    assert_eq!(
        ids(
            s,
            InboxQuery {
                answer: some("failed"),
                ..q()
            }
        )
        .await,
        ["2"]
    );
    assert_eq!(
        ids(
            s,
            InboxQuery {
                answer: some("pending"),
                ..q()
            }
        )
        .await,
        ["6"]
    );
    assert_eq!(
        ids(
            s,
            InboxQuery {
                answer: some("still_working"),
                ..q()
            }
        )
        .await,
        ["5"]
    );
    assert_eq!(
        ids(
            s,
            InboxQuery {
                sender: some("oCarol"),
                ..q()
            }
        )
        .await,
        ["6", "5", "4"]
    );
    assert_eq!(
        ids(
            s,
            InboxQuery {
                text: some("枣"),
                ..q()
            }
        )
        .await,
        ["5"]
    );
    assert_eq!(
        ids(
            s,
            InboxQuery {
                text: some("an"),
                ..q()
            }
        )
        .await,
        ["2"]
    );
    assert_eq!(
        ids(
            s,
            InboxQuery {
                since_ms: Some(T0 + 1_000),
                until_ms: Some(T0 + 3_000),
                ..q()
            }
        )
        .await,
        ["4", "3", "2"]
    );
    assert_eq!(
        ids(
            s,
            InboxQuery {
                account: some("a"),
                kind: some("text"),
                sender: some("oCarol"),
                ..q()
            }
        )
        .await,
        ["5"]
    );
    // Paging by two, through the millisecond both 5 and 6 share.
    let mut query = InboxQuery { limit: 2, ..q() };
    let mut pages = Vec::new();
    loop {
        let page = s.page(&query).await.unwrap();
        pages.push(
            page.entries
                .iter()
                .map(|e| e.dedup_key.rsplit(':').next().unwrap().to_owned())
                .collect::<Vec<_>>(),
        );
        match page.next {
            Some(next) => {
                // The cursor survives its text form.
                query.before = Some(next.to_string().parse().unwrap());
            }
            None => break,
        }
    }
    assert_eq!(
        pages,
        [vec!["7", "6"], vec!["5", "4"], vec!["3", "2"], vec!["1"]]
    );
    // A page that ends exactly at the last entry says so.
    let exact = s.page(&InboxQuery { limit: 7, ..q() }).await.unwrap();
    assert_eq!((exact.entries.len(), exact.next), (7, None));
    // Paging with a filter.
    let first = s
        .page(&InboxQuery {
            account: some("a"),
            limit: 3,
            ..q()
        })
        .await
        .unwrap();
    let rest = ids(
        s,
        InboxQuery {
            account: some("a"),
            before: first.next,
            ..q()
        },
    )
    .await;
    assert_eq!(rest, ["1"]);
    // One entry by key; unknown keys and unparsable ones are simply absent.
    let entry = s.get("a", "msg:oBob:2").await.unwrap().unwrap();
    assert_eq!(entry.completion.unwrap().error.as_deref(), Some("boom"));
    assert_eq!(entry.last_answer, Some((AnswerKind::Success, 1)));
    assert!(s.get("b", "msg:oBob:2").await.unwrap().is_none());
    assert!(s.get("a", "not a key").await.unwrap().is_none());
    // `list` is the first page.
    assert_eq!(
        s.list(&InboxQuery { limit: 2, ..q() }).await.unwrap().len(),
        2
    );
}

pub async fn filters_paging_and_lookup(open: Opener) {
    let harness = open(DEFAULT_RETENTION);
    check(Arc::clone(&harness.store)).await;
}
