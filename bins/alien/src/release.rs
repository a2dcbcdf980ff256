//! `alien release`: push each `--image` layout to the registry the manager names for each
//! platform, point the stack's resources at the pushed digests, create the release.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use alien_client::registry::{Destination, LayoutImage, PushProgress, PushedImage, Pusher};
use alien_client::{Client, DeploymentQuery};
use alien_core::{CreateRelease, Platform};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::Failure;
use crate::args::ReleaseArgs;
use crate::output::Output;

/// `(resource id, image)` of every container of a stack's JSON.
pub fn stack_images(stack: &Value) -> Vec<(String, String)> {
    let Some(resources) = stack.get("resources").and_then(Value::as_object) else {
        return Vec::new();
    };
    resources
        .iter()
        .filter_map(|(id, resource)| {
            let config = resource.get("config")?;
            if config.get("type").and_then(Value::as_str) != Some("container") {
                return None;
            }
            let code = config.get("code")?;
            let image = code.get("image").and_then(Value::as_str).unwrap_or("(built from source)");
            Some((id.clone(), image.to_owned()))
        })
        .collect()
}

/// `RESOURCE=DIR[:TAG]` options, checked against the stack's containers.
fn parse_images(images: &[String], stack: &Value) -> Result<Vec<(String, LayoutImage)>, Failure> {
    let containers: Vec<String> = stack_images(stack).into_iter().map(|(id, _)| id).collect();
    let mut parsed: Vec<(String, LayoutImage)> = Vec::new();
    for option in images {
        let (resource, layout) = option.split_once('=').ok_or_else(|| {
            Failure::Usage(format!("--image {option:?}: expected RESOURCE=DIR or RESOURCE=DIR:TAG"))
        })?;
        if !containers.iter().any(|c| c == resource) {
            return Err(Failure::Usage(format!(
                "--image {option:?}: the stack has no container {resource:?} (it has: {})",
                containers.join(", ")
            )));
        }
        if parsed.iter().any(|(r, _)| r == resource) {
            return Err(Failure::Usage(format!("--image: {resource:?} is given twice")));
        }
        let layout = LayoutImage::parse(layout);
        if !layout.dir.join("index.json").is_file() {
            return Err(Failure::Usage(format!(
                "--image {option:?}: {} is not an OCI image layout (no index.json)",
                layout.dir.display()
            )));
        }
        parsed.push((resource.to_owned(), layout));
    }
    Ok(parsed)
}

/// Sets `resources.<id>.config.code` of `stack` to the image `reference`.
fn point_at(stack: &mut Value, resource: &str, reference: &str) {
    if let Some(config) = stack.pointer_mut(&format!("/resources/{resource}/config"))
        && let Some(config) = config.as_object_mut()
    {
        config.insert("code".to_owned(), serde_json::json!({"type": "image", "image": reference}));
    }
}

/// Progress of one image's blobs: a bar per blob on a terminal, a line per blob otherwise.
struct Progress {
    resource: String,
    bars: Option<MultiProgress>,
    active: Mutex<HashMap<String, ProgressBar>>,
}

impl Progress {
    fn new(resource: &str, interactive: bool) -> Progress {
        Progress {
            resource: resource.to_owned(),
            bars: interactive.then(MultiProgress::new),
            active: Mutex::new(HashMap::new()),
        }
    }

    fn short(digest: &str) -> &str {
        let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
        hex.get(..12).unwrap_or(hex)
    }
}

