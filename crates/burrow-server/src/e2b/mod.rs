//! burrow's E2B control plane: [`E2bService`] implements [`burrow_e2b::E2bBackend`] over the
//! sandbox service, [`route_e2b_api`] serves it on `api.{domain}` (and on E2B's paths on
//! any host, for `E2B_API_URL=http://host:7420`), and [`run_timeouts`] applies
//! E2B end times (kill, or pause once standby is available).
//!
//! burrow is single-tenant: every valid API key (`bw_…` or `e2b_…`) sees every sandbox, as on the
//! native API. E2B metadata is stored as burrow labels, so `burrow ls --label k=v` finds E2B
//! sandboxes too.

mod backend;
mod dispatch;
pub mod lifecycle;
pub mod metrics;
mod template_builds;
mod timeouts;

pub use backend::E2bService;
pub use dispatch::{E2bRouter, route_e2b_api};
pub use timeouts::run_timeouts;
