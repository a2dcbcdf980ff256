//! The contract suite of the [`Kv`] seam: one function per behaviour, each taking any
//! implementation, so the SQLite KV and the cloud KVs prove the same semantics. Every function
//! assumes an empty store and uses its own keys; a backend's tests call each one from its own
//! `#[tokio::test]` on a fresh store. The TTL checks wait for one TTL (3 s) to pass, polling.
//!
//! The functions panic (through assertions) when the implementation breaks the contract.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use futures_util::future::join_all;

use crate::kv::{
    BatchOutcome, Kv, KvError, KvWrite, MAX_BATCH, MAX_KEY_LEN, MAX_VALUE_LEN, PutCondition,
};

/// Writers in the race tests.
pub const RACERS: usize = 16;

/// TTL used by [`ttl_expiry`] and [`batch_ttl`]: long enough for an entry to be read back before
/// it expires on a loaded machine; the tests then poll until it is gone (see [`until_expired`]).
pub const TTL: Duration = Duration::from_secs(5);
/// How long the TTL tests wait at most for an expired entry to disappear.
pub const EXPIRY_DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `key` is gone from `get` (its TTL passed), polling; panics after
/// [`EXPIRY_DEADLINE`]. Never before `expires_at`: an entry gone early fails the caller.
async fn until_expired(kv: &dyn Kv, key: &str, expires_at: SystemTime) {
    let deadline = std::time::Instant::now() + EXPIRY_DEADLINE;
    while let Some(entry) = kv.get(key).await.unwrap() {
        assert!(std::time::Instant::now() < deadline, "{key} still there {EXPIRY_DEADLINE:?} on");
        assert_eq!(entry.expires_at, Some(expires_at), "{key}: its expiry stays as written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(SystemTime::now() >= expires_at, "{key} expired before its TTL");
}

/// A value is read back byte for byte with its key and version; delete removes it.
pub async fn put_get_delete_round_trip(kv: &dyn Kv) {
    let key = "rt:cmd_01:params";
    assert_eq!(kv.get(key).await.unwrap(), None, "absent key");

    let value: Vec<u8> = (0..=255u8).collect();
    let version = kv.put(key, &value, PutCondition::Always, None).await.unwrap();
    let version = version.expect("an unconditional put always writes");
    assert!(version >= 1, "versions start at 1 or above, got {version}");

    let entry = kv.get(key).await.unwrap().expect("written entry");
    assert_eq!(entry.key, key);
    assert_eq!(entry.value, value, "every byte value survives");
    assert_eq!(entry.version, version, "get returns the version put returned");
    assert_eq!(entry.expires_at, None, "no TTL, no expiry");

    let empty_key = "rt:empty";
    let empty = kv.put(empty_key, b"", PutCondition::Always, None).await.unwrap();
    assert!(empty.is_some());
    assert_eq!(kv.get(empty_key).await.unwrap().expect("empty value").value, b"");

    assert!(kv.delete(key, None).await.unwrap(), "delete of a present key");
    assert_eq!(kv.get(key).await.unwrap(), None, "deleted");
    assert!(!kv.delete(key, None).await.unwrap(), "second delete finds nothing");
    assert!(kv.get(empty_key).await.unwrap().is_some(), "other keys untouched");
}

/// Every write of a key returns a higher version, and get reports the latest.
pub async fn versions_increase_with_every_write(kv: &dyn Kv) {
    let key = "ver:counter";
    let mut last = 0u64;
    for i in 0..5u8 {
        let condition = if i == 0 { PutCondition::IfAbsent } else { PutCondition::Always };
        let version = kv.put(key, &[i], condition, None).await.unwrap().expect("written");
        assert!(version > last, "write {i}: version {version} after {last}");
        last = version;
    }
    let version = kv.put(key, b"v", PutCondition::IfVersion(last), None).await.unwrap();
    let version = version.expect("versioned write at the current version");
    assert!(version > last, "versioned write: {version} after {last}");
    let entry = kv.get(key).await.unwrap().expect("present");
    assert_eq!((entry.value.as_slice(), entry.version), (b"v".as_slice(), version));
}

/// A version is never reused for a key, even after a delete: a holder of the old version (a
/// released lease, say) cannot update or delete the new entry.
pub async fn versions_are_never_reused(kv: &dyn Kv) {
    let key = "ver:reuse";
    let old = kv.put(key, b"first", PutCondition::IfAbsent, None).await.unwrap().unwrap();
    assert!(kv.delete(key, Some(old)).await.unwrap());
    let new = kv.put(key, b"second", PutCondition::IfAbsent, None).await.unwrap().unwrap();
    assert_ne!(new, old, "the re-created key got the version of the deleted one");

    assert_eq!(kv.put(key, b"stale", PutCondition::IfVersion(old), None).await.unwrap(), None);
    assert!(!kv.delete(key, Some(old)).await.unwrap(), "stale versioned delete");
    let entry = kv.get(key).await.unwrap().expect("the new entry survives stale writers");
    assert_eq!((entry.value.as_slice(), entry.version), (b"second".as_slice(), new));
}

/// `IfAbsent` writes only when the key does not exist, and leaves an existing value alone.
pub async fn put_if_absent(kv: &dyn Kv) {
    let key = "abs:lease";
    let version = kv.put(key, b"mine", PutCondition::IfAbsent, None).await.unwrap();
    let version = version.expect("absent key: written");
    assert_eq!(kv.put(key, b"theirs", PutCondition::IfAbsent, None).await.unwrap(), None);
    let entry = kv.get(key).await.unwrap().unwrap();
    assert_eq!((entry.value.as_slice(), entry.version), (b"mine".as_slice(), version));

    assert!(kv.delete(key, None).await.unwrap());
    let again = kv.put(key, b"after-delete", PutCondition::IfAbsent, None).await.unwrap();
    assert!(again.is_some(), "a deleted key is absent again");
}

/// [`RACERS`] concurrent `IfAbsent` writers of one key: exactly one wins, and its value is stored.
pub async fn put_if_absent_race(kv: &dyn Kv) {
    let key = "abs:race";
    let values: Vec<Vec<u8>> = (0..RACERS).map(|i| format!("racer-{i}").into_bytes()).collect();
    let results =
        join_all(values.iter().map(|value| kv.put(key, value, PutCondition::IfAbsent, None))).await;
    let winners: Vec<(usize, u64)> = results
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.unwrap().map(|version| (i, version)))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one put-if-absent wins, got {winners:?}");
    let (winner, version) = winners[0];
    let entry = kv.get(key).await.unwrap().unwrap();
    assert_eq!(entry.value, values[winner], "the stored value is the winner's");
    assert_eq!(entry.version, version);
}

/// `IfVersion` writes only at the current version of a live key.
pub async fn put_if_version(kv: &dyn Kv) {
    let key = "ifv:state";
    assert_eq!(
        kv.put(key, b"x", PutCondition::IfVersion(1), None).await.unwrap(),
        None,
        "absent key: no version matches"
    );
    assert_eq!(kv.get(key).await.unwrap(), None, "a failed versioned put writes nothing");

    let v1 = kv.put(key, b"one", PutCondition::Always, None).await.unwrap().unwrap();
    let v2 = kv.put(key, b"two", PutCondition::IfVersion(v1), None).await.unwrap();
    let v2 = v2.expect("current version: written");
    assert!(v2 > v1);
    assert_eq!(kv.put(key, b"late", PutCondition::IfVersion(v1), None).await.unwrap(), None);
    assert_eq!(kv.put(key, b"ahead", PutCondition::IfVersion(v2 + 1), None).await.unwrap(), None);
    let entry = kv.get(key).await.unwrap().unwrap();
    assert_eq!((entry.value.as_slice(), entry.version), (b"two".as_slice(), v2));
}

/// [`RACERS`] concurrent `IfVersion` writers at the same version: exactly one wins.
pub async fn put_if_version_race(kv: &dyn Kv) {
    let key = "ifv:race";
    let base = kv.put(key, b"base", PutCondition::Always, None).await.unwrap().unwrap();
    let values: Vec<Vec<u8>> = (0..RACERS).map(|i| format!("writer-{i}").into_bytes()).collect();
    let results = join_all(
        values.iter().map(|value| kv.put(key, value, PutCondition::IfVersion(base), None)),
    )
    .await;
    let winners: Vec<(usize, u64)> = results
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.unwrap().map(|version| (i, version)))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one versioned writer wins, got {winners:?}");
    let (winner, version) = winners[0];
    assert!(version > base);
    let entry = kv.get(key).await.unwrap().unwrap();
    assert_eq!((&entry.value, entry.version), (&values[winner], version));
}

