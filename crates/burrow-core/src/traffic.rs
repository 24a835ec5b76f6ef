//! Private sandbox ports: a sandbox created with `public_traffic: false` gets a traffic access
//! token, and the proxy serves its ports (all but the agent's, which has its own token) only to
//! requests that carry it (E2B's `allowPublicTraffic: false` and `e2b-traffic-access-token`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use burrow_envd::signature::constant_time_eq;

use crate::{Core, CoreError};

/// The header a request to a private sandbox port must carry.
pub const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// What the proxy may do with a request for a sandbox port.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Public ports, or the right token.
    Admit,
    /// A private sandbox and no token.
    MissingToken,
    /// A private sandbox and another token.
    WrongToken,
}

/// Whether a request carrying `presented` (the header's value, if any) may reach sandbox `id`'s
/// ports. A sandbox that does not exist is admitted here: the proxy answers "not found" for it
/// next, as for any other. Never wakes the sandbox.
pub async fn admit(
    core: &Core,
    id: &str,
    presented: Option<&[u8]>,
) -> Result<Admission, CoreError> {
    let token = match core.traffic_tokens.get(id) {
        Some(token) => token,
        None => {
            if crate::owners::sandbox_owner(core, id).await?.is_none() {
                return Ok(Admission::Admit);
            }
            let token = core.store.traffic_token(id).await?;
            core.traffic_tokens.insert(id, token.clone());
            token
        }
    };
    Ok(match (token, presented) {
        (None, _) => Admission::Admit,
        (Some(_), None) => Admission::MissingToken,
        (Some(token), Some(presented)) if constant_time_eq(token.as_bytes(), presented) => {
            Admission::Admit
        }
        (Some(_), Some(_)) => Admission::WrongToken,
    })
}

/// Each sandbox's token (`None`: public), as stored; a sandbox's token never changes, so
/// answers are kept until the sandbox is forgotten.
#[derive(Debug, Default)]
pub struct TrafficTokens {
    map: Mutex<HashMap<String, Option<String>>>,
}

impl TrafficTokens {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Option<String>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn get(&self, id: &str) -> Option<Option<String>> {
        self.lock().get(id).cloned()
    }
    pub fn insert(&self, id: &str, token: Option<String>) {
        self.lock().insert(id.to_string(), token);
    }
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}
