//! The hardening findings (issue "Hardening"), each against the real binary: what a hostile caller
//! tried and what the manager now answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Manager, running, running_in};
use reqwest::Method;
use serde_json::{Value, json};

/// Revoking the last live admin token would lock every admin out until an offline reset: it is
/// refused (409 naming the rule, with a hint), and the token keeps working. A group token is
/// revoked as before.
#[tokio::test]
async fn the_last_admin_token_cannot_be_revoked() {
    let manager = Manager::start().await;
    let me = manager.admin(Method::GET, "/v1/whoami", None).await;
    let own = me["id"].as_str().unwrap();
    let (status, refused) = manager
        .call(Method::DELETE, &format!("/v1/tokens/{own}"), Some(&manager.admin), None)
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], "CONFLICT");
    assert!(refused["message"].as_str().unwrap().contains("last live admin token"), "{refused}");
    assert!(refused["hint"].as_str().unwrap().contains("admin-token reset"), "{refused}");
    assert_eq!(manager.call(Method::GET, "/v1/whoami", Some(&manager.admin), None).await.0, 200);

    let (group, _) = manager.group("g").await;
    let minted =
        manager.admin(Method::POST, &format!("/v1/deployment-groups/{group}/tokens"), None).await;
    let (status, _) = manager
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{}", minted["id"].as_str().unwrap()),
            Some(&manager.admin),
            None,
        )
        .await;
    assert_eq!(status, 204);
}

/// The raw answer to `PUT /v1/commands/{id}/response` with `body` and `token`.
async fn respond_raw(
    manager: &Manager,
    id: &str,
    token: Option<&str>,
    body: String,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .put(format!("{}/v1/commands/{id}/response", manager.base))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A caller without a token is refused (401) before its body is read, and an error never echoes
/// a large input back: a 1 MB invalid value is quoted by its first characters only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_comes_before_parsing_and_errors_quote_a_short_prefix() {
    let mut manager = Manager::start().await;
    let (dep, group_token, token) = running(&mut manager).await;
    let params = json!({"mode": "inline", "inlineBase64": ""});
    let (status, created) = manager
        .call(
            Method::POST,
            "/v1/commands",
            Some(&group_token),
            Some(json!({"deploymentId": dep, "command": "c", "params": params})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["commandId"].as_str().unwrap();
    let huge = "A".repeat(1 << 20);
    let invalid = json!({"status": huge}).to_string();

    let (status, body) = respond_raw(&manager, id, None, invalid.clone()).await;
    assert_eq!(status, 401, "no token: refused before parsing: {}", &body[..body.len().min(300)]);
    assert!(body.len() < 1024, "{} bytes", body.len());
    let (status, body) =
        respond_raw(&manager, id, Some("ax_admin_nottherightone"), invalid.clone()).await;
    assert_eq!(status, 401, "{}", &body[..body.len().min(300)]);

    let (status, body) = respond_raw(&manager, id, Some(&token), invalid).await;
    assert_eq!(status, 400);
    assert!(body.len() < 2048, "the error quotes a prefix only: {} bytes", body.len());
    let error: Value = serde_json::from_str(&body).unwrap();
    let all = error.to_string();
    assert!(all.contains(&"A".repeat(64)) && !all.contains(&"A".repeat(65)), "{all}");
}

/// The registry is the vendor's: a customer's group or deployment token cannot push a blob, push a
/// manifest over a tag, delete one or list the catalog (403 `DENIED`), and the tag keeps what the
/// admin pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_tokens_cannot_push_delete_or_list_the_registry() {
    use sha2::Digest as _;
    let mut manager = Manager::start().await;
    let (_, group_token, deployment_token) = running(&mut manager).await;
    let client = reqwest::Client::new();
    let config = b"{}".to_vec();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&config)));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config.len()},
        "layers": []
    })
    .to_string();
    let url = |path: &str| format!("{}/v2/{path}", manager.base);
    let push_blob = |token: &str| {
        client
            .post(url(&format!("shared/app/blobs/uploads/?digest={digest}")))
            .basic_auth("x", Some(token))
            .header("content-type", "application/octet-stream")
            .body(config.clone())
            .send()
    };
    let push_manifest = |token: &str, body: String| {
        client
            .put(url("shared/app/manifests/v1"))
            .basic_auth("x", Some(token))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
    };
    assert_eq!(push_blob(&manager.admin).await.unwrap().status(), 201);
    let pushed = push_manifest(&manager.admin, manifest.clone()).await.unwrap();
    assert_eq!(pushed.status(), 201);
    let admin_digest = pushed.headers()["docker-content-digest"].to_str().unwrap().to_owned();
    let other =
        manifest.replace("\"layers\":[]", "\"layers\":[],\"annotations\":{\"by\":\"customer\"}");
    for token in [&group_token, &deployment_token] {
        let attempts = [
            push_blob(token).await.unwrap(),
            push_manifest(token, other.clone()).await.unwrap(),
            client
                .delete(url(&format!("shared/app/manifests/{admin_digest}")))
                .basic_auth("x", Some(token))
                .send()
                .await
                .unwrap(),
            client.get(url("_catalog")).basic_auth("x", Some(token)).send().await.unwrap(),
        ];
        for refused in attempts {
            assert_eq!(refused.status(), 403, "{}", refused.url());
            let body: Value = refused.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
        }
    }
    let head = client
        .head(url("shared/app/manifests/v1"))
        .basic_auth("x", Some(&manager.admin))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["docker-content-digest"].to_str().unwrap(), admin_digest);
}