/// Delete without a version removes any live entry; with a version only that version.
pub async fn delete_with_and_without_version(kv: &dyn Kv) {
    let key = "del:entry";
    assert!(!kv.delete(key, None).await.unwrap(), "absent key");
    assert!(!kv.delete(key, Some(1)).await.unwrap(), "absent key, versioned");

    let v1 = kv.put(key, b"one", PutCondition::Always, None).await.unwrap().unwrap();
    let v2 = kv.put(key, b"two", PutCondition::Always, None).await.unwrap().unwrap();
    assert!(!kv.delete(key, Some(v1)).await.unwrap(), "old version");
    assert!(!kv.delete(key, Some(v2 + 1)).await.unwrap(), "future version");
    assert_eq!(kv.get(key).await.unwrap().unwrap().version, v2, "a failed delete keeps the entry");
    assert!(kv.delete(key, Some(v2)).await.unwrap(), "current version");
    assert_eq!(kv.get(key).await.unwrap(), None);

    kv.put(key, b"three", PutCondition::Always, None).await.unwrap().unwrap();
    assert!(kv.delete(key, None).await.unwrap(), "unversioned delete");
    assert_eq!(kv.get(key).await.unwrap(), None);
}

/// An entry past its TTL is gone for get, scan, versioned writes and deletes, and a
/// put-if-absent takes the key again; entries without TTL or with a long one stay.
pub async fn ttl_expiry(kv: &dyn Kv) {
    let started = SystemTime::now();
    let short = "ttl:a:short";
    let long = "ttl:a:long";
    let forever = "ttl:a:forever";
    let cleared = "ttl:a:cleared";
    let v_short = kv.put(short, b"s", PutCondition::IfAbsent, Some(TTL)).await.unwrap().unwrap();
    // Read back at once, before the other writes: on a loaded machine (an emulator in a JVM),
    // a few writes can take longer than the TTL.
    let entry = kv.get(short).await.unwrap();
    let read_within = started.elapsed().unwrap_or_default();
    assert!(read_within < TTL, "a write and a read took {read_within:?}, longer than the TTL");
    let entry = entry.expect("visible before its TTL");
    kv.put(long, b"l", PutCondition::Always, Some(Duration::from_secs(3600))).await.unwrap();
    kv.put(forever, b"f", PutCondition::Always, None).await.unwrap();
    kv.put(cleared, b"c", PutCondition::Always, Some(TTL)).await.unwrap();
    kv.put(cleared, b"c2", PutCondition::Always, None).await.unwrap();

    let expires_at = entry.expires_at.expect("a TTL entry reports its expiry");
    assert!(
        expires_at > started && expires_at <= SystemTime::now() + TTL,
        "expiry {TTL:?} after the write"
    );
    assert_eq!(
        kv.get(cleared).await.unwrap().unwrap().expires_at,
        None,
        "put without TTL clears it"
    );

    until_expired(kv, short, expires_at).await;

    assert_eq!(kv.get(short).await.unwrap(), None, "expired entry is invisible to get");
    let keys: Vec<String> =
        kv.scan("ttl:a:", None, 100).await.unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, [cleared, forever, long], "expired entry is invisible to scan");
    assert_eq!(
        kv.put(short, b"stale", PutCondition::IfVersion(v_short), None).await.unwrap(),
        None,
        "an expired entry has no current version"
    );
    assert!(!kv.delete(short, Some(v_short)).await.unwrap(), "expired: nothing to delete");
    assert!(!kv.delete(short, None).await.unwrap(), "expired: nothing to delete");

    let taken = kv.put(short, b"again", PutCondition::IfAbsent, Some(TTL)).await.unwrap();
    let taken = taken.expect("put-if-absent succeeds on an expired key");
    assert_ne!(taken, v_short, "the new holder does not get the expired holder's version");
    assert_eq!(kv.get(short).await.unwrap().unwrap().value, b"again");
    assert!(kv.get(cleared).await.unwrap().is_some(), "TTL cleared by a later put");
}

