//! Safe extraction of (possibly hostile) tar archives into a layer, entry by entry through
//! [`LayerWriter`] (never `tar`'s own unpack, which trusts the archive more than we do).

use std::ffi::OsStr;
use std::io::{BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::EntryType;

use crate::TemplateError;
use crate::error::IoContext;
use crate::layer_writer::{EntryMeta, LayerWriter, RelPath};

/// Compression of an archive, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Tar,
    TarGzip,
}

/// Detects the archive format from its magic bytes (at least the first 262 bytes for plain tar).
pub fn detect_format(head: &[u8]) -> Result<ArchiveFormat, TemplateError> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(ArchiveFormat::TarGzip)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Ok(ArchiveFormat::Tar)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(TemplateError::Invalid(
            "zstd-compressed archives are not supported; use .tar or .tar.gz".to_string(),
        ))
    } else if head.starts_with(b"BZh") || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err(TemplateError::Invalid(
            "bzip2/xz-compressed archives are not supported; use .tar or .tar.gz".to_string(),
        ))
    } else {
        Err(TemplateError::Invalid(
            "not a tar archive (no ustar/gzip magic bytes)".to_string(),
        ))
    }
}

/// Opens an archive file, decompressing as detected.
pub fn open_archive(path: &Path) -> Result<Box<dyn Read>, TemplateError> {
    let mut file = std::fs::File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut head = Vec::with_capacity(512);
    (&mut file)
        .take(512)
        .read_to_end(&mut head)
        .ctx(|| format!("reading {}", path.display()))?;
    let format = detect_format(&head)
        .map_err(|e| TemplateError::Invalid(format!("{}: {e}", path.display())))?;
    let reader = std::io::Cursor::new(head).chain(file);
    Ok(match format {
        ArchiveFormat::Tar => Box::new(BufReader::new(reader)),
        ArchiveFormat::TarGzip => {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(reader)))
        }
    })
}

/// How `.wh.*` names are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Plain rootfs archive: `.wh.*` are ordinary files.
    Literal,
    /// OCI layer: whiteout entries are skipped here (see [`oci_whiteouts`]).
    Skip,
}

const OPAQUE_MARKER: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";

/// What an OCI layer deletes from the layers below it.
#[derive(Debug, Default, PartialEq)]
pub struct LayerWhiteouts {
    /// Directories whose lower contents are hidden (`.wh..wh..opq`).
    pub opaque_dirs: Vec<RelPath>,
    /// Paths deleted (`.wh.<name>`).
    pub deleted: Vec<RelPath>,
}

/// Classifies an OCI entry path: `Some(Ok(..))` for a whiteout.
fn whiteout_of(path: &RelPath) -> Option<Result<(bool, RelPath), TemplateError>> {
    let name = path.as_path().file_name()?.to_str()?;
    let parent = path.as_path().parent().unwrap_or(Path::new(""));
    if name == OPAQUE_MARKER {
        return Some(RelPath::parse(parent).map(|dir| (true, dir)));
    }
    let hidden = name.strip_prefix(WHITEOUT_PREFIX)?;
    if hidden.is_empty() || hidden == "." || hidden == ".." {
        return Some(Err(TemplateError::unsafe_entry(
            path,
            "malformed whiteout name",
        )));
    }
    Some(RelPath::parse(&parent.join(hidden)).map(|target| (false, target)))
}

