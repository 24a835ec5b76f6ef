//! The OpenAPI document, generated from the handlers' annotations and the API types.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(title = "burrow API", description = "Native REST API v1 of the burrow sandbox daemon."),
    paths(
        api::health::healthz,
        api::sandboxes::create,
        api::sandboxes::list,
        api::sandboxes::get,
        api::sandboxes::delete,
        api::exec::exec,
        api::files::read,
        api::files::write,
        api::files::remove,
        api::files::list,
        api::files::mkdir,
        api::pty::pty,
        api::tunnel::tunnel,
        api::standby::standby,
        api::standby::resume,
        api::standby::restart,
        api::standby::create_lease,
        api::standby::delete_lease,
        api::templates::list,
        api::templates::delete,
        api::templates::create,
        api::templates::upload_status,
        api::templates::upload_put,
        api::retention::set_expiration,
        api::retention::sandbox_usage,
        api::retention::usage_report,
        api::retention::tombstones,
    ),
    components(schemas(
        burrow_types::ApiError,
        burrow_types::Sandbox,
        burrow_types::SandboxList,
        burrow_types::SandboxState,
        burrow_types::CreateSandboxRequest,
        burrow_types::PowerInfo,
        burrow_types::StandbyTier,
        burrow_types::Lease,
        burrow_types::CreateLeaseRequest,
        burrow_types::StandbyRequest,
        burrow_types::ExecRequest,
        burrow_types::ExecEvent,
        burrow_types::PtyControl,
        burrow_types::PtySize,
        burrow_types::FileEntry,
        burrow_types::FileType,
        burrow_types::TemplateInfo,
        burrow_types::TemplateList,
        burrow_types::TemplateBuildRequest,
        burrow_types::TemplateSource,
        burrow_types::TemplateUpload,
        burrow_types::BuildStepSpec,
        burrow_types::TemplateBuildEvent,
        burrow_types::Expiration,
        burrow_types::ErasureRecord,
        burrow_types::Tombstone,
        burrow_types::TombstoneList,
        burrow_types::Usage,
        burrow_types::SandboxUsage,
        burrow_types::UsageReport,
    )),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document as served at `GET /openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
