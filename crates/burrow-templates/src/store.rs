//! The template store under `<data_dir>/templates`: lookup, listing, removal, and the atomic
//! publish step every builder ends with.

use std::path::{Path, PathBuf};

use crate::error::IoContext;
use crate::fsutil::{self, ScratchDir};
use crate::name::validate_name;
use crate::{BuildProgress, Template, TemplateError};

const TEMPLATE_FILE: &str = "template.json";
/// Scratch entries under the templates root start with a dot, so they never look like templates.
const STAGING_PREFIX: &str = ".staging";
const TRASH_PREFIX: &str = ".trash";

/// The template store under `<data_dir>/templates`.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    root: PathBuf,
    cache: PathBuf,
}

impl TemplateStore {
    /// Opens (and creates if needed) the store of `data_dir`, which it makes root-only (0700),
    /// with the template and cache dirs below it: layers keep the files a build made with their
    /// setuid bits and canonical ownership (root = uid 0), so a host user who could reach them
    /// could run a build's setuid-root file as host root.
    pub fn open(data_dir: &Path) -> Result<Self, TemplateError> {
        let root = data_dir.join("templates");
        let cache = data_dir.join("cache");
        for dir in [&root, &cache] {
            std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        for dir in [data_dir, &root, &cache] {
            make_root_only(dir)?;
        }
        Ok(Self { root, cache })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where downloads (debootstrap tarballs) are cached: `<data_dir>/cache`.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// The directory of template `name` (whether or not it exists).
    pub fn template_dir(&self, name: &str) -> Result<PathBuf, TemplateError> {
        validate_name(name)?;
        Ok(self.root.join(name))
    }

    /// The template called `name`, or [`TemplateError::NotFound`].
    pub fn get(&self, name: &str) -> Result<Template, TemplateError> {
        let file = self.template_dir(name)?.join(TEMPLATE_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TemplateError::NotFound(name.to_string()));
            }
            Err(e) => return Err(TemplateError::io(format!("reading {}", file.display()), e)),
        };
        serde_json::from_str(&text).map_err(|e| {
            TemplateError::Invalid(format!("corrupt template record {}: {e}", file.display()))
        })
    }

    pub fn exists(&self, name: &str) -> Result<bool, TemplateError> {
        Ok(self.template_dir(name)?.join(TEMPLATE_FILE).exists())
    }

    /// All templates, sorted by name.
    pub fn list(&self) -> Result<Vec<Template>, TemplateError> {
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(&self.root).ctx(|| format!("listing {}", self.root.display()))?
        {
            let entry = entry.ctx(|| format!("listing {}", self.root.display()))?;
            if let Some(name) = entry.file_name().to_str()
                && validate_name(name).is_ok()
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        let mut templates = Vec::with_capacity(names.len());
        for name in names {
            match self.get(&name) {
                Ok(template) => templates.push(template),
                // A dir without a record is not a template (e.g. removed under our feet).
                Err(TemplateError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(templates)
    }

    /// Removes a template. Refuses while `in_use` says sandboxes still use it, and while other
    /// templates were built on it (their layer stacks reference its layers).
    pub fn remove(&self, name: &str, in_use: bool) -> Result<(), TemplateError> {
        let dir = self.template_dir(name)?;
        self.get(name)?;
        if in_use {
            return Err(TemplateError::InUse(name.to_string()));
        }
        // Layers are recorded by absolute path; the template's dir may be reached through a
        // symlink (a shared template), so its layers are looked for under both spellings.
        let real_dir = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        let dependents: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|t| {
                t.name != name
                    && t.layers
                        .iter()
                        .any(|layer| layer.starts_with(&dir) || layer.starts_with(&real_dir))
            })
            .map(|t| t.name)
            .collect();
        if !dependents.is_empty() {
            return Err(TemplateError::HasDependents {
                name: name.to_string(),
                dependents,
            });
        }
        // Rename first so the template disappears atomically, then delete at leisure.
        let trash = self
            .root
            .join(fsutil::unique_name(&format!("{TRASH_PREFIX}-{name}")));
        std::fs::rename(&dir, &trash).ctx(|| format!("removing {}", dir.display()))?;
        fsutil::remove_tree(&trash)
    }

    /// A fresh scratch dir for building template `name`; deleted on drop unless published.
    pub(crate) fn staging(&self, name: &str) -> Result<ScratchDir, TemplateError> {
        validate_name(name)?;
        if self.exists(name)? {
            return Err(TemplateError::AlreadyExists(name.to_string()));
        }
        ScratchDir::create(
            self.root
                .join(fsutil::unique_name(&format!("{STAGING_PREFIX}-{name}"))),
        )
    }

    /// Final path of layer `index` of template `name` once published.
    pub(crate) fn layer_path(&self, name: &str, index: usize) -> PathBuf {
        self.root.join(name).join("layers").join(index.to_string())
    }

    /// Writes `template.json` into the staging dir and renames it into place; fails (leaving the
    /// existing template untouched) if `template.name` appeared meanwhile.
    /// Writes `template.json` into `staging`, renames it into place (never over an existing
    /// template), and reports the build done.
    pub(crate) fn publish(
        &self,
        staging: ScratchDir,
        template: &Template,
        progress: &(impl Fn(BuildProgress) + ?Sized),
    ) -> Result<Template, TemplateError> {
        let record = serde_json::to_vec_pretty(template)
            .map_err(|e| TemplateError::Invalid(format!("serialising template record: {e}")))?;
        let file = staging.path().join(TEMPLATE_FILE);
        std::fs::write(&file, record).ctx(|| format!("writing {}", file.display()))?;
        let target = self.root.join(&template.name);
        let renamed = rustix::fs::renameat_with(
            rustix::fs::CWD,
            staging.path(),
            rustix::fs::CWD,
            &target,
            rustix::fs::RenameFlags::NOREPLACE,
        );
        match renamed {
            Ok(()) => {
                staging.keep();
                crate::base::report(
                    progress,
                    "done",
                    &format!("template {} is ready", template.name),
                    Some(1.0),
                );
                Ok(template.clone())
            }
            Err(rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY) => {
                Err(TemplateError::AlreadyExists(template.name.clone()))
            }
            Err(e) => Err(TemplateError::io(
                format!("publishing {}", target.display()),
                e,
            )),
        }
    }
}

/// The current time as RFC 3339, for `created_at`.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Mode 0700: only host root may enter `dir`.
fn make_root_only(dir: &Path) -> Result<(), TemplateError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .ctx(|| format!("making {} root-only", dir.display()))
}