/// A prefix scan returns exactly the live keys starting with the prefix, in byte order, and
/// `after` and `limit` page through them.
pub async fn scan_prefix_in_key_order(kv: &dyn Kv) {
    let inside = [
        "scan:p:",
        "scan:p:-",
        "scan:p:.x",
        "scan:p:0",
        "scan:p:9z",
        "scan:p::",
        "scan:p:A",
        "scan:p:Z",
        "scan:p:_",
        "scan:p:a",
        "scan:p:a:b",
        "scan:p:z",
        "scan:p:zz",
    ];
    let outside = ["scan:p", "scan:p.x", "scan:o:x", "scan:q:", "scan:P:x", "scan", "xscan:p:a"];
    // Written out of order, so that insertion order cannot pass for key order.
    for key in inside.iter().rev().chain(outside.iter()) {
        kv.put(key, key.as_bytes(), PutCondition::Always, None).await.unwrap().unwrap();
    }
    let mut expected: Vec<&str> = inside.to_vec();
    expected.sort_unstable();

    let entries = kv.scan("scan:p:", None, 100).await.unwrap();
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, expected, "only the prefix, in byte order");
    for entry in &entries {
        assert_eq!(entry.value, entry.key.as_bytes(), "scan returns each key's value");
        assert!(entry.version >= 1);
    }

    let limited = kv.scan("scan:p:", None, 3).await.unwrap();
    assert_eq!(limited.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), expected[..3]);
    assert!(kv.scan("scan:p:", None, 0).await.unwrap().is_empty(), "limit 0");
    let after: Vec<String> = kv
        .scan("scan:p:", Some("scan:p:a"), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(after, ["scan:p:a:b", "scan:p:z", "scan:p:zz"], "strictly after");
    let between: Vec<String> =
        kv.scan("scan:p:", Some("scan:p:Y"), 2).await.unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(between, ["scan:p:Z", "scan:p:_"], "`after` need not be a stored key");
    assert!(kv.scan("scan:p:", Some("scan:p:zz"), 10).await.unwrap().is_empty(), "after the last");
    let zs: Vec<String> =
        kv.scan("scan:p:z", None, 10).await.unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(zs, ["scan:p:z", "scan:p:zz"], "a prefix ending in the highest character");
    assert!(kv.scan("scan:none:", None, 10).await.unwrap().is_empty(), "no match");
}

