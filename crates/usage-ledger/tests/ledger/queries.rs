//! The usage queries (granularity, grouping, bounds, tenant isolation) and the CSV export,
//! on both backends, over a small set of events whose totals are worked out by hand.

use chrono::{DateTime, Utc};
use usage_ledger::{usage_csv, Granularity, GroupBy, Ledger, UsageEvent, UsageKind, UsageRow};
use uuid::Uuid;

use crate::support::{config, temp_dir, Db, TempDir};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

struct World {
    ledger: Ledger,
    _spill: TempDir,
    a: Uuid,
    b: Uuid,
    k1: Uuid,
    k2: Uuid,
}

#[expect(
    clippy::too_many_arguments,
    reason = "one line per event reads as a table"
)]
fn openai(
    tenant: Uuid,
    when: &str,
    alias: &str,
    deployment: &str,
    key: Option<Uuid>,
    prompt: u64,
    completion: u64,
    cached: u64,
    status: u16,
) -> UsageEvent {
    let mut e = UsageEvent::openai(tenant, alias, "chat.completions", at(when));
    e.deployment = Some(deployment.into());
    e.key_id = key;
    e.prompt_tokens = prompt;
    e.completion_tokens = completion;
    e.cached_tokens = cached;
    e.status = status;
    // Priced at 1 and 3 micro-units a token, except the embedding model, which has no price.
    if alias == "embed" {
        e.unpriced = true;
    } else {
        e.cost = Some(prompt * 1_000_000 + completion * 3_000_000);
    }
    e
}

/// Tenant A: three OpenAI calls and a search on 10 March, one call on 11 March; tenant B:
/// one large call in the same hour as A's first.
async fn world(db: &Db) -> World {
    let spill = temp_dir("spill");
    let ledger = Ledger::start(&db.url, config(&spill)).await.unwrap();
    let (a, b, k1, k2) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let mut search = UsageEvent::search(a, "docs", "search", at("2024-03-10T09:20:00Z"));
    search.key_id = Some(k1);
    search.documents = 7;
    let events = [
        openai(
            a,
            "2024-03-10T09:15:00Z",
            "gpt-4o",
            "d1",
            Some(k1),
            100,
            10,
            5,
            200,
        ),
        openai(
            a,
            "2024-03-10T09:45:00Z",
            "gpt-4o",
            "d2",
            Some(k2),
            200,
            20,
            0,
            429,
        ),
        openai(
            a,
            "2024-03-10T10:05:00Z",
            "embed",
            "d1",
            Some(k1),
            50,
            0,
            0,
            200,
        ),
        openai(
            a,
            "2024-03-11T00:30:00Z",
            "gpt-4o",
            "d1",
            None,
            1000,
            100,
            0,
            200,
        ),
        search,
        openai(
            b,
            "2024-03-10T09:10:00Z",
            "gpt-4o",
            "d1",
            Some(Uuid::new_v4()),
            9999,
            9999,
            0,
            500,
        ),
    ];
    for event in events {
        ledger.record(event);
    }
    crate::support::until(&ledger, "the events are written", |m| m.written == 6).await;
    World {
        ledger,
        _spill: spill,
        a,
        b,
        k1,
        k2,
    }
}

