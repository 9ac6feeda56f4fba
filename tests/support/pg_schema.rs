//! Dropping a test's PostgreSQL schema (and whatever else it made) when its guard goes, also
//! when the test failed: shared by `tests/postgres.rs` and `tests/deploy`.

use std::time::Duration;

use sqlx::Connection;

/// Run `statements` (a `DROP SCHEMA .. CASCADE` first, then any cleanup) on a connection of
/// their own, retrying each a few seconds (a role's connections may linger a moment after its
/// backend is dropped). Runs on a thread with a runtime of its own: a guard may drop inside
/// the test's runtime.
pub(crate) fn run_cleanup(url: &str, statements: Vec<String>) {
    let url = url.to_owned();
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            for sql in statements {
                for _ in 0..50 {
                    match sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                        .execute(&mut conn)
                        .await
                    {
                        Ok(_) => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            conn.close().await
        })
    })
    .join();
}