/// Paging with `after` = the last key of the previous page visits every key exactly once.
pub async fn scan_pagination(kv: &dyn Kv) {
    let mut expected: Vec<String> =
        (0..47).map(|i| format!("page:q:{:x}:{}", (i * 7919) % 101, i)).collect();
    for key in expected.iter().rev() {
        kv.put(key, b"", PutCondition::Always, None).await.unwrap().unwrap();
    }
    kv.put("page:r:0", b"", PutCondition::Always, None).await.unwrap();
    expected.sort_unstable();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = kv.scan("page:q:", after.as_deref(), 10).await.unwrap();
        assert!(page.len() <= 10, "a page holds at most `limit` entries");
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        seen.extend(page.into_iter().map(|e| e.key));
        pages += 1;
        assert!(pages <= 10, "pagination does not terminate");
    }
    assert_eq!(pages, 5, "47 keys in pages of 10");
    assert_eq!(seen, expected, "every key exactly once, in order");
}

/// Values up to [`MAX_VALUE_LEN`] are stored; one byte more is refused and writes nothing.
pub async fn value_size_limit(kv: &dyn Kv) {
    let key = "size:max";
    let max = vec![0xA5u8; MAX_VALUE_LEN];
    let version = kv.put(key, &max, PutCondition::Always, None).await.unwrap();
    assert!(version.is_some(), "exactly {MAX_VALUE_LEN} bytes are accepted");
    assert_eq!(kv.get(key).await.unwrap().unwrap().value, max);

    let over = vec![0x5Au8; MAX_VALUE_LEN + 1];
    let too_large = KvError::ValueTooLarge { size: MAX_VALUE_LEN + 1, max: MAX_VALUE_LEN };
    for condition in [PutCondition::Always, PutCondition::IfVersion(version.unwrap())] {
        assert_eq!(kv.put(key, &over, condition, None).await, Err(too_large.clone()));
    }
    let entry = kv.get(key).await.unwrap().unwrap();
    assert_eq!((entry.value, Some(entry.version)), (max, version), "a refused put writes nothing");

    let fresh = "size:over";
    assert_eq!(kv.put(fresh, &over, PutCondition::IfAbsent, None).await, Err(too_large));
    assert_eq!(kv.get(fresh).await.unwrap(), None, "a refused put writes nothing");
}