/// A row: (period, kind, group, [requests, prompt, completion, cached, total, documents, errors]).
type Row = (&'static str, Option<UsageKind>, Option<String>, [u64; 7]);

fn expect(rows: Vec<UsageRow>, expected: &[Row]) {
    let actual: Vec<_> = rows
        .into_iter()
        .map(|r| {
            (
                r.period_start,
                r.kind,
                r.group,
                [
                    r.requests,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.cached_tokens,
                    r.total_tokens,
                    r.documents,
                    r.errors,
                ],
            )
        })
        .collect();
    let expected: Vec<_> = expected
        .iter()
        .map(|(period, kind, group, counts)| (at(period), *kind, group.clone(), *counts))
        .collect();
    assert_eq!(actual, expected);
}

const OPENAI: Option<UsageKind> = Some(UsageKind::OpenAi);
const SEARCH: Option<UsageKind> = Some(UsageKind::Search);

fn g(value: &str) -> Option<String> {
    Some(value.to_owned())
}

async fn usage_is_totalled_by_hour_and_by_day(db: Db) {
    let w = world(&db).await;
    let (from, to) = (at("2024-03-10T00:00:00Z"), at("2024-03-12T00:00:00Z"));
    let hours = w
        .ledger
        .usage(w.a, from, to, Granularity::Hour, GroupBy::None)
        .await
        .unwrap();
    expect(
        hours,
        &[
            (
                "2024-03-10T09:00:00Z",
                None,
                None,
                [3, 300, 30, 5, 330, 7, 1],
            ),
            ("2024-03-10T10:00:00Z", None, None, [1, 50, 0, 0, 50, 0, 0]),
            (
                "2024-03-11T00:00:00Z",
                None,
                None,
                [1, 1000, 100, 0, 1100, 0, 0],
            ),
        ],
    );
    let days = w
        .ledger
        .usage(w.a, from, to, Granularity::Day, GroupBy::None)
        .await
        .unwrap();
    expect(
        days,
        &[
            (
                "2024-03-10T00:00:00Z",
                None,
                None,
                [4, 350, 30, 5, 380, 7, 1],
            ),
            (
                "2024-03-11T00:00:00Z",
                None,
                None,
                [1, 1000, 100, 0, 1100, 0, 0],
            ),
        ],
    );
    w.ledger.shutdown().await.unwrap();
}

async fn usage_is_grouped_by_model_deployment_or_key(db: Db) {
    let w = world(&db).await;
    let (from, to) = (at("2024-03-10T00:00:00Z"), at("2024-03-12T00:00:00Z"));
    let query = |group_by| w.ledger.usage(w.a, from, to, Granularity::Day, group_by);
    expect(
        query(GroupBy::Model).await.unwrap(),
        &[
            (
                "2024-03-10T00:00:00Z",
                OPENAI,
                g("embed"),
                [1, 50, 0, 0, 50, 0, 0],
            ),
            (
                "2024-03-10T00:00:00Z",
                OPENAI,
                g("gpt-4o"),
                [2, 300, 30, 5, 330, 0, 1],
            ),
            (
                "2024-03-10T00:00:00Z",
                SEARCH,
                g("docs"),
                [1, 0, 0, 0, 0, 7, 0],
            ),
            (
                "2024-03-11T00:00:00Z",
                OPENAI,
                g("gpt-4o"),
                [1, 1000, 100, 0, 1100, 0, 0],
            ),
        ],
    );
    expect(
        query(GroupBy::Deployment).await.unwrap(),
        &[
            // search has no deployment
            ("2024-03-10T00:00:00Z", None, None, [1, 0, 0, 0, 0, 7, 0]),
            (
                "2024-03-10T00:00:00Z",
                None,
                g("d1"),
                [2, 150, 10, 5, 160, 0, 0],
            ),
            (
                "2024-03-10T00:00:00Z",
                None,
                g("d2"),
                [1, 200, 20, 0, 220, 0, 1],
            ),
            (
                "2024-03-11T00:00:00Z",
                None,
                g("d1"),
                [1, 1000, 100, 0, 1100, 0, 0],
            ),
        ],
    );
    let mut by_key = vec![
        (
            "2024-03-10T00:00:00Z",
            None,
            g(&w.k1.to_string()),
            [3, 150, 10, 5, 160, 7, 0],
        ),
        (
            "2024-03-10T00:00:00Z",
            None,
            g(&w.k2.to_string()),
            [1, 200, 20, 0, 220, 0, 1],
        ),
        // made with a token: no key
        (
            "2024-03-11T00:00:00Z",
            None,
            None,
            [1, 1000, 100, 0, 1100, 0, 0],
        ),
    ];
    by_key.sort_by(|x, y| (x.0, &x.2).cmp(&(y.0, &y.2)));
    expect(query(GroupBy::Key).await.unwrap(), &by_key);
    w.ledger.shutdown().await.unwrap();
}

async fn usage_covers_the_hours_that_start_in_from_to(db: Db) {
    let w = world(&db).await;
    let hours = |from: &str, to: &str| {
        w.ledger
            .usage(w.a, at(from), at(to), Granularity::Hour, GroupBy::None)
    };
    let starts = |rows: Vec<UsageRow>| -> Vec<String> {
        rows.iter()
            .map(|r| r.period_start.format("%dT%H").to_string())
            .collect()
    };
    // `to` is exclusive
    let rows = hours("2024-03-10T09:00:00Z", "2024-03-10T10:00:00Z")
        .await
        .unwrap();
    assert_eq!(starts(rows), ["10T09"]);
    // `from` is inclusive
    let rows = hours("2024-03-10T10:00:00Z", "2024-03-11T00:00:01Z")
        .await
        .unwrap();
    assert_eq!(starts(rows), ["10T10", "11T00"]);
    // an hour starting before `from` is not included, even partly
    let rows = hours("2024-03-10T09:30:00Z", "2024-03-10T23:00:00Z")
        .await
        .unwrap();
    assert_eq!(starts(rows), ["10T10"]);
    // an empty range
    let rows = hours("2024-03-12T00:00:00Z", "2024-03-13T00:00:00Z")
        .await
        .unwrap();
    assert!(rows.is_empty());
    w.ledger.shutdown().await.unwrap();
}

async fn a_tenants_usage_never_includes_another_tenants_events(db: Db) {
    let w = world(&db).await;
    let (from, to) = (at("2024-03-01T00:00:00Z"), at("2024-04-01T00:00:00Z"));
    for group_by in [
        GroupBy::None,
        GroupBy::Model,
        GroupBy::Deployment,
        GroupBy::Key,
    ] {
        for granularity in [Granularity::Hour, Granularity::Day] {
            let a = w
                .ledger
                .usage(w.a, from, to, granularity, group_by)
                .await
                .unwrap();
            let requests: u64 = a.iter().map(|r| r.requests).sum();
            let prompt: u64 = a.iter().map(|r| r.prompt_tokens).sum();
            let errors: u64 = a.iter().map(|r| r.errors).sum();
            assert_eq!((requests, prompt, errors), (5, 1350, 1), "{group_by:?}");
        }
    }
    let b = w
        .ledger
        .usage(w.b, from, to, Granularity::Day, GroupBy::None)
        .await
        .unwrap();
    expect(
        b,
        &[(
            "2024-03-10T00:00:00Z",
            None,
            None,
            [1, 9999, 9999, 0, 19998, 0, 1],
        )],
    );
    let nobody = w
        .ledger
        .usage(Uuid::new_v4(), from, to, Granularity::Day, GroupBy::None)
        .await
        .unwrap();
    assert!(nobody.is_empty());
    w.ledger.shutdown().await.unwrap();
}

async fn the_csv_export_has_a_header_and_quotes_what_needs_it(db: Db) {
    let w = world(&db).await;
    // a name that needs quoting (an index name is checked by the registry, not here)
    let mut odd = UsageEvent::search(w.a, "docs, \"v2\"", "search", at("2024-03-10T11:00:00Z"));
    odd.documents = 3;
    w.ledger.record(odd);
    crate::support::until(&w.ledger, "the event is written", |m| m.written == 7).await;
    let rows = w
        .ledger
        .usage(
            w.a,
            at("2024-03-10T00:00:00Z"),
            at("2024-03-11T00:00:00Z"),
            Granularity::Day,
            GroupBy::Model,
        )
        .await
        .unwrap();
    assert_eq!(
        usage_csv(&rows, GroupBy::Model),
        "period_start,kind,model,requests,prompt_tokens,completion_tokens,cached_tokens,\
         total_tokens,documents,errors,cache_hits,cost,unpriced\r\n\
         2024-03-10T00:00:00Z,openai,embed,1,50,0,0,50,0,0,0,0,1\r\n\
         2024-03-10T00:00:00Z,openai,gpt-4o,2,300,30,5,330,0,1,0,0.00039,0\r\n\
         2024-03-10T00:00:00Z,search,docs,1,0,0,0,0,7,0,0,0,0\r\n\
         2024-03-10T00:00:00Z,search,\"docs, \"\"v2\"\"\",1,0,0,0,0,3,0,0,0,0\r\n"
    );
    let totals = w
        .ledger
        .usage(
            w.a,
            at("2024-03-10T00:00:00Z"),
            at("2024-03-11T00:00:00Z"),
            Granularity::Day,
            GroupBy::None,
        )
        .await
        .unwrap();
    assert_eq!(
        usage_csv(&totals, GroupBy::None),
        "period_start,requests,prompt_tokens,completion_tokens,cached_tokens,total_tokens,\
         documents,errors,cache_hits,cost,unpriced\r\n\
         2024-03-10T00:00:00Z,5,350,30,5,380,10,1,0,0.00039,1\r\n"
    );
    w.ledger.shutdown().await.unwrap();
}

/// The console's fleet-wide reads: each tenant's totals (by id, and the top by tokens) and
/// every tenant's calls per minute.
async fn totals_per_tenant_and_per_minute(db: Db) {
    let w = world(&db).await;
    let store = w.ledger.store();
    let (from, to) = (at("2024-03-10T00:00:00Z"), at("2024-03-12T00:00:00Z"));
    let mut totals = store.tenant_totals(&[w.a, w.b], from, to, 0).await.unwrap();
    totals.sort_by_key(|t| t.tokens);
    let figures: Vec<_> = totals
        .iter()
        .map(|t| (t.tenant_id, t.requests, t.tokens, t.errors))
        .collect();
    assert_eq!(figures, [(w.a, 5, 1480, 1), (w.b, 1, 19998, 1)]);
    let only_a = store.tenant_totals(&[w.a], from, to, 0).await.unwrap();
    assert_eq!(only_a.len(), 1, "only the tenants asked for");
    let top = store.tenant_totals(&[], from, to, 1).await.unwrap();
    assert_eq!(top.iter().map(|t| t.tenant_id).collect::<Vec<_>>(), [w.b]);
    let minutes = store
        .recent_minutes(at("2024-03-10T09:12:00Z"))
        .await
        .unwrap();
    let minute = |text: &str| at(text).timestamp() / 60;
    let figures: Vec<_> = minutes
        .iter()
        .map(|m| (m.minute, m.requests, m.tokens, m.errors))
        .collect();
    assert_eq!(
        figures,
        [
            (minute("2024-03-10T09:15:00Z"), 1, 110, 0),
            (minute("2024-03-10T09:20:00Z"), 1, 0, 0),
            (minute("2024-03-10T09:45:00Z"), 1, 220, 1),
            (minute("2024-03-10T10:05:00Z"), 1, 50, 0),
            (minute("2024-03-11T00:30:00Z"), 1, 1100, 0),
        ],
        "from the minute asked for, B's call at 09:10 left out"
    );
}

crate::on_both_backends!(
    totals_per_tenant_and_per_minute,
    usage_is_totalled_by_hour_and_by_day,
    usage_is_grouped_by_model_deployment_or_key,
    usage_covers_the_hours_that_start_in_from_to,
    a_tenants_usage_never_includes_another_tenants_events,
    the_csv_export_has_a_header_and_quotes_what_needs_it,
);
