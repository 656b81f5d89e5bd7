//! The ledger against real stores: every scenario in `writes` and `queries` runs on Postgres
//! (a fresh database per test, from `DATABASE_URL`) and on SQLite (a temporary file);
//! `outage` cuts a TCP proxy between the ledger and Postgres.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first thing that is not as expected"
)]

mod outage;
mod queries;
mod support;
mod writes;

/// Instantiates each scenario `$name(db)` of the calling module once per backend, as
/// `postgres::$name` and `sqlite::$name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Db::postgres().await).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Db::sqlite().await).await;
                }
            )*
        }
    };
}

pub(crate) use on_both_backends;
