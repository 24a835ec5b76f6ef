//! Templates as the domain sees them: who may use one, and removing one.

use crate::{Core, CoreError, Principal, validate};

/// Whether the principal may use template `name`: server-wide ones, its workspace's, and for
/// the operator every one. Another workspace's template is "not found".
pub async fn check_visible(
    core: &Core,
    principal: &Principal,
    name: &str,
) -> Result<(), CoreError> {
    if let Some(owner) = core.store.template_owner(name).await? {
        principal.check_sees(&owner, "template", name)?;
    }
    Ok(())
}

/// Removes a template (refused while sandboxes use it) and its ownership record.
pub async fn remove_template(core: &Core, name: &str) -> Result<(), CoreError> {
    validate::template_name(name)?;
    let users = core.store.count_sandboxes_using(name).await?;
    let templates = core.templates.clone();
    let owned = name.to_string();
    tokio::task::spawn_blocking(move || templates.remove(&owned, users > 0))
        .await
        .map_err(|e| CoreError::internal(format!("template remove task: {e}")))??;
    core.store.remove_template_owner(name).await?;
    Ok(())
}
