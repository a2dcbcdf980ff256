//! Every function of `alien_commands::kv_contract` against [`FirestoreKv`] on the Firestore
//! emulator, each on a project of its own emulator (spec/testing.md).
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_gcp::Service;
use alien_gcp::emulators::{Emulator, unique_name};
use alien_gcp::firestore::{FirestoreKv, FirestoreLocation};

fn location() -> FirestoreLocation {
    FirestoreLocation {
        project_id: unique_name("kv"),
        database_id: "(default)".into(),
        collection: "commands".into(),
    }
}

async fn fresh() -> (Emulator, FirestoreKv) {
    let emulator = Emulator::firestore().await.unwrap();
    let kv = FirestoreKv::new(location(), &emulator.settings(Service::Firestore));
    (emulator, kv)
}

alien_commands::kv_contract_tests!(fresh);

/// The layout of clouds.md, read back over REST: a `k`-prefixed document per key with `value`
/// bytes and an `expiresAt` timestamp, its `updateTime` the version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_follow_the_documented_layout() {
    use alien_commands::{Kv, PutCondition};
    let (emulator, kv) = fresh().await;
    let version = kv
        .put("cmd:1", b"v", PutCondition::Always, Some(std::time::Duration::from_secs(60)))
        .await
        .unwrap()
        .unwrap();
    let location = kv.location();
    let url = format!(
        "{}/v1/projects/{}/databases/(default)/documents/commands/kcmd:1",
        emulator.url, location.project_id
    );
    let doc: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(doc["fields"]["value"]["bytesValue"], "dg==", "{doc}");
    let expires = doc["fields"]["expiresAt"]["timestampValue"].as_str().unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(expires).unwrap();
    let left = expires.timestamp() - chrono::Utc::now().timestamp();
    assert!((55..=61).contains(&left), "expires in {left} s");
    let updated =
        chrono::DateTime::parse_from_rfc3339(doc["updateTime"].as_str().unwrap()).unwrap();
    assert_eq!(u64::try_from(updated.timestamp_micros()).unwrap(), version);
}

/// A KV whose endpoint answers nothing: `ping` fails as unavailable, naming the collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_names_the_collection_when_firestore_does_not_answer() {
    use alien_commands::{Kv, KvError};
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let settings = alien_gcp::GcpSettings::from_env()
        .with_endpoint(Service::Firestore, Some(&format!("127.0.0.1:{port}")));
    let kv = FirestoreKv::new(location(), &settings);
    let err = kv.ping().await.unwrap_err();
    assert!(matches!(err, KvError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("collection `commands`"), "{err}");
}

/// Versioned writers in separate KVs (as separate manager replicas are: no lock of this
/// process orders them) race on one key: Firestore's transactions let exactly one win, the
/// others fail their condition after the lock timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_on_a_version_let_exactly_one_win() {
    use alien_commands::{Kv, PutCondition};
    let emulator = Emulator::firestore().await.unwrap();
    let location = location();
    let settings = emulator.settings(Service::Firestore);
    let replicas: Vec<FirestoreKv> =
        (0..4).map(|_| FirestoreKv::new(location.clone(), &settings)).collect();
    let base = replicas[0].put("race", b"base", PutCondition::Always, None).await.unwrap().unwrap();
    let results = futures_util::future::join_all(replicas.iter().enumerate().map(|(i, kv)| {
        let value = format!("replica-{i}").into_bytes();
        async move { kv.put("race", &value, PutCondition::IfVersion(base), None).await }
    }))
    .await;
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Ok(Some(_))))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let entry = replicas[1].get("race").await.unwrap().unwrap();
    assert_eq!(entry.value, format!("replica-{}", winners[0]).into_bytes());
}
