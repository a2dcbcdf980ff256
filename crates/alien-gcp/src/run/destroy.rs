//! Removing what the deployer made for one container: the service (its delete operation
//! followed on later steps, never waited for), then its secrets. What is already gone is done.

use alien_core::DeploymentError;

use super::book::ServiceBook;
use super::{Clients, gcp_error, read_operation, secrets};
use crate::rest::Operation;

/// One step of removing a container's service and secrets; `Ok(false)` while the service's
/// deletion runs.
pub(super) async fn destroy_container(
    clients: &Clients,
    id: &str,
    entry: &mut ServiceBook,
) -> Result<bool, DeploymentError> {
    let fail = |e| gcp_error(e, Some(id));
    if let Some(operation) = entry.deleting.clone() {
        match read_operation(&clients.run, &operation).await {
            Ok(op) if !op.done => return Ok(false),
            Ok(_) => entry.deleting = None,
            // The operation itself may be gone (expired): look at the service again.
            Err(e) if e.not_found() => entry.deleting = None,
            Err(e) => return Err(fail(e)),
        }
    }
    let path = format!("/v2/{}", entry.name);
    let deleted: Result<Operation, _> =
        clients.run.json("Cloud Run delete service", reqwest::Method::DELETE, &path, None).await;
    match deleted {
        Ok(op) if !op.done && !op.name.is_empty() => {
            entry.deleting = Some(op.name);
            entry.operation = None;
            return Ok(false);
        }
        Ok(_) => {}
        Err(e) if e.not_found() => {}
        Err(e) => return Err(fail(e)),
    }
    for secret in entry.secrets.clone() {
        secrets::delete(&clients.secrets, &secret).await.map_err(fail)?;
        entry.secrets.remove(&secret);
    }
    Ok(true)
}