/// Keys of 1..=512 of `[A-Za-z0-9-_:.]` work everywhere; any other key is `InvalidKey` for get,
/// put, delete and as a scan prefix or `after`.
pub async fn key_charset(kv: &dyn Kv) {
    let longest = "k".repeat(MAX_KEY_LEN);
    let valid = [
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "abcdefghijklmnopqrstuvwxyz",
        "0123456789",
        "-",
        "_",
        ":",
        ".",
        "..",
        "idem:0f:A-b_c.d",
        longest.as_str(),
    ];
    for key in valid {
        let version = kv.put(key, key.as_bytes(), PutCondition::Always, None).await;
        assert!(matches!(version, Ok(Some(_))), "{key:?} is a valid key: {version:?}");
        assert_eq!(kv.get(key).await.unwrap().unwrap().value, key.as_bytes(), "{key:?}");
        let scanned = kv.scan(key, None, 1).await.unwrap();
        assert_eq!(scanned.first().map(|e| e.key.as_str()), Some(key), "scan {key:?}");
        assert!(kv.delete(key, None).await.unwrap(), "delete {key:?}");
    }

    let too_long = "k".repeat(MAX_KEY_LEN + 1);
    let invalid = [
        "",
        too_long.as_str(),
        "a/b",
        "a b",
        "tab\tkey",
        "line\nkey",
        "nul\0key",
        "caf\u{e9}",
        "\u{1F600}",
        "semi;colon",
        "star*",
        "percent%2F",
        "back\\slash",
    ];
    for key in invalid {
        let shown = key.chars().take(20).collect::<String>();
        let is_invalid = |r: &Result<_, KvError>| matches!(r, Err(KvError::InvalidKey(_)));
        assert!(is_invalid(&kv.get(key).await.map(|_| ())), "get {shown:?}");
        for condition in [PutCondition::Always, PutCondition::IfAbsent, PutCondition::IfVersion(1)]
        {
            let put = kv.put(key, b"v", condition, None).await.map(|_| ());
            assert!(is_invalid(&put), "put {shown:?} {condition:?}");
        }
        assert!(is_invalid(&kv.delete(key, None).await.map(|_| ())), "delete {shown:?}");
        assert!(is_invalid(&kv.delete(key, Some(1)).await.map(|_| ())), "delete {shown:?}");
        assert!(is_invalid(&kv.scan(key, None, 10).await.map(|_| ())), "scan prefix {shown:?}");
        if !key.is_empty() {
            let after = kv.scan("k", Some(key), 10).await.map(|_| ());
            assert!(is_invalid(&after), "scan after {shown:?}");
        }
    }
    assert!(kv.scan("", None, 10).await.is_err(), "the empty prefix is refused");
}

/// A working store answers `ping`.
pub async fn ping(kv: &dyn Kv) {
    kv.ping().await.expect("a fresh store answers ping");
}

/// A batch applies every write, returning the new versions in order; deletes report `None`.
pub async fn batch_applies_all(kv: &dyn Kv) {
    let old = kv.put("batch:old", b"x", PutCondition::Always, None).await.unwrap().unwrap();
    let outcome = kv
        .write_batch(vec![
            KvWrite::Put {
                key: "batch:a".into(),
                value: b"a".to_vec(),
                condition: PutCondition::IfAbsent,
                ttl: None,
            },
            KvWrite::Delete { key: "batch:old".into(), version: Some(old) },
            KvWrite::put("batch:b", b"b".to_vec()),
            KvWrite::delete("batch:never-written"),
        ])
        .await
        .unwrap();
    let BatchOutcome::Applied(versions) = outcome else { panic!("applied: {outcome:?}") };
    assert_eq!(versions.len(), 4, "one result per write");
    assert_eq!(versions[1], None, "a delete has no version");
    assert_eq!(versions[3], None, "deleting a missing key without version is not a failure");
    let a = kv.get("batch:a").await.unwrap().expect("batch:a written");
    let b = kv.get("batch:b").await.unwrap().expect("batch:b written");
    assert_eq!((a.value.as_slice(), Some(a.version)), (&b"a"[..], versions[0]));
    assert_eq!((b.value.as_slice(), Some(b.version)), (&b"b"[..], versions[2]));
    assert!(a.version > old && b.version > old, "versions keep increasing");
    assert_eq!(kv.get("batch:old").await.unwrap(), None, "deleted in the batch");
    let empty = kv.write_batch(Vec::new()).await.unwrap();
    assert_eq!(empty, BatchOutcome::Applied(Vec::new()), "an empty batch is a no-op");
}

