//! What `burrow template build` sends a server: the files a build reads, packed into a tar and
//! uploaded under its sha256 (`PUT /v1/templates/uploads/{sha256}`, skipped when the server
//! already has it). The server reads no path of its own host for an API build.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::client::ApiClient;

/// Packs the COPY `sources` (relative to `context_dir`, the build file's directory) into a tar:
/// each source with everything under it, plus the directories leading to it, in sorted order,
/// owned by root, with their modes and mtimes (so the same files give the same hash). Refuses
/// sources outside the context and symlinks pointing out of it.
pub fn pack_copy_context(
    context_dir: &Path,
    sources: &[PathBuf],
    out: impl Write,
) -> anyhow::Result<()> {
    let mut paths = BTreeSet::new();
    for source in sources {
        let rel = context_relative(source)?;
        let mut parent = PathBuf::new();
        for component in rel.components() {
            parent.push(component);
            paths.insert(parent.clone());
        }
        collect(context_dir, &rel, &mut paths)?;
    }
    let mut tar = tar::Builder::new(out);
    for rel in &paths {
        let full = context_dir.join(rel);
        let meta = std::fs::symlink_metadata(&full)
            .with_context(|| format!("reading {}", full.display()))?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = std::fs::read_link(&full)?;
            if !burrow_templates::stays_inside(rel.parent().unwrap_or(Path::new("")), &target) {
                bail!(
                    "{} is a symlink to {}, outside the build context ({}); COPY can only carry files inside it",
                    full.display(),
                    target.display(),
                    context_dir.display()
                );
            }
            tar.append_link(&mut header, rel, &target)?;
        } else if kind.is_dir() {
            tar.append_data(&mut header, rel, std::io::empty())?;
        } else if kind.is_file() {
            let file = std::fs::File::open(&full)
                .with_context(|| format!("reading {}", full.display()))?;
            tar.append_data(&mut header, rel, file)?;
        } else {
            bail!(
                "{} is not a file, directory or symlink; COPY cannot carry it",
                full.display()
            );
        }
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// A COPY source as a plain relative path inside the context; `.` is the whole context.
fn context_relative(source: &Path) -> anyhow::Result<PathBuf> {
    let mut rel = PathBuf::new();
    for component in source.components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            _ => bail!(
                "COPY source '{}' must be a path inside the build file's directory (no '..', not absolute)",
                source.display()
            ),
        }
    }
    Ok(rel)
}

/// Adds `rel` and, for a directory, everything under it (symlinks are not followed).
fn collect(root: &Path, rel: &Path, paths: &mut BTreeSet<PathBuf>) -> anyhow::Result<()> {
    let full = root.join(rel);
    let meta = std::fs::symlink_metadata(&full)
        .with_context(|| format!("COPY source {}", full.display()))?;
    if !rel.as_os_str().is_empty() {
        paths.insert(rel.to_path_buf());
    }
    if meta.is_dir() {
        for entry in
            std::fs::read_dir(&full).with_context(|| format!("listing {}", full.display()))?
        {
            collect(root, &rel.join(entry?.file_name()), paths)?;
        }
    }
    Ok(())
}

/// Packs directory `dir` as it is (owners, modes, symlinks as symlinks): a rootfs or an OCI
/// image layout.
pub fn pack_dir(dir: &Path, out: impl Write) -> anyhow::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    tar.append_dir_all(".", dir)
        .with_context(|| format!("packing {}", dir.display()))?;
    tar.into_inner()?.flush()?;
    Ok(())
}

/// sha256 (hex) of a file's bytes.
fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Uploads `file` unless the server has it already; returns its sha256.
pub async fn upload(api: &ApiClient, file: &Path) -> anyhow::Result<String> {
    let owned = file.to_path_buf();
    let hash = tokio::task::spawn_blocking(move || sha256_of(&owned)).await??;
    let path = format!("/v1/templates/uploads/{hash}");
    let status: Value = api.get_json(&path).await?;
    if status.get("present").and_then(Value::as_bool) == Some(true) {
        return Ok(hash);
    }
    let opened = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    let len = opened.metadata().await?.len();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(opened));
    api.send(
        api.request(Method::PUT, &path)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body),
    )
    .await
    .with_context(|| format!("uploading {} ({len} bytes)", file.display()))?;
    Ok(hash)
}

/// Uploads a tar written by `pack` (into a temporary file); returns its sha256.
pub async fn pack_and_upload(
    api: &ApiClient,
    pack: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<String> {
    let tmp = tokio::task::spawn_blocking(move || -> anyhow::Result<tempfile::NamedTempFile> {
        let mut tmp = tempfile::Builder::new()
            .prefix("burrow-build-")
            .suffix(".tar")
            .tempfile()
            .context("creating a temporary file for the upload")?;
        pack(tmp.as_file_mut())?;
        Ok(tmp)
    })
    .await??;
    upload(api, tmp.path()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_contexts_deterministically_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("app/sub")).unwrap();
        std::fs::write(root.join("app/sub/b.txt"), "b").unwrap();
        std::fs::write(root.join("app/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("app/link")).unwrap();
        let pack = |sources: &[&str]| {
            let sources: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
            let mut out = Vec::new();
            pack_copy_context(root, &sources, &mut out).map(|()| out)
        };
        let first = pack(&["app", "app/a.txt"]).unwrap();
        assert_eq!(first, pack(&["app/a.txt", "app"]).unwrap());
        let mut names = Vec::new();
        for entry in tar::Archive::new(first.as_slice()).entries().unwrap() {
            names.push(entry.unwrap().path().unwrap().display().to_string());
        }
        assert_eq!(
            names,
            ["app", "app/a.txt", "app/link", "app/sub", "app/sub/b.txt"]
        );
        assert!(pack(&["../etc/passwd"]).is_err());
        assert!(pack(&["/etc/passwd"]).is_err());
        std::os::unix::fs::symlink("/etc/passwd", root.join("app/out")).unwrap();
        let err = pack(&["app"]).unwrap_err().to_string();
        assert!(err.contains("outside the build context"), "{err}");
    }
}
