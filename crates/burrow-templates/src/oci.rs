//! Importing an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`).
//!
//! Every blob is checked against its descriptor's sha256 digest and size before use. The layers
//! are flattened, in order, into one layer: each layer's whiteouts (`.wh.<name>`,
//! `.wh..wh..opq`) are applied to what the layers below produced, then its entries are extracted.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::base::report;
use crate::error::IoContext;
use crate::fsutil;
use crate::import::DEFAULT_PATH;
use crate::layer_writer::{ImportLimits, LayerWriter};
use crate::name::validate_user;
use crate::store::now_rfc3339;
use crate::tar_import::{Whiteouts, extract_tar, oci_whiteouts, open_archive};
use crate::{BuildProgress, Template, TemplateError, TemplateStore};

const MAX_JSON_BLOB: u64 = 16 << 20;
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Default, Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: Option<ContainerConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct ContainerConfig {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
}

fn is_index(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// Path of a blob, after checking the digest is a well-formed sha256 (it becomes a file name).
fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, TemplateError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
        .ok_or_else(|| {
            TemplateError::Invalid(format!(
                "unsupported or malformed digest '{digest}' (need sha256:<64 hex>)"
            ))
        })?;
    Ok(layout.join("blobs").join("sha256").join(hex))
}

/// Checks a blob's size and sha256 against its descriptor.
fn verify_blob(layout: &Path, descriptor: &Descriptor) -> Result<PathBuf, TemplateError> {
    let path = blob_path(layout, &descriptor.digest)?;
    let mut file =
        std::fs::File::open(&path).ctx(|| format!("opening blob {}", descriptor.digest))?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)
        .ctx(|| format!("reading blob {}", descriptor.digest))?;
    if size != descriptor.size {
        return Err(TemplateError::Invalid(format!(
            "blob {} is {size} bytes, its descriptor says {}",
            descriptor.digest, descriptor.size
        )));
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != descriptor.digest {
        return Err(TemplateError::Invalid(format!(
            "blob {} is corrupt: its content hashes to {actual}",
            descriptor.digest
        )));
    }
    Ok(path)
}

fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T, TemplateError> {
    let mut text = Vec::new();
    std::fs::File::open(path)
        .ctx(|| format!("opening {what} {}", path.display()))?
        .take(MAX_JSON_BLOB)
        .read_to_end(&mut text)
        .ctx(|| format!("reading {what} {}", path.display()))?;
    serde_json::from_slice(&text)
        .map_err(|e| TemplateError::Invalid(format!("{what} {}: {e}", path.display())))
}

fn read_json_blob<T: DeserializeOwned>(
    layout: &Path,
    descriptor: &Descriptor,
    what: &str,
) -> Result<T, TemplateError> {
    if descriptor.size > MAX_JSON_BLOB {
        return Err(TemplateError::Invalid(format!(
            "{what} {} is too large",
            descriptor.digest
        )));
    }
    let path = verify_blob(layout, descriptor)?;
    read_json(&path, what)
}

fn ref_names(descriptor: &Descriptor) -> impl Iterator<Item = &str> {
    [REF_NAME, CONTAINERD_NAME]
        .into_iter()
        .filter_map(|key| descriptor.annotations.get(key).map(String::as_str))
}

fn matches_reference(descriptor: &Descriptor, reference: &str) -> bool {
    ref_names(descriptor).any(|name| {
        name == reference
            || name
                .rsplit_once(':')
                .is_some_and(|(_, tag)| tag == reference)
    })
}

fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Picks the manifest for `reference` (or the only one), descending into a nested index by
/// platform (linux + host architecture).
fn select_manifest(layout: &Path, reference: Option<&str>) -> Result<Manifest, TemplateError> {
    let index: Index = read_json(&layout.join("index.json"), "index")?;
    let mut candidates: Vec<&Descriptor> = match reference {
        Some(reference) => index
            .manifests
            .iter()
            .filter(|d| matches_reference(d, reference))
            .collect(),
        None => index.manifests.iter().collect(),
    };
    let descriptor = match candidates.len() {
        1 => candidates.remove(0),
        0 => {
            let known: Vec<&str> = index.manifests.iter().flat_map(ref_names).collect();
            return Err(TemplateError::Invalid(format!(
                "no image '{}' in the layout; it has {known:?}",
                reference.unwrap_or_default()
            )));
        }
        _ => {
            let known: Vec<&str> = index.manifests.iter().flat_map(ref_names).collect();
            return Err(TemplateError::Invalid(format!(
                "the layout has several images; pick one of {known:?}"
            )));
        }
    };
    if !is_index(&descriptor.media_type) {
        return read_json_blob(layout, descriptor, "manifest");
    }
    let nested: Index = read_json_blob(layout, descriptor, "image index")?;
    let arch = host_architecture();
    let chosen = nested
        .manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or_else(|| {
            if nested.manifests.len() == 1 {
                nested.manifests.first()
            } else {
                None
            }
        })
        .ok_or_else(|| TemplateError::Invalid(format!("the image has no linux/{arch} manifest")))?;
    read_json_blob(layout, chosen, "manifest")
}

