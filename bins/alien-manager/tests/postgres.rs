//! One manager on PostgreSQL (`[database] url`), against the real binary and Debian's
//! PostgreSQL started by the test: the state directory holds no SQLite file, the commands share
//! the database, what was acknowledged survives a restart; a second replica with another key
//! exits 2 and writes nothing; `backup` and `restore` refuse and say what to use instead.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::database::TestDatabase;
use common::{Manager, running};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_runs_on_postgresql_and_keeps_its_state_across_restarts() {
    let db = TestDatabase::postgres().await;
    let url = db.url().unwrap().to_owned();
    let mut api = Manager::start_on(db, "", &[]).await;
    let (dep, group_token, _token) = running(&mut api).await;
    // A command queued: its state lives in the commands KV, on the same database.
    let body = json!({"deploymentId": dep, "command": "echo", "params": {"mode": "inline", "inlineBase64": ""}});
    let (status, created) =
        api.call(Method::POST, "/v1/commands", Some(&group_token), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let command = created["commandId"].as_str().unwrap().to_owned();

    api.restart_with(|_| async {}).await;
    let got = api.admin(Method::GET, &format!("/v1/deployments/{dep}"), None).await;
    assert_eq!(got["status"], "running", "{got}");
    let got = api.admin(Method::GET, &format!("/v1/commands/{command}"), None).await;
    assert_eq!(got["commandId"], command.as_str(), "{got}");
    let (status, _) = api.call(Method::GET, "/v1/deployments", Some(&group_token), None).await;
    assert_eq!(status, 200, "the group token survived the restart");

    let state = &api.state;
    assert!(!state.join("alien-manager.db").exists(), "no SQLite store beside PostgreSQL");
    assert!(!state.join("commands_kv").exists(), "the commands KV is on PostgreSQL");
    let kv = alien_store_postgres::PostgresKv::connect(&url).await.unwrap();
    use alien_commands::Kv as _;
    assert_eq!(kv.scan("cmd:", None, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_key_exits_2_and_writes_nothing() {
    let db = TestDatabase::postgres().await;
    let url = db.url().unwrap().to_owned();
    let api = Manager::start_on(db, "", &[]).await;
    let (_group, _token) = api.group("kept").await;
    let before = table_counts(&url).await;

    let dir = tempfile::tempdir().unwrap();
    let other_key = "7".repeat(64);
    let out = common::bin()
        .args(["serve", "--host", "127.0.0.1", "--port", "0", "--state-dir"])
        .arg(dir.path().join("state"))
        .env("ALIEN_DATABASE__URL", &url)
        .env("ALIEN_DATABASE__ENCRYPTION_KEY", &other_key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("encryption-key") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert!(!stderr.contains(&other_key), "the key is never printed: {stderr}");
    assert_eq!(table_counts(&url).await, before, "nothing written");
    // The first replica goes on.
    let listed = api.admin(Method::GET, "/v1/deployment-groups", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_refuse_a_store_on_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alien-manager.toml");
    std::fs::write(&file, "[database]\nurl = \"postgres://alien:pw@127.0.0.1:1/alien\"\n").unwrap();
    let archive = dir.path().join("b.tar");
    for command in ["backup", "restore"] {
        let flag = if command == "backup" { "--output" } else { "--input" };
        let out = common::bin()
            .arg(command)
            .arg("-c")
            .arg(&file)
            .arg(flag)
            .arg(&archive)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains("pg_dump") && !stderr.contains("pw@"), "{command}: {stderr}");
        assert!(!archive.exists());
    }
}

/// Rows per table of schema `alien`.
async fn table_counts(url: &str) -> Vec<(String, i64)> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'alien' \
         ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut out = Vec::new();
    for table in tables {
        // Names from the catalogue of our own schema.
        let sql = format!("SELECT count(*) FROM alien.\"{table}\"");
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.unwrap();
        out.push((table, n));
    }
    assert!(!out.is_empty());
    out
}
