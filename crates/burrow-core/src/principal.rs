//! Who is calling: the operator (the server's first key, which sees and manages everything) or a
//! key of exactly one workspace, with a role in it.

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// A key's role inside its workspace. Ordered: each role can do what the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: lists, info, usage, logs. No call that changes anything or opens a shell.
    Viewer,
    /// Sandboxes and templates: create, exec, files, PTY, tunnels, delete.
    Member,
    /// Also the workspace's keys, audit log and (later) secrets.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Member, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Role, CoreError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| {
                CoreError::Invalid(format!("role '{text}' is not one of viewer, member, admin"))
            })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reach of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The operator key: every workspace, every role, and the workspaces themselves.
    Operator,
    /// One workspace with one role.
    Workspace {
        id: String,
        name: String,
        role: Role,
    },
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The id (`key_…`) of the key that authenticated the call (audit records name it).
    pub key_id: String,
    pub scope: Scope,
}

impl Principal {
    pub fn is_operator(&self) -> bool {
        self.scope == Scope::Operator
    }

    /// The caller's workspace id; `None` for the operator.
    pub fn workspace_id(&self) -> Option<&str> {
        match &self.scope {
            Scope::Operator => None,
            Scope::Workspace { id, .. } => Some(id),
        }
    }

    /// The caller's workspace name; `None` for the operator.
    pub fn workspace_name(&self) -> Option<&str> {
        match &self.scope {
            Scope::Operator => None,
            Scope::Workspace { name, .. } => Some(name),
        }
    }

    /// Whether the caller may see an object owned by workspace `owner`. This is the wall: every
    /// lookup of an owned object goes through it, and a `false` is reported as "not found".
    pub fn sees(&self, owner: &str) -> bool {
        match &self.scope {
            Scope::Operator => true,
            Scope::Workspace { id, .. } => id == owner,
        }
    }

    /// [`Principal::sees`] as a lookup result: `NotFound` (never "forbidden") when it does not.
    pub fn check_sees(&self, owner: &str, kind: &'static str, id: &str) -> Result<(), CoreError> {
        if self.sees(owner) {
            Ok(())
        } else {
            Err(CoreError::NotFound {
                kind,
                id: id.to_string(),
            })
        }
    }

    /// Refuses the call unless the caller has at least `needed` (the operator has every role).
    pub fn require(&self, needed: Role) -> Result<(), CoreError> {
        match &self.scope {
            Scope::Operator => Ok(()),
            Scope::Workspace { role, .. } if *role >= needed => Ok(()),
            Scope::Workspace { role, .. } => Err(CoreError::Forbidden {
                needed: needed.as_str(),
                has: role.as_str(),
            }),
        }
    }

    pub fn require_operator(&self) -> Result<(), CoreError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(CoreError::OperatorOnly)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ws: &str, role: Role) -> Principal {
        Principal {
            key_id: "key_1".into(),
            scope: Scope::Workspace {
                id: ws.into(),
                name: ws.into(),
                role,
            },
        }
    }

    #[test]
    fn a_workspace_key_sees_only_its_own_workspace() {
        let a = key("ws_a", Role::Admin);
        assert!(a.sees("ws_a"));
        assert!(!a.sees("ws_b"));
        assert!(matches!(
            a.check_sees("ws_b", "sandbox", "sb_x"),
            Err(CoreError::NotFound { kind: "sandbox", id }) if id == "sb_x"
        ));
        let op = Principal {
            key_id: "key_0".into(),
            scope: Scope::Operator,
        };
        assert!(op.sees("ws_a") && op.sees("ws_b"));
    }

    #[test]
    fn roles_are_ordered_and_named_in_refusals() {
        let viewer = key("ws_a", Role::Viewer);
        assert!(viewer.require(Role::Viewer).is_ok());
        let err = viewer.require(Role::Member).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this call needs the member role; this key has the viewer role"
        );
        assert!(key("ws_a", Role::Admin).require(Role::Member).is_ok());
        assert!(key("ws_a", Role::Admin).require_operator().is_err());
        assert_eq!(Role::parse("member").unwrap(), Role::Member);
        assert!(Role::parse("owner").is_err());
    }
}