/// What an image config contributes to the template record.
struct ImageMetadata {
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    user: String,
}

/// Env, workdir and user of the image config, validated.
fn template_metadata(config: ImageConfig) -> Result<ImageMetadata, TemplateError> {
    let config = config.config.unwrap_or_default();
    let mut env = BTreeMap::new();
    for item in config.env.unwrap_or_default() {
        let (key, value) = item.split_once('=').unwrap_or((item.as_str(), ""));
        if key.is_empty() || item.contains('\0') {
            return Err(TemplateError::Invalid(format!(
                "bad Env entry '{item}' in image config"
            )));
        }
        env.insert(key.to_string(), value.to_string());
    }
    env.entry("PATH".to_string())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    let workdir = match config.working_dir.filter(|w| !w.is_empty()) {
        Some(dir) if dir.starts_with('/') && !dir.contains('\0') => Some(dir),
        Some(dir) => {
            return Err(TemplateError::Invalid(format!(
                "WorkingDir '{dir}' is not an absolute path"
            )));
        }
        None => None,
    };
    let user = config
        .user
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".to_string());
    validate_user(&user)?;
    Ok(ImageMetadata { env, workdir, user })
}

impl TemplateStore {
    /// Imports an image from the OCI image layout at `layout` as template `name`. `reference`
    /// selects the image by its `org.opencontainers.image.ref.name` annotation (or tag); `None`
    /// takes the only image. Blocking: call it from `spawn_blocking`.
    pub fn import_oci(
        &self,
        name: &str,
        layout: &Path,
        reference: Option<&str>,
        progress: impl Fn(BuildProgress),
    ) -> Result<Template, TemplateError> {
        let marker = layout.join("oci-layout");
        let version: serde_json::Value = read_json(&marker, "oci-layout file")?;
        if version
            .get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .is_none()
        {
            return Err(TemplateError::Invalid(format!(
                "{} has no imageLayoutVersion",
                marker.display()
            )));
        }
        let staging = self.staging(name)?;
        let manifest = select_manifest(layout, reference)?;
        let config: ImageConfig = read_json_blob(layout, &manifest.config, "image config")?;
        let ImageMetadata { env, workdir, user } = template_metadata(config)?;
        let layer_dir = staging.path().join("layers").join("0");
        let mut writer = LayerWriter::open(&layer_dir, ImportLimits::default())?;
        let total = manifest.layers.len().max(1) as f32;
        for (i, layer) in manifest.layers.iter().enumerate() {
            let phase = format!("layer {}/{}", i + 1, manifest.layers.len());
            report(
                &progress,
                &phase,
                &format!("verifying {}", layer.digest),
                Some(i as f32 / total),
            );
            if layer.media_type.contains("zstd") {
                return Err(TemplateError::Invalid(format!(
                    "layer {} is zstd-compressed ({}); only tar and tar+gzip layers are supported",
                    layer.digest, layer.media_type
                )));
            }
            let blob = verify_blob(layout, layer)?;
            let whiteouts = oci_whiteouts(open_archive(&blob)?)?;
            for dir in &whiteouts.opaque_dirs {
                writer.clear_dir(dir, |_| false)?;
            }
            for path in &whiteouts.deleted {
                writer.remove(path)?;
            }
            let on_skip = |message: &str| report(&progress, &phase, message, None);
            extract_tar(open_archive(&blob)?, &mut writer, Whiteouts::Skip, &on_skip)?;
        }
        let template = Template {
            name: name.to_string(),
            layers: vec![self.layer_path(name, 0)],
            env,
            workdir,
            user,
            source: "oci".to_string(),
            created_at: now_rfc3339(),
            size_bytes: fsutil::disk_usage(&layer_dir)?,
            start: None,
        };
        self.publish(staging, &template, &progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_refuse_malformed_digests() {
        let layout = Path::new("/layout");
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(blob_path(layout, &good).unwrap().ends_with("a".repeat(64)));
        for bad in [
            "sha256:../../etc/passwd",
            "md5:abc",
            "sha256:ABC",
            &format!("sha256:{}", "a".repeat(63)),
        ] {
            assert!(blob_path(layout, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_metadata() {
        let config: ImageConfig = serde_json::from_str(
            r#"{"config":{"Env":["A=1","B=x=y"],"WorkingDir":"/app","User":"1000:1000"}}"#,
        )
        .unwrap();
        let ImageMetadata { env, workdir, user } = template_metadata(config).unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "x=y");
        assert!(env.contains_key("PATH"));
        assert_eq!(workdir.as_deref(), Some("/app"));
        assert_eq!(user, "1000:1000");
        let user = template_metadata(ImageConfig::default()).unwrap().user;
        assert_eq!(user, "root");
        let relative: ImageConfig =
            serde_json::from_str(r#"{"config":{"WorkingDir":"app"}}"#).unwrap();
        assert!(template_metadata(relative).is_err());
    }
}
