//! PostgreSQL for Heimdall's services: one pool per service, one schema per
//! service, migrations that belong to the service that owns the schema, and
//! throwaway databases for tests on the real server.
//!
//! What this crate promises:
//! - [`connect`] opens a pool whose connections see only the service's own
//!   schema first on the `search_path`; unqualified table names in a
//!   service's SQL mean its own tables.
//! - [`migrate`] creates the schema if needed and applies the service's
//!   embedded migrations, recording them in a migrations table inside that
//!   schema, so services migrate independently and concurrently.
//! - [`open`] does both, as every service does at start.
//! - [`testing::TestDb`] creates a fresh database for one test on the server
//!   named by `HEIMDALL_TEST_DATABASE_URL` (default the local server) and drops
//!   it afterwards. Tests never share state and never mock the database.

use std::str::FromStr;
use std::time::Duration;

use heimdall_config::{Problem, Secret, Validate};
use serde::{Deserialize, Serialize};
pub use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub mod testing;

/// The variable prefix of [`StoreConfig`].
pub const PREFIX: &str = "HEIMDALL_DATABASE_";

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL does not parse. The message never contains the password.
    #[error("HEIMDALL_DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    Url(String),
    /// The server could not be reached or refused us.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// Host and database, password removed.
        target: String,
        /// Driver's reason.
        reason: String,
    },
    /// A migration failed; the schema is left at the last good version.
    #[error("migrating schema {schema}: {reason}")]
    Migrate {
        /// The schema being migrated.
        schema: String,
        /// What failed.
        reason: String,
    },
    /// The `HEIMDALL_DATABASE_*` settings are missing or wrong.
    #[error("{0}")]
    Settings(String),
    /// Any other database error.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Database settings (`HEIMDALL_DATABASE_*`), shared by every service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct StoreConfig {
    /// `HEIMDALL_DATABASE_URL` (or `HEIMDALL_DATABASE_URL_FILE`): e.g.
    /// `postgres://heimdall:pw@127.0.0.1:5432/heimdall`. Secret because it may
    /// hold a password; `--print-config` shows it with the password masked.
    /// Default `postgres://postgres@127.0.0.1:5432/heimdall`.
    #[serde(serialize_with = "serialize_url")]
    pub url: Secret,
    /// `HEIMDALL_DATABASE_PASSWORD` (or `HEIMDALL_DATABASE_PASSWORD_FILE`,
    /// the usual way in containers): replaces the password in the URL, so the
    /// URL itself can live in plain configuration. Default unset.
    pub password: Secret,
    /// `HEIMDALL_DATABASE_MAX_CONNECTIONS`: pool size. Default 8.
    pub max_connections: u32,
    /// `HEIMDALL_DATABASE_CONNECT_TIMEOUT`: how long to wait for a
    /// connection from the pool. Default `10s`.
    #[serde(with = "heimdall_config::duration")]
    pub connect_timeout: Duration,
    /// `HEIMDALL_DATABASE_STATEMENT_TIMEOUT`: abort statements that run
    /// longer. Default `30s`.
    #[serde(with = "heimdall_config::duration")]
    pub statement_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/heimdall"),
            password: Secret::default(),
            max_connections: 8,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

impl Validate for StoreConfig {
    fn validate(&self, prefix: &str, problems: &mut Vec<Problem>) {
        let url = self.url.expose();
        let before = problems.len();
        heimdall_config::check::url(
            problems,
            format!("{prefix}URL"),
            url,
            &["postgres", "postgresql"],
        );
        // Only a postgres:// URL is worth handing to the driver's parser.
        if problems.len() == before
            && let Err(e) = PgConnectOptions::from_str(url)
        {
            problems.push(Problem {
                variable: format!("{prefix}URL"),
                message: format!(
                    "not a PostgreSQL URL ({})",
                    scrub(&e.to_string(), self.url.expose())
                ),
            });
        }
        heimdall_config::check::in_range(
            problems,
            format!("{prefix}MAX_CONNECTIONS"),
            self.max_connections,
            1..=256,
        );
    }
}