/// A failed condition anywhere in a batch writes nothing and names the write.
pub async fn batch_is_atomic(kv: &dyn Kv) {
    let held = kv.put("atomic:held", b"1", PutCondition::Always, None).await.unwrap().unwrap();
    let cases: Vec<(KvWrite, &str)> = vec![
        (
            KvWrite::Put {
                key: "atomic:held".into(),
                value: b"2".to_vec(),
                condition: PutCondition::IfAbsent,
                ttl: None,
            },
            "put-if-absent of a present key",
        ),
        (
            KvWrite::Put {
                key: "atomic:held".into(),
                value: b"2".to_vec(),
                condition: PutCondition::IfVersion(held + 1000),
                ttl: None,
            },
            "put at a wrong version",
        ),
        (
            KvWrite::Put {
                key: "atomic:missing".into(),
                value: b"2".to_vec(),
                condition: PutCondition::IfVersion(held),
                ttl: None,
            },
            "put at a version of a missing key",
        ),
        (
            KvWrite::Delete { key: "atomic:held".into(), version: Some(held + 1000) },
            "delete at a wrong version",
        ),
        (
            KvWrite::Delete { key: "atomic:missing".into(), version: Some(held) },
            "delete of a missing key at a version",
        ),
    ];
    for (failing, what) in cases {
        let outcome = kv
            .write_batch(vec![
                KvWrite::put("atomic:first", b"f".to_vec()),
                KvWrite::delete("atomic:held-too"),
                failing,
                KvWrite::put("atomic:last", b"l".to_vec()),
            ])
            .await
            .unwrap();
        assert_eq!(outcome, BatchOutcome::ConditionFailed(2), "{what}");
        assert_eq!(kv.get("atomic:first").await.unwrap(), None, "{what}: nothing written");
        assert_eq!(kv.get("atomic:last").await.unwrap(), None, "{what}: nothing written");
        let entry = kv.get("atomic:held").await.unwrap().expect("still there");
        assert_eq!((entry.value.as_slice(), entry.version), (&b"1"[..], held), "{what}");
    }
}

/// Batches race like single writes: of many batches claiming one version, exactly one wins, and
/// the winner's other writes are all there while the losers' are not.
pub async fn batch_race(kv: &dyn Kv) {
    let held = kv.put("brace:meta", b"0", PutCondition::Always, None).await.unwrap().unwrap();
    let results = join_all((0..RACERS).map(|i| {
        kv.write_batch(vec![
            KvWrite::Put {
                key: "brace:meta".into(),
                value: i.to_string().into_bytes(),
                condition: PutCondition::IfVersion(held),
                ttl: None,
            },
            KvWrite::put(format!("brace:side:{i:02}"), b"s".to_vec()),
        ])
    }))
    .await;
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Ok(BatchOutcome::Applied(_))))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one batch wins: {results:?}");
    for r in &results {
        assert!(
            matches!(r, Ok(BatchOutcome::Applied(_)) | Ok(BatchOutcome::ConditionFailed(0))),
            "{r:?}"
        );
    }
    let meta = kv.get("brace:meta").await.unwrap().unwrap();
    assert_eq!(meta.value, winners[0].to_string().into_bytes(), "the winner's value");
    let sides = kv.scan("brace:side:", None, 100).await.unwrap();
    let keys: Vec<&str> = sides.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, vec![format!("brace:side:{:02}", winners[0])], "only the winner's side write");
}

/// TTLs in a batch expire like those of single puts.
pub async fn batch_ttl(kv: &dyn Kv) {
    let written = SystemTime::now();
    let outcome = kv
        .write_batch(vec![
            KvWrite::Put {
                key: "bttl:short".into(),
                value: b"s".to_vec(),
                condition: PutCondition::Always,
                ttl: Some(TTL),
            },
            KvWrite::put("bttl:long", b"l".to_vec()),
        ])
        .await
        .unwrap();
    assert!(matches!(outcome, BatchOutcome::Applied(_)), "{outcome:?}");
    let short = kv.get("bttl:short").await.unwrap().expect("live before its TTL");
    let expires = short.expires_at.expect("an expiry");
    let now = SystemTime::now();
    assert!(expires > written && expires <= now + TTL, "expiry TTL after the write");
    until_expired(kv, "bttl:short", expires).await;
    assert_eq!(kv.get("bttl:short").await.unwrap(), None, "expired");
    assert!(kv.get("bttl:long").await.unwrap().is_some(), "no TTL, no expiry");
}

