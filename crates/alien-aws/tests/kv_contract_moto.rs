//! Every function of `alien_commands::kv_contract` against [`DynamoKv`] on moto, each on a fresh
//! table of its own moto server (spec/testing.md).
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_aws::DynamoKv;
use alien_aws::moto::{Moto, unique_name};

async fn fresh() -> (Moto, DynamoKv) {
    let moto = Moto::start().await.unwrap();
    let kv = DynamoKv::connect(&unique_name("kv"), &moto.settings()).await;
    kv.create_table().await.unwrap();
    (moto, kv)
}

alien_commands::kv_contract_tests!(fresh);

/// The layout of clouds.md, read back with the SDK: items in `bucket_N` partitions under their
/// key, a numeric version, and the TTL attribute in whole epoch seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_follow_the_documented_layout() {
    use alien_commands::{Kv, PutCondition};
    use aws_sdk_dynamodb::types::AttributeValue;
    let (moto, kv) = fresh().await;
    let version = kv
        .put("cmd:1", b"v", PutCondition::Always, Some(std::time::Duration::from_secs(60)))
        .await
        .unwrap()
        .unwrap();
    let sdk = moto.settings().load().await;
    let items = aws_sdk_dynamodb::Client::new(&sdk)
        .scan()
        .table_name(kv.table())
        .send()
        .await
        .unwrap()
        .items
        .unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(item["pk"], AttributeValue::S(alien_aws::dynamodb::bucket("cmd:1")));
    assert_eq!(item["sk"], AttributeValue::S("cmd:1".into()));
    assert_eq!(item["version"], AttributeValue::N(version.to_string()));
    let AttributeValue::N(ttl) = &item["ttl"] else { panic!("ttl: {:?}", item["ttl"]) };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let ttl: u64 = ttl.parse().unwrap();
    assert!((now.as_secs() + 55..=now.as_secs() + 61).contains(&ttl), "ttl {ttl}");
}

/// A missing table: `ping` names it and says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_names_a_missing_table() {
    use alien_commands::Kv;
    let moto = Moto::start().await.unwrap();
    let kv = DynamoKv::connect("alien-no-such-table", &moto.settings()).await;
    let err = kv.ping().await.unwrap_err().to_string();
    assert!(err.contains("alien-no-such-table") && err.contains("does not exist"), "{err}");
}
