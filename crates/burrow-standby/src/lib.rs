//! Standby mechanisms for burrow sandboxes.
//!
//! - [`freezer`]: freeze and thaw a cgroup v1 freezer (zero CPU, memory stays resident).
//! - [`pageout`]: push the memory of every process in a cgroup to swap with
//!   `process_madvise(MADV_PAGEOUT)` ("warm standby").
//! - [`reclaim`]: then reclaim the page cache still charged to its memory cgroup
//!   (`memory.force_empty`), so well under a MiB stays resident.
//! - [`zram`]: the compressed in-RAM swap device burrow manages, so paged-out sandbox memory never
//!   lands in clear text on a shared disk.
//! - [`criu`]: checkpoint/restore ("deep standby") through CRIU's RPC (`criu swrk`), with
//!   pre-spawned workers so a restore does not pay CRIU's start-up.
//!
//! Everything here is synchronous and needs host root; call it from a blocking thread in async code.

pub mod cgroup;
pub mod criu;
pub mod freezer;
pub mod meminfo;
pub mod pageout;
pub mod reclaim;
pub mod zram;
