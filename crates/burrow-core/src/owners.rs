//! Which workspace owns each sandbox, and the one check of a sandbox named by a caller.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::{Core, CoreError, Principal};

/// The one check of a sandbox named by a caller, for every surface (the native API's
/// middleware, the E2B API's lookups): `NotFound`, the same answer, for a sandbox that does not
/// exist and for one of another workspace.
pub async fn check_sandbox(core: &Core, principal: &Principal, id: &str) -> Result<(), CoreError> {
    match sandbox_owner(core, id).await? {
        Some(owner) => principal.check_sees(&owner, "sandbox", id),
        None => Err(CoreError::sandbox_not_found(id)),
    }
}

/// The workspace owning sandbox `id`, if it exists. A sandbox never changes owner, so answers
/// are kept in memory (dropped when the sandbox is forgotten).
pub async fn sandbox_owner(core: &Core, id: &str) -> Result<Option<String>, CoreError> {
    if let Some(owner) = core.sandbox_owners.get(id) {
        return Ok(Some(owner));
    }
    if !burrow_types::is_valid_sandbox_id(id) {
        return Ok(None);
    }
    let owner = core.store.sandbox_workspace(id).await?;
    if let Some(owner) = &owner {
        core.sandbox_owners.insert(id, owner);
    }
    Ok(owner)
}

/// Sandbox id → owning workspace, for the wall.
#[derive(Debug, Default)]
pub struct SandboxOwners {
    map: Mutex<HashMap<String, String>>,
}

impl SandboxOwners {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn get(&self, id: &str) -> Option<String> {
        self.lock().get(id).cloned()
    }
    pub fn insert(&self, id: &str, owner: &str) {
        self.lock().insert(id.to_string(), owner.to_string());
    }
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}