/// Show a database URL with its password masked.
fn serialize_url<S: serde::Serializer>(url: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&heimdall_config::check::redact_url(url.expose()))
}

/// Remove the URL (and so any password in it) from a driver message.
fn scrub(message: &str, url: &str) -> String {
    if url.is_empty() {
        message.to_string()
    } else {
        message.replace(url, &heimdall_config::check::redact_url(url))
    }
}

/// A schema name must be a plain identifier: it is interpolated into DDL.
fn check_schema(schema: &str) -> Result<(), Error> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Migrate {
            schema: schema.to_string(),
            reason: "schema names are lower-case letters, digits and '_'".into(),
        })
    }
}

/// Where a URL points, without credentials, for messages.
fn target(opts: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or("(default)")
    )
}

/// Open a pool for the service that owns `schema`. Connections put `schema`
/// first on the `search_path` and carry the statement timeout.
pub async fn connect(config: &StoreConfig, schema: &str) -> Result<PgPool, Error> {
    check_schema(schema)?;
    let mut opts = PgConnectOptions::from_str(config.url.expose())
        .map_err(|e| Error::Url(scrub(&e.to_string(), config.url.expose())))?;
    if !config.password.is_empty() {
        opts = opts.password(config.password.expose());
    }
    let opts = opts
        .application_name(&format!("heimdall-{schema}"))
        .options([
            ("search_path", format!("{schema},public")),
            (
                "statement_timeout",
                format!("{}", config.statement_timeout.as_millis()),
            ),
        ]);
    let where_ = target(&opts);
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.connect_timeout)
        .connect_with(opts)
        .await
        .map_err(|e| Error::Connect {
            target: where_,
            reason: scrub(&e.to_string(), config.url.expose()),
        })
}

/// Apply `migrations` (from `sqlx::migrate!("./migrations")` in the service
/// crate) to `schema`, creating it if needed. The record of applied
/// migrations lives in `<schema>._sqlx_migrations`, so each service's history
/// is its own. Safe to call from several replicas at once: sqlx holds an
/// advisory lock while migrating.
pub async fn migrate(pool: &PgPool, schema: &str, migrations: &Migrator) -> Result<(), Error> {
    check_schema(schema)?;
    let err = |reason: String| Error::Migrate {
        schema: schema.to_string(),
        reason,
    };
    let mut conn = pool.acquire().await?;
    // Migrations may run longer than the statement timeout meant for
    // queries, and may wait for another replica's migration lock.
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await?;
    // Two replicas starting together would race on CREATE SCHEMA (a unique
    // violation in pg_namespace); a transaction-scoped lock serialises them.
    // The name passed check_schema: a plain lower-case identifier.
    let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('heimdall.create_schema'))")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(&create)
        .execute(&mut *tx)
        .await
        .map_err(|e| err(e.to_string()))?;
    tx.commit().await?;
    // The connection's search_path starts with `schema`, so sqlx's
    // unqualified `_sqlx_migrations` table is created and read there.
    let result = migrations
        .run(&mut *conn)
        .await
        .map_err(|e| err(e.to_string()));
    sqlx::query("RESET statement_timeout")
        .execute(&mut *conn)
        .await?;
    result
}

/// [`connect`] and [`migrate`]: the pool of a service whose schema is up
/// to date, as every service opens it at start.
pub async fn open(
    config: &StoreConfig,
    schema: &str,
    migrations: &Migrator,
) -> Result<PgPool, Error> {
    let pool = connect(config, schema).await?;
    migrate(&pool, schema, migrations).await?;
    Ok(pool)
}

/// [`open`] with the `HEIMDALL_DATABASE_*` settings alone, read from the
/// environment: for a service's operator subcommands, which need the
/// database and nothing else.
pub async fn open_from_env(schema: &str, migrations: &Migrator) -> Result<PgPool, Error> {
    let mut loader =
        heimdall_config::Loader::from_env().map_err(|e| Error::Settings(e.to_string()))?;
    let store: StoreConfig = loader.section(PREFIX);
    loader
        .finish()
        .map_err(|e| Error::Settings(e.to_string()))?;
    open(&store, schema, migrations).await
}

#[cfg(test)]
mod tests;
