//! Copies a host file or directory tree into a layer through [`LayerWriter`], never following
//! symlinks in the source (they are copied as symlinks).

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::TemplateError;
use crate::error::IoContext;
use crate::layer_writer::{EntryMeta, LayerWriter, RelPath};

/// Whose ownership the copies get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Keep the source's numeric uid/gid (importing a rootfs).
    Keep,
    /// Everything owned by this uid/gid (COPY steps: root by default).
    Force { uid: u32, gid: u32 },
}

/// Copies `src` (file, symlink or directory) to `dest` in the layer. Device nodes and sockets are
/// skipped and reported through `on_skip`; hard links inside the tree stay hard links.
pub fn copy_tree(
    src: &Path,
    dest: &RelPath,
    writer: &mut LayerWriter,
    ownership: Ownership,
    on_skip: &dyn Fn(&str),
) -> Result<u64, TemplateError> {
    let mut links = HashMap::new();
    let mut count = 0;
    copy_entry(
        src, dest, writer, ownership, on_skip, &mut links, &mut count,
    )?;
    Ok(count)
}

fn copy_entry(
    src: &Path,
    dest: &RelPath,
    writer: &mut LayerWriter,
    ownership: Ownership,
    on_skip: &dyn Fn(&str),
    links: &mut HashMap<(u64, u64), RelPath>,
    count: &mut u64,
) -> Result<(), TemplateError> {
    let meta = std::fs::symlink_metadata(src).ctx(|| format!("reading {}", src.display()))?;
    let (uid, gid) = match ownership {
        Ownership::Keep => (meta.uid(), meta.gid()),
        Ownership::Force { uid, gid } => (uid, gid),
    };
    let entry = EntryMeta {
        mode: meta.mode() & 0o7777,
        uid,
        gid,
        mtime: Some(meta.mtime()),
    };
    let kind = meta.file_type();
    if !kind.is_dir() && meta.nlink() > 1 {
        if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
            *count += 1;
            return writer.hardlink(dest, first);
        }
        links.insert((meta.dev(), meta.ino()), dest.clone());
    }
    *count += 1;
    if kind.is_dir() {
        writer.dir(dest, entry)?;
        let mut names = Vec::new();
        for child in std::fs::read_dir(src).ctx(|| format!("listing {}", src.display()))? {
            names.push(
                child
                    .ctx(|| format!("listing {}", src.display()))?
                    .file_name(),
            );
        }
        names.sort();
        for name in names {
            copy_entry(
                &src.join(&name),
                &dest.join(&name),
                writer,
                ownership,
                on_skip,
                links,
                count,
            )?;
        }
        Ok(())
    } else if kind.is_file() {
        // O_NOFOLLOW: if the entry was swapped for a symlink since we looked, fail instead.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_o_nofollow())
            .open(src)
            .ctx(|| format!("opening {}", src.display()))?;
        writer.file(dest, entry, &mut file, meta.len())
    } else if kind.is_symlink() {
        let target = std::fs::read_link(src).ctx(|| format!("reading link {}", src.display()))?;
        writer.symlink(dest, &target, entry)
    } else if kind.is_fifo() {
        writer.fifo(dest, entry)
    } else {
        *count -= 1;
        on_skip(&format!(
            "skipped {} (device node or socket)",
            src.display()
        ));
        Ok(())
    }
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}
