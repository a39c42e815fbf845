//! The offline queue: anonymized items in Postgres until Asgard took them.

use std::time::Duration;

use heimdall_store::PgPool;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The two kinds of item, and where each goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Signature,
    Alert,
}

impl ItemKind {
    pub const ALL: [ItemKind; 2] = [ItemKind::Signature, ItemKind::Alert];

    pub fn name(self) -> &'static str {
        match self {
            ItemKind::Signature => "signature",
            ItemKind::Alert => "alert",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            ItemKind::Signature => "/v1/signatures",
            ItemKind::Alert => "/v1/alerts",
        }
    }
}

/// Queue the items of one NATS message, once: a redelivered message id is
/// recognised and nothing is queued again. True when queued now.
pub async fn enqueue(
    pool: &PgPool,
    msg_id: &str,
    items: &[(ItemKind, Value)],
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let fresh = sqlx::query("INSERT INTO consumed (msg_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(msg_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if fresh && !items.is_empty() {
        let kinds: Vec<&str> = items.iter().map(|(k, _)| k.name()).collect();
        let texts: Vec<String> = items.iter().map(|(_, v)| v.to_string()).collect();
        let bytes: Vec<i32> = texts.iter().map(|t| t.len() as i32).collect();
        sqlx::query(
            "INSERT INTO outbox (kind, item, bytes) \
             SELECT k, t::jsonb, b FROM UNNEST($1::text[], $2::text[], $3::int[]) AS u(k, t, b)",
        )
        .bind(&kinds)
        .bind(&texts)
        .bind(&bytes)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(fresh)
}

/// The oldest `limit` items of `kind`, with their sequence numbers.
pub async fn take(
    pool: &PgPool,
    kind: ItemKind,
    limit: i64,
) -> Result<Vec<(i64, Value)>, sqlx::Error> {
    sqlx::query_as("SELECT seq, item FROM outbox WHERE kind = $1 ORDER BY seq LIMIT $2")
        .bind(kind.name())
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Remove items Asgard acknowledged (or refused for good).
pub async fn remove(pool: &PgPool, seqs: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)")
        .bind(seqs)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Items waiting.
pub async fn depth(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
}

/// Keep the queue within `max_age` and `max_rows`, oldest first; how many
/// were dropped for age and for size. Old message ids are forgotten too.
pub async fn bound(
    pool: &PgPool,
    max_age: Duration,
    max_rows: i64,
) -> Result<(u64, u64), sqlx::Error> {
    let aged =
        sqlx::query("DELETE FROM outbox WHERE created_at < now() - make_interval(secs => $1)")
            .bind(max_age.as_secs_f64())
            .execute(pool)
            .await?
            .rows_affected();
    let over = sqlx::query(
        "DELETE FROM outbox WHERE seq IN \
         (SELECT seq FROM outbox ORDER BY seq DESC OFFSET $1)",
    )
    .bind(max_rows)
    .execute(pool)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM consumed WHERE at < now() - interval '3 days'")
        .execute(pool)
        .await?;
    Ok((aged, over))
}

/// A value kept in the state table.
pub async fn get_state(pool: &PgPool, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM state WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// Keep `value` under `key`.
pub async fn set_state(pool: &PgPool, key: &str, value: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO state (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(pool)
    .await
    .map(|_| ())
}

/// The queue's identity, made at its first use, so batch ids never repeat
/// across a queue that was emptied and made again.
pub async fn epoch(pool: &PgPool) -> Result<String, sqlx::Error> {
    let fresh: String = rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sqlx::query("INSERT INTO state (key, value) VALUES ('epoch', $1) ON CONFLICT DO NOTHING")
        .bind(&fresh)
        .execute(pool)
        .await?;
    Ok(get_state(pool, "epoch").await?.unwrap_or(fresh))
}

/// The id of a batch of these items: the same items, the same id, so a
/// retry after a lost answer is a duplicate at Asgard.
pub fn batch_id(epoch: &str, kind: ItemKind, seqs: &[i64]) -> String {
    let mut h = Sha256::new();
    h.update(epoch.as_bytes());
    h.update(kind.name().as_bytes());
    for s in seqs {
        h.update(s.to_le_bytes());
    }
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", kind.name())
}