/// A manifest whose descriptor gives another size than the blob's is refused
/// (`MANIFEST_INVALID`): a client trusting it would read a different length than it was told.
#[tokio::test]
async fn a_manifest_descriptor_with_the_wrong_size_is_refused() {
    use sha2::Digest as _;
    let manager = Manager::start().await;
    let client = reqwest::Client::new();
    let config = b"{}".to_vec();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&config)));
    let pushed = client
        .post(format!("{}/v2/sec/app/blobs/uploads/?digest={digest}", manager.base))
        .bearer_auth(&manager.admin)
        .header("content-type", "application/octet-stream")
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    let manifest = |size: usize| {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": size},
            "layers": []
        })
        .to_string()
    };
    let put = |body: String| {
        client
            .put(format!("{}/v2/sec/app/manifests/v1", manager.base))
            .bearer_auth(&manager.admin)
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
    };
    let refused = put(manifest(config.len() + 1)).await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_INVALID", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("says 3 bytes"), "{body}");
    assert_eq!(put(manifest(config.len())).await.unwrap().status(), 201, "the right size is taken");
}

/// Command payloads are bounded: a command declaring more than `[commands] max-payload-bytes`
/// is refused; an upload of params stops at the first byte past the size the command declared
/// (413, nothing kept, the right size goes through after); a response upload past the limit is
/// refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_payloads_are_bounded_while_they_stream() {
    let mut manager = Manager::start_configured("[commands]\nmax-payload-bytes = 1048576\n").await;
    let (dep, group_token, token) = running(&mut manager).await;
    let create = |size: u64| json!({"deploymentId": dep, "command": "c", "params": {"mode": "storage", "size": size}});
    let (status, refused) = manager
        .call(Method::POST, "/v1/commands", Some(&group_token), Some(create(10 << 40)))
        .await;
    assert_eq!(status, 413, "{refused}");
    assert_eq!(refused["code"], "PAYLOAD_TOO_LARGE");
    assert!(refused["message"].as_str().unwrap().contains("1048576"), "{refused}");

    let (status, created) =
        manager.call(Method::POST, "/v1/commands", Some(&group_token), Some(create(10))).await;
    assert_eq!(status, 201, "{created}");
    let id = created["commandId"].as_str().unwrap().to_owned();
    let put = created["storageUpload"]["putRequest"]["backend"]["url"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let over = client.put(&put).body(vec![7u8; 20]).send().await.unwrap();
    assert_eq!(over.status(), 413);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE", "{body}");
    let complete = |size: usize| json!({"size": size});
    let path = format!("/v1/commands/{id}/upload-complete");
    let (status, r) =
        manager.call(Method::POST, &path, Some(&group_token), Some(complete(20))).await;
    assert_eq!(status, 400, "nothing of the refused upload was kept: {r}");
    assert_eq!(client.put(&put).body(vec![7u8; 10]).send().await.unwrap().status(), 200);
    let (status, r) =
        manager.call(Method::POST, &path, Some(&group_token), Some(complete(10))).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("PENDING")), "{r}");

    // The response: its upload URL takes the manager's limit and no more.
    let lease = json!({"deploymentId": dep, "target": {"resourceId": "api", "resourceType": "container"}, "leaseSeconds": 60});
    let (_, leased) =
        manager.call(Method::POST, "/v1/commands/leases", Some(&token), Some(lease)).await;
    let envelope = &leased["leases"][0]["envelope"];
    let upload =
        envelope["responseHandling"]["storageUploadRequest"]["backend"]["url"].as_str().unwrap();
    let too_big = client.put(upload).body(vec![1u8; (1 << 20) + 1]).send().await.unwrap();
    assert_eq!(too_big.status(), 413);
    assert_eq!(client.put(upload).body(vec![1u8; 1 << 20]).send().await.unwrap().status(), 200);
}

