//! Messages of `filesystem.Filesystem` (see proto/filesystem/filesystem.proto), proto3 JSON mapping.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::json::{i64_str, null_default, proto_enum, u32_num};

proto_enum!(
    FileType {
        Unspecified = "FILE_TYPE_UNSPECIFIED" / 0,
        File = "FILE_TYPE_FILE" / 1,
        Directory = "FILE_TYPE_DIRECTORY" / 2,
        Symlink = "FILE_TYPE_SYMLINK" / 3,
    }
);

proto_enum!(
    EventType {
        Unspecified = "EVENT_TYPE_UNSPECIFIED" / 0,
        Create = "EVENT_TYPE_CREATE" / 1,
        Write = "EVENT_TYPE_WRITE" / 2,
        Remove = "EVENT_TYPE_REMOVE" / 3,
        Rename = "EVENT_TYPE_RENAME" / 4,
        Chmod = "EVENT_TYPE_CHMOD" / 5,
    }
);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EntryInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub file_type: FileType,
    pub path: String,
    #[serde(with = "i64_str")]
    pub size: i64,
    #[serde(with = "u32_num")]
    pub mode: u32,
    pub permissions: String,
    pub owner: String,
    pub group: String,
    /// RFC 3339 (google.protobuf.Timestamp JSON form).
    #[serde(alias = "modified_time", skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<String>,
    #[serde(alias = "symlink_target", skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub metadata: BTreeMap<String, String>,
    /// The entry is a symlink; `file_type` is then the type of its target.
    #[serde(alias = "is_symlink", skip_serializing_if = "std::ops::Not::not")]
    pub is_symlink: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PathRequest {
    #[serde(deserialize_with = "null_default")]
    pub path: String,
}
pub type StatRequest = PathRequest;
pub type MakeDirRequest = PathRequest;
pub type RemoveRequest = PathRequest;

/// Shared shape of `StatResponse`, `MakeDirResponse` and `MoveResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EntryResponse {
    pub entry: Option<EntryInfo>,
}
pub type StatResponse = EntryResponse;
pub type MakeDirResponse = EntryResponse;
pub type MoveResponse = EntryResponse;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveResponse {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MoveRequest {
    #[serde(deserialize_with = "null_default")]
    pub source: String,
    #[serde(deserialize_with = "null_default")]
    pub destination: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ListDirRequest {
    #[serde(deserialize_with = "null_default")]
    pub path: String,
    #[serde(with = "u32_num")]
    pub depth: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ListDirResponse {
    #[serde(deserialize_with = "null_default")]
    pub entries: Vec<EntryInfo>,
}

/// Shared shape of `WatchDirRequest` and `CreateWatcherRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WatchRequest {
    #[serde(deserialize_with = "null_default")]
    pub path: String,
    pub recursive: bool,
    #[serde(alias = "include_entry")]
    pub include_entry: bool,
    #[serde(alias = "allow_network_mounts")]
    pub allow_network_mounts: bool,
}
pub type WatchDirRequest = WatchRequest;
pub type CreateWatcherRequest = WatchRequest;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FilesystemEvent {
    pub name: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryInfo>,
}

/// `WatchDirResponse`: the message is only its `event` oneof, so on the wire the
/// variant key sits at the top level (`{"filesystem":{…}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WatchDirResponse {
    Start(Empty),
    Filesystem(Box<FilesystemEvent>),
    Keepalive(Empty),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WatcherIdMessage {
    #[serde(alias = "watcher_id", deserialize_with = "null_default")]
    pub watcher_id: String,
}
pub type CreateWatcherResponse = WatcherIdMessage;
pub type GetWatcherEventsRequest = WatcherIdMessage;
pub type RemoveWatcherRequest = WatcherIdMessage;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GetWatcherEventsResponse {
    #[serde(deserialize_with = "null_default")]
    pub events: Vec<FilesystemEvent>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveWatcherResponse {}
