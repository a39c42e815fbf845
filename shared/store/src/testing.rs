//! Throwaway databases on the real PostgreSQL server, one per test.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

use crate::{Error, StoreConfig};
use heimdall_config::Secret;

/// The server tests use: `HEIMDALL_TEST_DATABASE_URL`, else the local server
/// as the `postgres` superuser over TCP (trust auth, as `make setup` leaves it).
pub fn admin_url() -> String {
    std::env::var("HEIMDALL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test. Dropping it removes the database
/// (closing any connections still open to it).
#[derive(Debug)]
pub struct TestDb {
    name: String,
    admin: String,
    config: StoreConfig,
}

impl TestDb {
    /// Create a new, empty database named `heimdall_test_<random>`.
    pub async fn new() -> Result<Self, Error> {
        let admin = admin_url();
        let name = format!("heimdall_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin_connection(&admin).await?;
        // The name is ours (a prefix and a UUID), never user input.
        let create = format!("CREATE DATABASE {name}");
        conn.execute(sqlx::raw_sql(&create)).await?;
        conn.close().await?;
        let opts = PgConnectOptions::from_str(&admin)
            .map_err(|e| Error::Url(e.to_string()))?
            .database(&name);
        let config = StoreConfig {
            url: Secret::new(opts.to_url_lossy().to_string()),
            ..StoreConfig::default()
        };
        Ok(TestDb {
            name,
            admin,
            config,
        })
    }

    /// Settings that point at this database, as a service would load them.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The database's URL, for handing to a child process.
    pub fn url(&self) -> &str {
        self.config.url.expose()
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

async fn admin_connection(admin: &str) -> Result<PgConnection, Error> {
    PgConnection::connect(admin)
        .await
        .map_err(|e| Error::Connect {
            target: heimdall_config::check::redact_url(admin),
            reason: format!("{e} (is PostgreSQL running? `make setup` starts it)"),
        })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop cannot be async, and the test's runtime may be shutting down:
        // do the cleanup on a thread of its own with its own small runtime.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(_) => return,
            };
            rt.block_on(async move {
                if let Ok(mut conn) = admin_connection(&admin).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = conn.execute(sqlx::raw_sql(&drop)).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}