/// Reads an OCI layer's whiteouts (a first pass, so they can be applied before the layer's own
/// entries: they only hide what lower layers had).
pub fn oci_whiteouts(reader: impl Read) -> Result<LayerWhiteouts, TemplateError> {
    let mut archive = tar::Archive::new(reader);
    let mut whiteouts = LayerWhiteouts::default();
    for entry in archive.entries().ctx(|| "reading layer".to_string())? {
        let entry = entry.ctx(|| "reading layer entry".to_string())?;
        let path = RelPath::parse(Path::new(OsStr::from_bytes(&entry.path_bytes())))?;
        match whiteout_of(&path) {
            Some(Ok((true, dir))) => whiteouts.opaque_dirs.push(dir),
            Some(Ok((false, target))) => whiteouts.deleted.push(target),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(whiteouts)
}

/// The numeric PAX extensions of an entry (`uid`, `gid`, `mtime`); PAX times may have a
/// fraction, of which the integer part is kept.
fn pax_numbers(
    entry: &mut tar::Entry<'_, impl Read>,
    path: &RelPath,
) -> Result<[Option<i64>; 3], TemplateError> {
    let mut values = [None; 3];
    let Some(extensions) = entry
        .pax_extensions()
        .ctx(|| format!("reading PAX header of {path}"))?
    else {
        return Ok(values);
    };
    for extension in extensions {
        let extension = extension.ctx(|| format!("reading PAX header of {path}"))?;
        let slot = match extension.key_bytes() {
            b"uid" => 0,
            b"gid" => 1,
            b"mtime" => 2,
            _ => continue,
        };
        let value = String::from_utf8_lossy(extension.value_bytes());
        let integer = value.split('.').next().unwrap_or_default();
        values[slot] =
            Some(integer.parse().map_err(|_| {
                TemplateError::unsafe_entry(path, format!("bad PAX value '{value}'"))
            })?);
    }
    Ok(values)
}

fn entry_meta(
    entry: &mut tar::Entry<'_, impl Read>,
    path: &RelPath,
) -> Result<EntryMeta, TemplateError> {
    let [pax_uid, pax_gid, pax_mtime] = pax_numbers(entry, path)?;
    let header = entry.header();
    let bad =
        |what: &str| TemplateError::unsafe_entry(path, format!("unreadable {what} in header"));
    let id = |what: &str,
              pax: Option<i64>,
              fallback: std::io::Result<u64>|
     -> Result<u32, TemplateError> {
        let value = match pax {
            Some(v) => v,
            None => i64::try_from(fallback.map_err(|_| bad(what))?).unwrap_or(-1),
        };
        u32::try_from(value)
            .map_err(|_| TemplateError::unsafe_entry(path, format!("{what} {value} out of range")))
    };
    Ok(EntryMeta {
        mode: header.mode().map_err(|_| bad("mode"))? & 0o7777,
        uid: id("uid", pax_uid, header.uid())?,
        gid: id("gid", pax_gid, header.gid())?,
        mtime: pax_mtime.or_else(|| header.mtime().ok().and_then(|t| i64::try_from(t).ok())),
    })
}

/// Extracts every entry of a tar stream into `writer`. Device nodes are dropped (reported through
/// `on_skip`), as are entry types with no meaning in a rootfs.
pub fn extract_tar(
    reader: impl Read,
    writer: &mut LayerWriter,
    whiteouts: Whiteouts,
    on_skip: &dyn Fn(&str),
) -> Result<u64, TemplateError> {
    let mut archive = tar::Archive::new(reader);
    let mut count = 0u64;
    for entry in archive.entries().ctx(|| "reading archive".to_string())? {
        let mut entry = entry.ctx(|| "reading archive entry".to_string())?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            continue;
        }
        let path = RelPath::parse(Path::new(OsStr::from_bytes(&entry.path_bytes())))?;
        if whiteouts == Whiteouts::Skip && whiteout_of(&path).is_some() {
            continue;
        }
        let meta = entry_meta(&mut entry, &path)?;
        let link_target = || -> Result<std::path::PathBuf, TemplateError> {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| TemplateError::unsafe_entry(&path, "link without a target"))?;
            Ok(Path::new(OsStr::from_bytes(&link)).to_path_buf())
        };
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let size = entry.size();
                writer.file(&path, meta, &mut entry, size)?;
            }
            EntryType::Directory => writer.dir(&path, meta)?,
            EntryType::Symlink => {
                let target = link_target()?;
                if target.as_os_str().is_empty() {
                    return Err(TemplateError::unsafe_entry(
                        &path,
                        "symlink with an empty target",
                    ));
                }
                writer.symlink(&path, &target, meta)?;
            }
            EntryType::Link => {
                let target = RelPath::parse(&link_target()?)?;
                writer.hardlink(&path, &target)?;
            }
            EntryType::Fifo => writer.fifo(&path, meta)?,
            EntryType::Char | EntryType::Block => {
                on_skip(&format!("skipped device node {path}"));
                continue;
            }
            other => {
                on_skip(&format!("skipped {path}: unsupported entry type {other:?}"));
                continue;
            }
        }
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(detect_format(&tar).unwrap(), ArchiveFormat::Tar);
        assert_eq!(
            detect_format(&[0x1f, 0x8b, 8]).unwrap(),
            ArchiveFormat::TarGzip
        );
        assert!(
            detect_format(&[0x28, 0xb5, 0x2f, 0xfd])
                .unwrap_err()
                .to_string()
                .contains("zstd")
        );
        assert!(
            detect_format(b"hello")
                .unwrap_err()
                .to_string()
                .contains("not a tar")
        );
    }

    #[test]
    fn classifies_whiteouts() {
        let parse = |p: &str| RelPath::parse(Path::new(p)).unwrap();
        assert_eq!(
            whiteout_of(&parse("a/b/.wh..wh..opq")).unwrap().unwrap(),
            (true, parse("a/b"))
        );
        assert_eq!(
            whiteout_of(&parse("a/.wh.gone")).unwrap().unwrap(),
            (false, parse("a/gone"))
        );
        assert!(whiteout_of(&parse("a/normal")).is_none());
        assert!(whiteout_of(&parse("a/.wh.")).unwrap().is_err());
        assert!(whiteout_of(&parse("a/.wh...")).unwrap().is_err());
    }
}
