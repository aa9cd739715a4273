//! A database of a test's own on the shared PostgreSQL server, for tests that change what
//! is global to a database (lifecycle settings, purges that look at every tenant's rows)
//! and so must not share one with tests running at the same time.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::{database_url, unique};

/// A new database with migrations applied; dropped (connections and all) on drop.
pub struct PrivateDatabase {
    name: String,
    pub url: String,
    pub pool: PgPool,
}

impl PrivateDatabase {
    pub async fn create() -> Self {
        Self::create_with(&ingest_worker::persist::MIGRATOR).await
    }

    /// A new database with the migrations of `migrator` applied (e.g. only the first
    /// few, to test a later one on a populated database).
    pub async fn create_with(migrator: &sqlx::migrate::Migrator) -> Self {
        let name = unique("ingest_t").replace('-', "_");
        let admin = admin_pool().await;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&admin)
            .await
            .expect("create a private database");
        admin.close().await;
        let url = with_database(&database_url(), &name);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connect to the private database");
        migrator.run(&pool).await.expect("apply migrations");
        Self { name, url, pool }
    }
}

impl Drop for PrivateDatabase {
    fn drop(&mut self) {
        // Drop runs outside any runtime guarantee: a thread with a runtime of its own.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let admin = admin_pool().await;
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&admin)
                    .await;
                admin.close().await;
            });
        })
        .join();
    }
}

async fn admin_pool() -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(&database_url())
        .await
        .expect("connect to the test database server")
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let cut = base.rfind('/').expect("a database URL has a path");
    let mut out = format!("{}/{name}", &base[..cut]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            super::with_database("postgres://u@h:1/ingest", "x"),
            "postgres://u@h:1/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h/ingest?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
