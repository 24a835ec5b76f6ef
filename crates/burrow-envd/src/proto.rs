//! Message types of the envd services, as serde structs using the proto3 JSON mapping
//! (lowerCamelCase names, snake_case accepted, int64 as strings, bytes as base64,
//! enums by name, oneofs as single-key objects, omitted fields = defaults).

pub mod filesystem;
mod json;
pub mod process;

#[cfg(test)]
mod tests;
