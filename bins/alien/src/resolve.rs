//! Deployments and groups named by their id (`dep_...`, `dg_...`) or by their name: a name is
//! looked up among what the API key can see and must name exactly one. Text that is neither an id
//! nor a valid name goes to the manager as it is, to be refused there.

use alien_client::{Client, DeploymentQuery, PageParams};
use alien_core::Id;
use alien_core::deployment::check_name;

/// Whether `text` is looked up as a name: a valid name that is not an id.
fn is_name(text: &str) -> bool {
    Id::parse_any(text).is_err() && check_name(text).is_ok()
}

use crate::Failure;

/// The id of the deployment `text` names: an id as it is, else the one deployment of that name.
pub async fn deployment(client: &Client, text: &str) -> Result<String, Failure> {
    if !is_name(text) {
        return Ok(text.to_owned());
    }
    let mut found = Vec::new();
    let mut query = DeploymentQuery { name: Some(text.to_owned()), ..Default::default() };
    loop {
        let page = client.list_deployments(&query).await?;
        found.extend(page.items.into_iter().map(|d| (d.id, d.deployment_group_id)));
        match page.next_cursor {
            Some(cursor) => query.page.cursor = Some(cursor),
            None => break,
        }
    }
    match found.as_slice() {
        [(id, _)] => Ok(id.to_string()),
        [] => Err(Failure::Local(format!(
            "no deployment is named {text:?} (or it is not yours to see)"
        ))),
        several => Err(Failure::Usage(format!(
            "{} deployments are named {text:?}: {}; name one by its id",
            several.len(),
            several
                .iter()
                .map(|(id, group)| format!("{id} (group {group})"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The id of the deployment group `text` names: an id as it is, else the one group of that name.
pub async fn group(client: &Client, text: &str) -> Result<String, Failure> {
    if !is_name(text) {
        return Ok(text.to_owned());
    }
    let mut found = Vec::new();
    let mut page = PageParams::default();
    loop {
        let groups = client.list_groups(&page).await?;
        found.extend(groups.items.into_iter().filter(|g| g.name == text).map(|g| g.id));
        match groups.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }
    match found.len() {
        1 => Ok(found.remove(0).to_string()),
        0 => Err(Failure::Local(format!("no deployment group is named {text:?}"))),
        n => Err(Failure::Usage(format!(
            "{n} deployment groups are named {text:?}: {}; name one by its id",
            found.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ))),
    }
}
