//! Types of burrow's native REST API v1, shared by the server and the CLI.
//!
//! Every type derives serde and utoipa's `ToSchema`, so the server's OpenAPI document is generated
//! from the same definitions the wire format uses.

mod bytes_b64;
pub mod error;
pub mod exec;
pub mod files;
pub mod ids;
pub mod retention;
pub mod sandbox;
pub mod standby;
pub mod template;

pub use error::{ApiError, codes};
pub use exec::{ExecEvent, ExecRequest, PtyControl, PtySize};
pub use files::{FileEntry, FileType};
pub use ids::{SANDBOX_ID_LEN, SANDBOX_ID_PREFIX, is_valid_sandbox_id};
pub use retention::{
    ErasureRecord, Expiration, SandboxUsage, Tombstone, TombstoneList, Usage, UsageReport,
};
pub use sandbox::{CreateSandboxRequest, Sandbox, SandboxList, SandboxState};
pub use standby::{CreateLeaseRequest, Lease, PowerInfo, StandbyRequest, StandbyTier};
pub use template::{
    BuildStepSpec, TemplateBuildEvent, TemplateBuildRequest, TemplateInfo, TemplateList,
    TemplateSource, TemplateUpload, is_valid_sha256_hex,
};

/// Port the daemon listens on by default (`127.0.0.1:7420`).
pub const DEFAULT_PORT: u16 = 7420;

/// Port of the in-sandbox agent (E2B's envd port).
pub const ENVD_PORT: u16 = 49983;
