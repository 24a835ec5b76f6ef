//! The template routes burrow serves: `GET /templates/aliases/{alias}` (`Template.exists`).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};

use crate::backend::E2bBackend;
use crate::error::ApiError;
use crate::extract::Caller;
use crate::wire::TemplateAliasResponse;

/// 200 `{templateID, public}` when the template exists, 404 (E2B's error body) when not: the SDK
/// reads 404 as "does not exist" and 200 as "exists".
pub async fn alias<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    alias: Result<Path<String>, PathRejection>,
) -> Result<Json<TemplateAliasResponse>, ApiError> {
    let Path(alias) = alias.map_err(|e| ApiError::bad_request(format!("invalid alias: {e}")))?;
    let found = backend.resolve_template(&principal, &alias).await?;
    Ok(Json(TemplateAliasResponse {
        template_id: found.template_id,
        public: found.public,
    }))
}