/// A deployment stores at most `[commands] deployment-quota-bytes` of command payloads: params
/// past it are refused at creation (413 with a hint, nothing kept), a response upload past it
/// stops at the first byte over; another customer's deployment is not affected; an ended command
/// is forgotten after `retention-secs` (404), and its bytes leave the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_stores_no_more_than_its_quota_and_ended_commands_free_it() {
    const MIB: u64 = 1 << 20;
    let mut manager = Manager::start_configured(
        "[commands]\nmax-payload-bytes = 1048576\ndeployment-quota-bytes = 2097152\nretention-secs = 1\n",
    )
    .await;
    let (dep, group_token, token) = running(&mut manager).await;
    let (other, other_group_token, _) = running_in(&mut manager, "other").await;
    let client = reqwest::Client::new();
    let create = |dep: &str, size: u64| json!({"deploymentId": dep, "command": "c", "params": {"mode": "storage", "size": size}});
    let post = |token: &str, body: Value| {
        let (manager, token) = (&manager, token.to_owned());
        async move { manager.call(Method::POST, "/v1/commands", Some(&token), Some(body)).await }
    };
    // Two commands of 1 MiB fill the quota: the first is uploaded and queued.
    let (status, first) = post(&group_token, create(&dep, MIB)).await;
    assert_eq!(status, 201, "{first}");
    let first_id = first["commandId"].as_str().unwrap().to_owned();
    let put = first["storageUpload"]["putRequest"]["backend"]["url"].as_str().unwrap();
    assert_eq!(client.put(put).body(vec![7u8; MIB as usize]).send().await.unwrap().status(), 200);
    let path = format!("/v1/commands/{first_id}/upload-complete");
    let (status, r) =
        manager.call(Method::POST, &path, Some(&group_token), Some(json!({"size": MIB}))).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(post(&group_token, create(&dep, MIB)).await.0, 201);

    let (status, refused) = post(&group_token, create(&dep, 1)).await;
    assert_eq!(status, 413, "{refused}");
    assert_eq!(refused["code"], "PAYLOAD_TOO_LARGE");
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("quota of 2097152 bytes") && message.contains(&dep), "{refused}");
    assert!(refused["hint"].as_str().unwrap().contains("retention-secs"), "{refused}");
    // Inline params large enough for the payload store are refused the same way.
    let large_inline = json!({"deploymentId": dep, "command": "c", "params": {"mode": "inline", "inlineBase64": base64_of(100_000)}});
    assert_eq!(post(&group_token, large_inline).await.0, 413);
    // Another customer's deployment has its own quota.
    let (status, r) = post(&other_group_token, create(&other, MIB)).await;
    assert_eq!(status, 201, "{r}");

    // The first command's response cannot be uploaded: no room left, not one byte is kept.
    let lease = json!({"deploymentId": dep, "target": {"resourceId": "api", "resourceType": "container"}, "leaseSeconds": 60});
    let (_, leased) =
        manager.call(Method::POST, "/v1/commands/leases", Some(&token), Some(lease)).await;
    let envelope = &leased["leases"][0]["envelope"];
    assert_eq!(envelope["commandId"], first_id.as_str(), "{leased}");
    let upload =
        envelope["responseHandling"]["storageUploadRequest"]["backend"]["url"].as_str().unwrap();
    let over = client.put(upload).body(vec![1u8; 1]).send().await.unwrap();
    assert_eq!(over.status(), 413);
    let body: Value = over.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("quota"), "{body}");
    let respond = json!({"status": "success", "response": {"mode": "storage", "size": 1}});
    let (status, r) = manager
        .call(
            Method::PUT,
            &format!("/v1/commands/{first_id}/response"),
            Some(&token),
            Some(respond),
        )
        .await;
    assert_eq!(status, 400, "nothing of the refused upload was kept: {r}");

    // The command ends; a second after, it is forgotten and its megabyte is free again.
    let fail = json!({"status": "error", "code": "X", "message": "no room"});
    let (status, r) = manager
        .call(Method::PUT, &format!("/v1/commands/{first_id}/response"), Some(&token), Some(fail))
        .await;
    assert_eq!(status, 200, "{r}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, r) = post(&group_token, create(&dep, MIB)).await;
        if status == 201 {
            break;
        }
        assert_eq!(status, 413, "{r}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended command's bytes were never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, r) = manager
        .call(Method::GET, &format!("/v1/commands/{first_id}"), Some(&group_token), None)
        .await;
    assert_eq!((status, r["code"].as_str()), (404, Some("COMMAND_NOT_FOUND")), "{r}");
}

/// `len` bytes as base64.
fn base64_of(len: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(vec![0u8; len])
}

/// Reads from `stream` until the server closes it (EOF or reset); what it sent before.
async fn until_closed(mut stream: tokio::net::TcpStream, within: std::time::Duration) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => {
                panic!("still open after {within:?}; got {:?}", String::from_utf8_lossy(&got))
            }
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn connect(manager: &Manager) -> tokio::net::TcpStream {
    let addr = manager.base.trim_start_matches("http://").to_owned();
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

/// A raw connection that has sent the head of a blob upload's `PATCH` announcing `length` bytes
/// (an upload session opened in `repo` by the admin), and nothing of its body yet.
async fn upload_head(manager: &Manager, repo: &str, length: u64) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let started = reqwest::Client::new()
        .post(format!("{}/v2/{repo}/blobs/uploads/", manager.base))
        .bearer_auth(&manager.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let mut stream = connect(manager).await;
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n",
        manager.admin
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Idle sockets, half-sent headers and keep-alive connections left idle are closed after
/// `[server] header-read-timeout-secs`; an upload announcing 10^15 bytes and sending none ends
/// after `body-idle-timeout-secs`; a long poll longer than both is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt as _;
    let generous = std::time::Duration::from_secs(60);
    let mut manager = Manager::start_configured(
        "[server]\nheader-read-timeout-secs = 2\nbody-idle-timeout-secs = 2\n",
    )
    .await;
    let mut held = Vec::new();
    for i in 0..200 {
        let mut stream = connect(&manager).await;
        if i % 2 == 1 {
            stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        }
        held.push(tokio::spawn(until_closed(stream, generous)));
    }
    for task in held {
        assert_eq!(task.await.unwrap(), "", "closed without an answer");
    }
    // Keep-alive: answered, then closed once idle.
    let mut stream = connect(&manager).await;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answered = until_closed(stream, generous).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    // An upload that announces 10^15 bytes and sends nothing.
    let stream = upload_head(&manager, "slow/app", 1_000_000_000_000_000).await;
    let answered = until_closed(stream, generous).await;
    assert!(answered.starts_with("HTTP/1.1 4"), "the stalled upload is ended: {answered}");

    // A long poll (5 s) outlives both timeouts: it is the server that waits.
    let (dep, _, token) = running(&mut manager).await;
    let lease = json!({"deploymentId": dep, "target": {"resourceId": "api", "resourceType": "container"}, "waitSeconds": 5, "leaseSeconds": 30});
    let polled = std::time::Instant::now();
    let (status, leases) =
        manager.call(Method::POST, "/v1/commands/leases", Some(&token), Some(lease)).await;
    assert_eq!(status, 200, "{leases}");
    assert_eq!(leases["leases"], json!([]));
    assert!(polled.elapsed() >= std::time::Duration::from_secs(4), "it waited its 5 s");
}

/// Past `[server] max-connections`, a new connection waits until one closes (and the log says
/// the limit was reached); then it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_new_connections_wait() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let manager = Manager::start_configured("[server]\nmax-connections = 4\n").await;
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut stream = connect(&manager).await;
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        holders.push(stream);
    }
    let mut fifth = connect(&manager).await;
    fifth.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let waited =
        tokio::time::timeout(std::time::Duration::from_secs(1), fifth.read(&mut buf)).await;
    assert!(waited.is_err(), "served past the limit: {waited:?}");
    drop(holders.pop());
    let answered = until_closed(fifth, std::time::Duration::from_secs(60)).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let log = manager.server().log().join("\n");
    assert!(log.contains("connection limit reached ([server] max-connections)"), "{log}");
}

