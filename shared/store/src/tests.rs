use super::*;
use crate::testing::TestDb;
use sqlx::Connection;

static DEMO: Migrator = sqlx::migrate!("tests/migrations_demo");

#[tokio::test]
async fn each_service_migrates_its_own_schema_independently() {
    let db = TestDb::new().await.expect("test database");
    let alpha = connect(db.config(), "alpha").await.expect("pool");
    let beta = connect(db.config(), "beta").await.expect("pool");
    // Concurrently, as two services and a second replica of one starting
    // together would.
    let alpha_replica = connect(db.config(), "alpha").await.expect("pool");
    let (a, a2, b) = tokio::join!(
        migrate(&alpha, "alpha", &DEMO),
        migrate(&alpha_replica, "alpha", &DEMO),
        migrate(&beta, "beta", &DEMO)
    );
    a.expect("alpha migrated");
    a2.expect("the second alpha replica found it migrated");
    b.expect("beta migrated");
    // Running again is a no-op.
    migrate(&alpha, "alpha", &DEMO).await.expect("idempotent");

    sqlx::query("INSERT INTO items (uid, seen, note) VALUES ('a', 1, 'only in alpha')")
        .execute(&alpha)
        .await
        .expect("insert");
    let in_beta: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(&beta)
        .await
        .expect("count");
    assert_eq!(in_beta, 0, "beta sees its own table, not alpha's");

    let history: Vec<(String, i64)> = sqlx::query_as(
        "SELECT table_schema::text, count(*) FROM information_schema.tables \
         WHERE table_name IN ('items', '_sqlx_migrations') GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&alpha)
    .await
    .expect("catalog");
    assert_eq!(history, [("alpha".to_string(), 2), ("beta".to_string(), 2)]);
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM alpha._sqlx_migrations")
        .fetch_one(&alpha)
        .await
        .expect("migrations");
    assert_eq!(applied, 2);
}

#[tokio::test]
async fn a_test_database_is_gone_after_the_test() {
    let name = {
        let db = TestDb::new().await.expect("test database");
        let pool = connect(db.config(), "gamma").await.expect("pool");
        sqlx::query("SELECT 1").execute(&pool).await.expect("query");
        // The pool is still open when the database is dropped: FORCE closes it.
        db.name().to_string()
    };
    let mut admin = sqlx::PgConnection::connect(&testing::admin_url())
        .await
        .expect("admin");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .expect("catalog");
    assert_eq!(left, 0);
}

#[tokio::test]
async fn connection_errors_name_the_server_but_never_the_password() {
    let config = StoreConfig {
        url: Secret::new("postgres://heimdall:very-secret-hsk9canary-pw@127.0.0.1:1/heimdall"),
        connect_timeout: std::time::Duration::from_secs(2),
        ..StoreConfig::default()
    };
    let err = connect(&config, "delta")
        .await
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1/heimdall"), "{text}");
    assert!(!text.contains("very-secret-hsk9canary-pw"), "{text}");
}

#[test]
fn schema_names_are_checked_before_they_reach_sql() {
    assert!(check_schema("fingerprint").is_ok());
    assert!(check_schema("enigma_uploader").is_ok());
    for bad in ["", "Alpha", "a;drop", "1abc", "x y"] {
        assert!(check_schema(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_bad_url_is_reported_without_its_password() {
    let mut loader = heimdall_config::Loader::from_parts(
        [
            (
                "HEIMDALL_DATABASE_URL",
                "mysql://u:top-hsk9canary-secret@h/db",
            ),
            ("HEIMDALL_DATABASE_MAX_CONNECTIONS", "0"),
        ],
        None,
    )
    .expect("loader");
    let _: StoreConfig = loader.section(PREFIX);
    let err = loader.finish().expect_err("bad");
    let text = err.to_string();
    assert!(text.contains("HEIMDALL_DATABASE_URL"), "{text}");
    assert!(text.contains("HEIMDALL_DATABASE_MAX_CONNECTIONS"), "{text}");
    assert!(!text.contains("top-hsk9canary-secret"), "{text}");
}