/// Batches that are too large, write a key twice, or carry a bad key or value are refused and
/// write nothing.
pub async fn batch_limits(kv: &dyn Kv) {
    let too_many: Vec<KvWrite> =
        (0..=MAX_BATCH).map(|i| KvWrite::put(format!("blim:{i:03}"), b"v".to_vec())).collect();
    assert!(matches!(kv.write_batch(too_many).await, Err(KvError::InvalidBatch(_))));
    let at_limit: Vec<KvWrite> =
        (0..MAX_BATCH).map(|i| KvWrite::put(format!("blim:ok:{i:03}"), b"v".to_vec())).collect();
    assert!(
        matches!(kv.write_batch(at_limit).await, Ok(BatchOutcome::Applied(v)) if v.len() == MAX_BATCH)
    );
    let twice = vec![KvWrite::put("blim:twice", b"1".to_vec()), KvWrite::delete("blim:twice")];
    assert!(matches!(kv.write_batch(twice).await, Err(KvError::InvalidBatch(_))));
    let bad_key =
        vec![KvWrite::put("blim:a", b"1".to_vec()), KvWrite::put("blim:bad key", b"1".to_vec())];
    assert!(matches!(kv.write_batch(bad_key).await, Err(KvError::InvalidKey(_))));
    let big = vec![
        KvWrite::put("blim:b", b"1".to_vec()),
        KvWrite::put("blim:big", vec![0u8; MAX_VALUE_LEN + 1]),
    ];
    assert!(matches!(kv.write_batch(big).await, Err(KvError::ValueTooLarge { .. })));
    for key in ["blim:000", "blim:twice", "blim:a", "blim:b"] {
        assert_eq!(kv.get(key).await.unwrap(), None, "{key}: refused batches write nothing");
    }
}

/// This file, for the completeness check of [`crate::kv_contract_tests`].
#[doc(hidden)]
pub const SOURCE: &str = include_str!("kv_contract.rs");

/// The names of the suite's functions in `source` (its `pub async fn`s).
#[doc(hidden)]
pub fn function_names(source: &str) -> Vec<&str> {
    source
        .lines()
        .filter_map(|line| line.strip_prefix("pub async fn "))
        .filter_map(|rest| rest.split('(').next())
        .collect()
}

/// One `#[tokio::test]` per function of the suite, each on a fresh store, and a test that no
/// function of the suite is left out. `$fresh` is an async fn returning `(guard, store)`: the
/// guard (a temporary directory, an emulator process) lives until the test ends.
///
/// ```ignore
/// async fn fresh() -> (tempfile::TempDir, SqliteKv) { ... }
/// alien_commands::kv_contract_tests!(fresh);
/// ```
#[macro_export]
macro_rules! kv_contract_tests {
    ($fresh:path) => {
        $crate::kv_contract_tests!(@run $fresh;
            put_get_delete_round_trip, versions_increase_with_every_write,
            versions_are_never_reused, put_if_absent, put_if_absent_race, put_if_version,
            put_if_version_race, delete_with_and_without_version, ttl_expiry,
            scan_prefix_in_key_order, scan_pagination, value_size_limit, key_charset, ping,
            batch_applies_all, batch_is_atomic, batch_race, batch_ttl, batch_limits);
    };
    (@run $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, store) = $fresh().await;
                $crate::kv_contract::$name(&store).await;
            }
        )*

        /// Every function of the suite is among those run above.
        #[test]
        fn every_contract_function_runs() {
            let run: &[&str] = &[$(stringify!($name)),*];
            let suite = $crate::kv_contract::function_names($crate::kv_contract::SOURCE);
            assert!(suite.len() >= 10, "found the suite's functions: {suite:?}");
            for name in suite {
                assert!(run.contains(&name), "kv_contract::{name} is not run");
            }
        }
    };
}