/// A body that keeps trickling (a few bytes every half second, never stalling long enough for
/// the idle timeout) is ended once it falls under `[server] min-body-bytes-per-sec` after its
/// grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_upload_is_ended_by_the_minimum_rate() {
    use tokio::io::AsyncWriteExt as _;
    let manager = Manager::start_configured("[server]\nmin-body-bytes-per-sec = 1024\n").await;
    let stream = upload_head(&manager, "drip/app", 1_000_000).await;
    let (mut reader, mut writer) = stream.into_split();
    let drip = tokio::spawn(async move {
        // 8 bytes every 500 ms: 16 B/s, for at most two minutes.
        for _ in 0..240 {
            if writer.write_all(b"drip....").await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        tokio::io::AsyncReadExt::read_buf(&mut reader, &mut answer),
    )
    .await;
    drip.abort();
    assert!(read.is_ok(), "the trickle was not ended");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
}

/// A deployment token reads its own deployment's releases only (list, latest, one); a list page
/// holds at most 100 releases, whatever `limit` asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_token_reads_its_own_releases_only() {
    let mut manager = Manager::start().await;
    let (_, _, token) = running(&mut manager).await;
    let own = manager.admin(Method::GET, "/v1/releases/latest?platform=local", None).await;
    let own_id = own["id"].as_str().unwrap().to_owned();
    let mut others = Vec::new();
    for _ in 0..101 {
        let body = json!({"stack": {"aws": common::fixture("valid-web.json")}});
        let other = manager.admin(Method::POST, "/v1/releases", Some(body)).await;
        others.push(other["id"].as_str().unwrap().to_owned());
    }
    let (status, listed) = manager.call(Method::GET, "/v1/releases", Some(&token), None).await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> =
        listed["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [own_id.as_str()], "its own release only");
    let (status, _) =
        manager.call(Method::GET, &format!("/v1/releases/{}", others[0]), Some(&token), None).await;
    assert_eq!(status, 403);
    let (status, _) =
        manager.call(Method::GET, &format!("/v1/releases/{own_id}"), Some(&token), None).await;
    assert_eq!(status, 200);
    let (status, latest) =
        manager.call(Method::GET, "/v1/releases/latest", Some(&token), None).await;
    assert_eq!((status, latest["id"].as_str()), (200, Some(own_id.as_str())), "{latest}");
    let (status, _) =
        manager.call(Method::GET, "/v1/releases/latest?platform=aws", Some(&token), None).await;
    assert_eq!(status, 404);
    // The admin sees them all, 100 at most per page; a larger page is refused.
    let page = manager.admin(Method::GET, "/v1/releases?limit=100", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 100);
    assert!(page["nextCursor"].is_string(), "{}", page["nextCursor"]);
    let (status, refused) =
        manager.call(Method::GET, "/v1/releases?limit=1000", Some(&manager.admin), None).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["context"]["errors"][0]["path"], "limit", "{refused}");
}

