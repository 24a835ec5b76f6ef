//! Importing a root filesystem from a host directory or a tarball (`.tar`, `.tar.gz`) as a new
//! single-layer template.

use std::collections::BTreeMap;
use std::path::Path;

use crate::base::report;
use crate::error::IoContext;
use crate::fsutil;
use crate::layer_writer::{ImportLimits, LayerWriter, RelPath};
use crate::store::now_rfc3339;
use crate::tar_import::{Whiteouts, extract_tar, open_archive};
use crate::tree_copy::{Ownership, copy_tree};
use crate::{BASE_USER, BuildProgress, Template, TemplateError, TemplateStore};

pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl TemplateStore {
    /// Imports `source` (a directory, or a tar / tar+gzip archive detected by magic bytes) as
    /// template `name`, with default limits. Blocking: call it from `spawn_blocking`.
    pub fn import_rootfs(
        &self,
        name: &str,
        source: &Path,
        progress: impl Fn(BuildProgress),
    ) -> Result<Template, TemplateError> {
        self.import_rootfs_with_limits(name, source, ImportLimits::default(), progress)
    }

    pub fn import_rootfs_with_limits(
        &self,
        name: &str,
        source: &Path,
        limits: ImportLimits,
        progress: impl Fn(BuildProgress),
    ) -> Result<Template, TemplateError> {
        // Resolve a symlinked source path once, up front; inside the tree nothing is followed.
        let source = &std::fs::canonicalize(source)
            .ctx(|| format!("reading import source {}", source.display()))?;
        let source_meta = std::fs::metadata(source)
            .ctx(|| format!("reading import source {}", source.display()))?;
        let staging = self.staging(name)?;
        let layer = staging.path().join("layers").join("0");
        let mut writer = LayerWriter::open(&layer, limits)?;
        let on_skip = |message: &str| report(&progress, "extract", message, None);
        report(
            &progress,
            "extract",
            &format!("importing {}", source.display()),
            Some(0.0),
        );
        let entries = if source_meta.is_dir() {
            copy_tree(
                source,
                &RelPath::parse(Path::new(""))?,
                &mut writer,
                Ownership::Keep,
                &on_skip,
            )?
        } else {
            extract_tar(
                open_archive(source)?,
                &mut writer,
                Whiteouts::Literal,
                &on_skip,
            )?
        };
        report(
            &progress,
            "extract",
            &format!("{entries} entries written"),
            Some(0.9),
        );
        let template = Template {
            name: name.to_string(),
            layers: vec![self.layer_path(name, 0)],
            env: BTreeMap::from([("PATH".to_string(), DEFAULT_PATH.to_string())]),
            workdir: None,
            user: default_user(&layer),
            source: "rootfs".to_string(),
            created_at: now_rfc3339(),
            size_bytes: fsutil::disk_usage(&layer)?,
            start: None,
        };
        self.publish(staging, &template, &progress)
    }
}

/// `user` if the rootfs has that account (like `base`), else `root`.
pub(crate) fn default_user(layer: &Path) -> String {
    let has_user = std::fs::read_to_string(layer.join("etc/passwd"))
        .map(|passwd| {
            passwd
                .lines()
                .any(|line| line.starts_with(&format!("{BASE_USER}:")))
        })
        .unwrap_or(false);
    if has_user { BASE_USER } else { "root" }.to_string()
}
