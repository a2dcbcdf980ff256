//! The embedded registry with real OCI clients (skopeo, umoci): byte-identical round trips,
//! copies between repositories, inspect, and the token scoping of pushes and pulls.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::path::Path;
use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Api, fixture};

fn run(cmd: &mut Command) -> std::process::Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown} (install it with `cargo xtask setup`): {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build_layout(dir: &Path, layers: usize, size: usize) {
    alien_registry_conformance::layout::build_layout(dir, layers, size, 7).unwrap();
}

fn referenced_blobs(layout: &Path) -> Vec<(String, Vec<u8>)> {
    alien_registry_conformance::layout::referenced_blobs(layout).unwrap()
}

/// Pushes the layout in `dir` to `image` with skopeo as the admin.
fn push_as_admin(api: &Api, dir: &Path, image: &str) {
    let src = format!("oci:{}:latest", dir.join("img").display());
    ok(&mut skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("x:{}", api.admin),
        &src,
        &format!("docker://{image}"),
    ]));
}

fn host(api: &Api) -> String {
    api.base.trim_start_matches("http://").to_owned()
}

fn skopeo(args: &[&str]) -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy"]).args(args);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_round_trip_is_byte_identical_and_copies_between_repositories() {
    let api = Api::start().await;
    let work = tempfile::tempdir().unwrap();
    build_layout(work.path(), 2, 256 * 1024);
    let creds = format!("x:{}", api.admin);
    let src = format!("oci:{}:latest", work.path().join("img").display());
    let dest = format!("docker://{}/acme/api:v1", host(&api));
    ok(&mut skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", &creds, &src, &dest]));
    let back = format!("oci:{}:latest", work.path().join("back").display());
    ok(&mut skopeo(&["copy", "--src-tls-verify=false", "--src-creds", &creds, &dest, &back]));
    assert_eq!(
        referenced_blobs(&work.path().join("img")),
        referenced_blobs(&work.path().join("back")),
        "byte-identical manifest, config and layers"
    );

    let other = format!("docker://{}/other/team/copy:v2", host(&api));
    ok(&mut skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        &creds,
        "--dest-creds",
        &creds,
        &dest,
        &other,
    ]));
    let inspected: Value = serde_json::from_str(&ok(&mut skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &creds,
        &other,
    ])))
    .unwrap();
    assert_eq!(inspected["RepoTags"], json!(["v2"]));
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        inspected["Digest"].as_str().unwrap(),
        referenced_blobs(&work.path().join("img"))[0].0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scope_pushes_and_pulls() {
    let api = Api::start().await;
    let work = tempfile::tempdir().unwrap();
    build_layout(work.path(), 1, 64 * 1024);
    let src = format!("oci:{}:latest", work.path().join("img").display());
    let (group, group_token) = api.group("g").await;

    // A group token (held by a customer environment) can neither push nor pull (registry.md);
    // the admin pushes.
    let image = format!("{}/acme/api:v1", host(&api));
    let group_creds = format!("x:{group_token}");
    let push = run(&mut skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &group_creds,
        &src,
        &format!("docker://{image}"),
    ]));
    assert!(!push.status.success(), "group tokens cannot push");
    ok(&mut skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("x:{}", api.admin),
        &src,
        &format!("docker://{image}"),
    ]));
    let denied = run(&mut skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &group_creds,
        &format!("docker://{image}"),
    ]));
    assert!(!denied.status.success());
    ok(&mut skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("x:{}", api.admin),
        &src,
        &format!("docker://{}/secret/thing:v1", host(&api)),
    ]));

    // A deployment token pulls what its release names, and nothing else.
    let mut stack = fixture("valid-web.json");
    stack["resources"]["api"]["config"]["code"]["image"] = json!(image);
    api.admin(Method::POST, "/v1/releases", Some(json!({"stack": {"local": stack}}))).await;
    let (_, deploy_token) = api.deployment(&group, "d1").await;
    let deploy_creds = format!("x:{deploy_token}");
    ok(&mut skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &deploy_creds,
        &format!("docker://{image}"),
    ]));
    let other = run(&mut skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &deploy_creds,
        &format!("docker://{}/secret/thing:v1", host(&api)),
    ]));
    assert!(
        !other.status.success(),
        "a deployment token must not pull repositories its release does not name"
    );
    let push = run(&mut skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &deploy_creds,
        &src,
        &format!("docker://{}/acme/api:v9", host(&api)),
    ]));
    assert!(!push.status.success(), "deployment tokens cannot push");

    // Over plain HTTP: 401 with the Basic challenge, 403 DENIED for a valid token out of scope.
    let client = reqwest::Client::new();
    let r = client.get(format!("{}/v2/", api.base)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"alien-manager\"");
    let r = client
        .get(format!("{}/v2/secret/thing/tags/list", api.base))
        .basic_auth("x", Some(&deploy_token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    let r = client
        .get(format!("{}/v2/_catalog", api.base))
        .bearer_auth(&group_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the catalog is admin only");
    let r = client
        .get(format!("{}/v2/_catalog", api.base))
        .bearer_auth(&api.admin)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["repositories"], json!(["acme/api", "secret/thing"]));
}

/// Podman with the settings of spec/testing.md, its storage in `dir`.
fn podman(dir: &Path) -> Command {
    let conf = dir.join("containers.conf");
    let storage = dir.join("storage.conf");
    if !conf.exists() {
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\nnetns = \"slirp4netns\"\n\
             [engine]\nnetwork_cmd_options = [\"allow_host_loopback=true\"]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        std::fs::write(
            &storage,
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/root\"\n",
                dir.display()
            ),
        )
        .unwrap();
    }
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", conf).env("CONTAINERS_STORAGE_CONF", storage);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pulls_with_a_deployment_token() {
    let api = Api::start().await;
    let work = tempfile::tempdir().unwrap();
    build_layout(work.path(), 1, 128 * 1024);
    let image = format!("{}/acme/web:v3", host(&api));
    push_as_admin(&api, work.path(), &image);
    let mut stack = fixture("valid-web.json");
    stack["resources"]["api"]["config"]["code"]["image"] = json!(image);
    api.admin(Method::POST, "/v1/releases", Some(json!({"stack": {"local": stack}}))).await;
    let (group, _) = api.group("g").await;
    let (_, token) = api.deployment(&group, "d").await;
    let podman_dir = work.path().join("podman");
    std::fs::create_dir_all(&podman_dir).unwrap();
    ok(podman(&podman_dir).args([
        "pull",
        "--tls-verify=false",
        "--creds",
        &format!("x:{token}"),
        &image,
    ]));
    let images = ok(podman(&podman_dir).args(["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert!(images.lines().any(|l| l == image), "{images}");
    let denied = run(podman(&podman_dir).args([
        "pull",
        "--tls-verify=false",
        "--creds",
        "x:ax_deploy_0000000000000000000000000000000000000000",
        &image,
    ]));
    assert!(!denied.status.success(), "an unknown token cannot pull");
}

/// The Python interpreter of the peers' virtualenv (`cargo xtask setup` creates it).
fn peers_python() -> std::path::PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/venv/bin/python");
    assert!(python.exists(), "{} is missing: run `cargo xtask setup`", python.display());
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_pushes_an_artifact_with_a_subject_found_through_referrers() {
    let api = Api::start().await;
    let work = tempfile::tempdir().unwrap();
    build_layout(work.path(), 1, 32 * 1024);
    let image = format!("{}/acme/app:v1", host(&api));
    push_as_admin(&api, work.path(), &image);
    let (subject_digest, subject_bytes) = referenced_blobs(&work.path().join("img")).remove(0);
    std::fs::write(work.path().join("sbom.json"), b"{\"sbom\": true}").unwrap();
    let script = r#"
import sys, oras.client, oras.oci
host, token, repo, digest, size, path = sys.argv[1:]
client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
client.login(username="x", password=token, hostname=host)
subject = oras.oci.Subject(mediaType="application/vnd.oci.image.manifest.v1+json", digest=digest, size=int(size))
for chunked in (False, True):
    response = client.push(target=f"{host}/{repo}:sbom-{int(chunked)}", files=[path], subject=subject,
                           manifest_annotations={"kind": "sbom", "chunked": str(chunked)}, do_chunked=chunked, disable_path_validation=True)
    assert response.status_code in (200, 201), response.text
print(client.get_tags(f"{host}/{repo}"))
"#;
    let out = ok(Command::new(peers_python()).args([
        "-c",
        script,
        &host(&api),
        &api.admin,
        "acme/app",
        &subject_digest,
        &subject_bytes.len().to_string(),
        &work.path().join("sbom.json").display().to_string(),
    ]));
    assert!(out.contains("sbom-0") && out.contains("sbom-1") && out.contains("v1"), "{out}");
    let client = reqwest::Client::new();
    let url = format!("{}/v2/acme/app/referrers/{subject_digest}", api.base);
    let r = client.get(&url).basic_auth("x", Some(&api.admin)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/vnd.oci.image.index.v1+json");
    let index: Value = r.json().await.unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index}");
    assert!(manifests.iter().all(|m| m["annotations"]["kind"] == "sbom"), "{index}");
    let artifact_type = manifests[0]["artifactType"].as_str().unwrap().to_owned();
    let r = client
        .get(&url)
        .query(&[("artifactType", &artifact_type)])
        .basic_auth("x", Some(&api.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let filtered: Value = r.json().await.unwrap();
    assert_eq!(filtered["manifests"].as_array().unwrap().len(), 2);
    let r = client
        .get(format!("{url}?artifactType=application/x-none"))
        .basic_auth("x", Some(&api.admin))
        .send()
        .await
        .unwrap();
    let none: Value = r.json().await.unwrap();
    assert_eq!(none["manifests"], json!([]));
}