impl PushProgress for Progress {
    fn blob_started(&self, digest: &str, size: u64) {
        let Some(bars) = &self.bars else { return };
        let bar = bars.add(ProgressBar::new(size));
        let style = ProgressStyle::with_template("{prefix} {bar:30} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(format!("{} {}", self.resource, Self::short(digest)));
        if let Ok(mut active) = self.active.lock() {
            active.insert(digest.to_owned(), bar);
        }
    }

    fn blob_progress(&self, digest: &str, sent: u64) {
        if let Ok(active) = self.active.lock()
            && let Some(bar) = active.get(digest)
        {
            bar.set_position(sent);
        }
    }

    fn blob_done(&self, digest: &str, skipped: bool) {
        let what = if skipped { "skipped (already in the registry)" } else { "pushed" };
        let bar = self.active.lock().ok().and_then(|mut a| a.remove(digest));
        match bar {
            Some(bar) => {
                if skipped {
                    bar.set_position(bar.length().unwrap_or(0));
                }
                bar.finish_with_message(what);
            }
            None => eprintln!("{} {}: {what}", self.resource, Self::short(digest)),
        }
    }
}

pub async fn release(client: &Client, out: &Output, args: ReleaseArgs) -> Result<(), Failure> {
    let text = std::fs::read_to_string(&args.stack)
        .map_err(|e| Failure::Usage(format!("--stack {}: {e}", args.stack.display())))?;
    let stack: Value = serde_json::from_str(&text)
        .map_err(|e| Failure::Usage(format!("--stack {}: not JSON: {e}", args.stack.display())))?;
    let images = parse_images(&args.images, &stack)?;
    let mut platforms: Vec<Platform> = Vec::new();
    for name in args.platforms.iter().filter(|p| !p.trim().is_empty()) {
        let platform = crate::deployments::parse_platform(name)?;
        if !platforms.contains(&platform) {
            platforms.push(platform);
        }
    }
    if platforms.is_empty() {
        return Err(Failure::Usage("--platforms: name at least one platform".into()));
    }
    let pusher = Pusher::new(client.key().clone())?;
    // One push per registry, repository and layout, whatever the number of platforms using it.
    let mut pushed: HashMap<(String, String, String), PushedImage> = HashMap::new();
    let mut stacks = BTreeMap::new();
    for platform in &platforms {
        let mut platform_stack = stack.clone();
        if !images.is_empty() {
            let resources: Vec<String> =
                images.iter().map(|(resource, _)| resource.clone()).collect();
            let config = client.build_config(*platform, &resources).await?;
            let destination =
                Destination::new(&config.registry, &config.repository_name, client.base_url());
            // A cloud registry (ECR) takes its own short-lived credentials, not the manager token.
            let pusher = match &config.credentials {
                Some(credentials) => {
                    pusher.with_basic(&credentials.username, &credentials.password)
                }
                None => pusher.clone(),
            };
            for (resource, layout) in &images {
                let key = (
                    destination.base.clone(),
                    destination.repository(resource),
                    format!("{}:{}", layout.dir.display(), layout.tag.as_deref().unwrap_or("")),
                );
                if !pushed.contains_key(&key) {
                    let progress = Progress::new(resource, out.interactive);
                    let image = pusher.push(layout, &destination, resource, &progress).await?;
                    eprintln!(
                        "{resource}: {} ({} blobs pushed, {} blobs skipped)",
                        image.reference, image.blobs_pushed, image.blobs_skipped
                    );
                    pushed.insert(key.clone(), image);
                }
                if let Some(image) = pushed.get(&key) {
                    point_at(&mut platform_stack, resource, &image.reference);
                }
            }
        }
        stacks.insert(*platform, platform_stack);
    }
    let body = CreateRelease {
        stack: stacks,
        git_metadata: None,
        version: args.version,
        description: args.description,
    };
    let release = client.create_release(&body).await?;
    let mut updating = 0;
    for platform in &platforms {
        let query = DeploymentQuery { platform: Some(*platform), ..Default::default() };
        let deployments = crate::commands::all_deployments(client, query).await?;
        updating += deployments
            .iter()
            .filter(|d| d.desired_release_id.as_ref() == Some(&release.id))
            .count();
    }
    if out.json {
        return out.print_json(&release);
    }
    let noun = if updating == 1 { "deployment" } else { "deployments" };
    println!("release {}", release.id);
    println!("{updating} {noun} will update to it");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack() -> Value {
        serde_json::json!({"id": "s", "resources": {
            "api": {"config": {"id": "api", "type": "container", "code": {"type": "image", "image": "ghcr.io/a:v1"}}},
            "db": {"config": {"id": "db", "type": "storage"}}
        }})
    }

    #[test]
    fn images_name_containers_of_the_stack() {
        let s = stack();
        assert_eq!(stack_images(&s), vec![("api".to_owned(), "ghcr.io/a:v1".to_owned())]);
        for bad in ["api", "db=/tmp", "web=/tmp"] {
            assert!(matches!(parse_images(&[bad.to_owned()], &s), Err(Failure::Usage(_))), "{bad}");
        }
        let no_layout = parse_images(&["api=/nonexistent".to_owned()], &s);
        assert!(matches!(no_layout, Err(Failure::Usage(m)) if m.contains("index.json")));
    }

    #[test]
    fn pushed_images_replace_the_containers_code() {
        let mut s = stack();
        point_at(&mut s, "api", "localhost:1/artifacts/api@sha256:ab");
        assert_eq!(
            s.pointer("/resources/api/config/code"),
            Some(
                &serde_json::json!({"type": "image", "image": "localhost:1/artifacts/api@sha256:ab"})
            )
        );
    }
}