/// The subject of the certificate `port` serves, as `openssl s_client` sees it.
fn served_subject(port: u16) -> String {
    let shown = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&shown.stdout).trim().to_owned()
}

/// `[server] tls-cert`/`tls-key`: the manager serves HTTPS itself (plain HTTP is refused), a
/// renewed certificate is served after SIGHUP without a restart, and files that cannot be served
/// stop `config check` and `serve` with exit 2 naming the key, before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_served_and_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let ca = common::tls::test_ca(dir.path());
    common::tls::leaf(dir.path(), &cert, &key, "first");
    let file = dir.path().join("alien-manager.toml");
    let toml = format!(
        "[server]\ntls-cert = {:?}\ntls-key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    std::fs::write(&file, &toml).unwrap();
    let state = dir.path().join("state");
    let mut cmd = common::serve(&state, &[("ALIEN_DATABASE__ENCRYPTION_KEY", common::TEST_KEY)]);
    cmd.arg("-c").arg(&file);
    let server = common::Server::start(cmd);
    let port = server.port();
    let root = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let client = reqwest::Client::builder().add_root_certificate(root).build().unwrap();
    let health = client.get(format!("https://127.0.0.1:{port}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/health")).await.is_err(),
        "plain HTTP is not served on a TLS port"
    );
    assert!(served_subject(port).contains("CN = first"), "{}", served_subject(port));

    // Renewed in place, then SIGHUP: new connections get the new certificate.
    common::tls::leaf(dir.path(), &cert, &key, "second");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !served_subject(port).contains("CN = second") {
        assert!(std::time::Instant::now() < deadline, "not reloaded: {}", served_subject(port));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(server.terminate().0.success());

    // A certificate file that is not PEM: exit 2 naming the key, nothing created.
    std::fs::write(&cert, "not a certificate").unwrap();
    let fresh = dir.path().join("fresh-state");
    let bad = dir.path().join("bad.toml");
    let toml = format!("{toml}[database]\nstate-dir = {:?}\n", fresh.display().to_string());
    std::fs::write(&bad, toml).unwrap();
    for args in [&["config", "check", "-c"][..], &["serve", "--port", "0", "-c"][..]] {
        let out = common::bin().args(args).arg(&bad).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("server.tls-cert"), "{args:?}: {stderr}");
        assert!(!fresh.exists(), "{args:?}: nothing created");
    }
}
