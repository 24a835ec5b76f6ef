//! Response bodies that keep their sandbox awake while they are sent.

use std::sync::Arc;

use burrow_core::power::ActivityGuard;

/// A response body that keeps the sandbox awake until it has been sent (or dropped).
pub fn body_with_activity(
    body: axum::body::Body,
    activity: Arc<ActivityGuard>,
) -> axum::body::Body {
    use futures::StreamExt;
    axum::body::Body::from_stream(body.into_data_stream().map(move |chunk| {
        let _ = &activity;
        chunk
    }))
}
