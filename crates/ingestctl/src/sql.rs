//! What the tenancy and spec queries share: existence checks, and what a failed write
//! means, told by its SQLSTATE.

use sqlx::PgPool;

/// A constraint a failed statement violated.
pub enum Violation {
    /// 23505
    Unique,
    /// 23503
    ForeignKey,
}

/// Which constraint `e` violated, if any (by SQLSTATE).
pub fn violation(e: &sqlx::Error) -> Option<Violation> {
    let db = e.as_database_error()?;
    if db.is_unique_violation() {
        Some(Violation::Unique)
    } else if db.is_foreign_key_violation() {
        Some(Violation::ForeignKey)
    } else {
        None
    }
}

/// The error of a write whose row's owner was deleted between the existence check and
/// the write (a foreign-key violation): `gone()`; any other failure stays the database's.
pub fn or_gone<E: From<sqlx::Error>>(e: sqlx::Error, gone: impl FnOnce() -> E) -> E {
    match violation(&e) {
        Some(Violation::ForeignKey) => gone(),
        _ => e.into(),
    }
}

/// Runs `query`, a `SELECT EXISTS (...)` over `$1`, `$2`, ..., with `values` bound in order.
pub async fn exists(pool: &PgPool, query: &'static str, values: &[&str]) -> sqlx::Result<bool> {
    values
        .iter()
        .fold(sqlx::query_scalar(query), |q, v| q.bind(*v))
        .fetch_one(pool)
        .await
}
