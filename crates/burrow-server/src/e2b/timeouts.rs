//! The E2B timeout scheduler: once a second, sandboxes past their end time get their on-timeout
//! action. A second's granularity is plenty for timeouts E2B counts in seconds.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::E2bService;
use super::lifecycle::Lifecycles;

const TICK: Duration = Duration::from_secs(1);

/// Runs forever; the server aborts the task on shutdown.
pub async fn run_timeouts(service: Arc<E2bService>, lifecycles: Arc<Lifecycles>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (id, action) in lifecycles.due(Utc::now()) {
            service.expire(&id, action).await;
        }
    }
}
