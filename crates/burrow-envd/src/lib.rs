//! The envd protocol (E2B compatible): message types for `process.Process` and
//! `filesystem.Filesystem`, Connect framing, and an async client for a burrow agent.

pub mod client;
pub mod connect;
pub mod proto;
pub mod signature;

pub use client::{ByteStream, EnvdClient, EnvdError, ProcessEventStream, WrittenFile};
pub use connect::{Code, ConnectError};
