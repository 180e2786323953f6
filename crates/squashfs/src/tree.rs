//! The source tree as the image will hold it: entries sorted by name (squashfs looks names up in
//! that order), hard links inside the tree folded into one inode, excluded paths left out.

use crate::error::InputError;
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Linux's PATH_MAX, with the terminating NUL.
const PATH_MAX: usize = 4096;

/// squashfs stores a name's length minus one in 8 bits as far as the kernel is concerned.
const MAX_NAME: usize = 256;

pub enum Kind {
    /// Children, sorted by name.
    Dir(Vec<usize>),
    File {
        size: u64,
    },
    /// Another name (a hard link) for the inode at this node: a file, symlink, device, fifo
    /// or socket.
    Link(usize),
    Symlink(Vec<u8>),
    Block(u64),
    Char(u64),
    Fifo,
    Socket,
}

pub struct Node {
    pub name: Vec<u8>,
    /// Relative to the tree's root (empty for the root).
    pub rel: PathBuf,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub xattrs: Vec<Xattr>,
    pub kind: Kind,
}

/// One extended attribute, its full name (`security.capability`) and value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

pub struct Tree {
    pub root: PathBuf,
    /// `nodes[0]` is the root directory.
    pub nodes: Vec<Node>,
    /// Excluded paths that were not there (a typo, or a file a phase no longer makes).
    pub unmatched: Vec<PathBuf>,
}

impl Tree {
    /// Reads `root` without following symlinks. `mtime` replaces every timestamp when set.
    pub fn walk(root: &Path, excludes: &[PathBuf], mtime: Option<u32>) -> Result<Tree> {
        let mut walk = Walk {
            tree: Tree {
                root: root.to_path_buf(),
                nodes: Vec::new(),
                unmatched: Vec::new(),
            },
            excludes,
            matched: vec![false; excludes.len()],
            mtime,
            links: HashMap::new(),
        };
        walk.add(PathBuf::new(), Vec::new())?;
        if !matches!(walk.tree.nodes[0].kind, Kind::Dir(_)) {
            bail!("{} is not a directory", root.display());
        }
        let matched = std::mem::take(&mut walk.matched);
        walk.tree.unmatched = excludes
            .iter()
            .zip(matched)
            .filter(|(_, m)| !m)
            .map(|(e, _)| e.clone())
            .collect();
        Ok(walk.tree)
    }

    pub fn path(&self, node: usize) -> PathBuf {
        self.root.join(&self.nodes[node].rel)
    }

    /// The node that carries the inode: a hard link's first name, else the node itself.
    pub fn inode_of(&self, node: usize) -> usize {
        match self.nodes[node].kind {
            Kind::Link(first) => first,
            _ => node,
        }
    }

    pub fn children(&self, node: usize) -> &[usize] {
        match &self.nodes[node].kind {
            Kind::Dir(c) => c,
            _ => &[],
        }
    }

    pub fn is_dir(&self, node: usize) -> bool {
        matches!(self.nodes[node].kind, Kind::Dir(_))
    }
}

struct Walk<'a> {
    tree: Tree,
    excludes: &'a [PathBuf],
    matched: Vec<bool>,
    mtime: Option<u32>,
    links: HashMap<(u64, u64), usize>,
}

impl Walk<'_> {
    fn add(&mut self, rel: PathBuf, name: Vec<u8>) -> Result<usize> {
        let path = self.tree.root.join(&rel);
        // The system calls cannot reach it; mksquashfs skips such entries, which would leave
        // a hole in the image nobody asked for, so it is refused.
        let len = path.as_os_str().len();
        if len >= PATH_MAX {
            let bytes = path.as_os_str().as_bytes();
            return Err(InputError::new(format!(
                "{}...{}: the path is {len} bytes long, more than the {PATH_MAX} the system calls take; \
                 shorten the tree's names or nesting",
                String::from_utf8_lossy(&bytes[..60]),
                String::from_utf8_lossy(&bytes[len - 60..])
            ))
            .into());
        }
        let meta = std::fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        let xattrs = xattrs(&path)?;
        // Checked here, before anything is compressed: squashfs has no place for system.*
        // attributes (POSIX ACLs), and mksquashfs drops them silently.
        if let Some(x) = xattrs.iter().find(|x| split_xattr_name(&x.name).is_none()) {
            return Err(InputError::new(format!(
                "{}: extended attribute {} is outside the user., trusted. and security. namespaces, the only \
                 ones squashfs stores (a POSIX ACL? remove it with setfacl -b)",
                path.display(),
                String::from_utf8_lossy(&x.name)
            ))
            .into());
        }
        let index = self.tree.nodes.len();
        self.tree.nodes.push(Node {
            name,
            rel: rel.clone(),
            mode: (meta.mode() & 0o7777) as u16,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: self
                .mtime
                .unwrap_or_else(|| meta.mtime().clamp(0, u32::MAX as i64) as u32),
            xattrs,
            kind: Kind::Fifo,
        });
        let ft = meta.file_type();
        // Every name of an inode with more than one, whatever its type, becomes one inode.
        let first = (!ft.is_dir() && meta.nlink() > 1)
            .then(|| *self.links.entry((meta.dev(), meta.ino())).or_insert(index))
            .filter(|&first| first != index);
        let kind = if let Some(first) = first {
            Kind::Link(first)
        } else if ft.is_dir() {
            Kind::Dir(self.add_children(&rel, &path)?)
        } else if ft.is_file() {
            Kind::File { size: meta.size() }
        } else if ft.is_symlink() {
            let target =
                std::fs::read_link(&path).with_context(|| format!("reading link {}", path.display()))?;
            Kind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else if ft.is_block_device() {
            Kind::Block(meta.rdev())
        } else if ft.is_char_device() {
            Kind::Char(meta.rdev())
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            bail!("{}: unknown file type", path.display());
        };
        self.tree.nodes[index].kind = kind;
        Ok(index)
    }

    fn add_children(&mut self, rel: &Path, path: &Path) -> Result<Vec<usize>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
            let entry = entry.with_context(|| format!("listing {}", path.display()))?;
            names.push(entry.file_name().as_bytes().to_vec());
        }
        names.sort();
        let mut children = Vec::with_capacity(names.len());
        for name in names {
            let child = rel.join(std::ffi::OsStr::from_bytes(&name));
            if let Some(i) = self.excludes.iter().position(|e| e == &child) {
                self.matched[i] = true;
                continue;
            }
            if name.len() > MAX_NAME {
                bail!(
                    "{}: the name is {} bytes long; squashfs allows {MAX_NAME}",
                    self.tree.root.join(&child).display(),
                    name.len()
                );
            }
            children.push(self.add(child, name)?);
        }
        Ok(children)
    }
}

/// The entry's extended attributes, sorted by name.
fn xattrs(path: &Path) -> Result<Vec<Xattr>> {
    let c = CString::new(path.as_os_str().as_bytes()).context("path with a NUL byte")?;
    let failed = || format!("reading extended attributes of {}", path.display());
    let names = match sized(|buf, len| unsafe {
        // SAFETY: `buf` has room for `len` bytes (or is null with `len` 0).
        libc::llistxattr(c.as_ptr(), buf.cast(), len)
    }) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(failed),
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("split at NUL");
        let value = sized(|buf, len| unsafe {
            // SAFETY: as above; both strings are NUL-terminated.
            libc::lgetxattr(c.as_ptr(), cname.as_ptr(), buf.cast(), len)
        })
        .with_context(failed)?;
        out.push(Xattr {
            name: name.to_vec(),
            value,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Calls a size-then-fill xattr function until the buffer is big enough.
fn sized(call: impl Fn(*mut u8, usize) -> libc::ssize_t) -> std::io::Result<Vec<u8>> {
    loop {
        let len = call(std::ptr::null_mut(), 0);
        if len < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; len as usize];
        if len == 0 {
            return Ok(buf);
        }
        let got = call(buf.as_mut_ptr(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        // ERANGE: it grew between the two calls.
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return Err(std::io::Error::last_os_error());
        }
    }
}

/// squashfs's prefix id for an attribute name, and the name without the prefix.
pub(crate) fn split_xattr_name(name: &[u8]) -> Option<(u16, &[u8])> {
    [
        (b"user.".as_slice(), 0),
        (b"trusted.".as_slice(), 1),
        (b"security.".as_slice(), 2),
    ]
    .into_iter()
    .find_map(|(prefix, id)| name.strip_prefix(prefix).map(|rest| (id, rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_by_bytes_folds_hard_links_and_leaves_out_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("b/sub")).unwrap();
        std::fs::write(r.join("b/Z"), "z").unwrap();
        std::fs::write(r.join("b/a"), "a").unwrap();
        std::fs::hard_link(r.join("b/a"), r.join("b/sub/again")).unwrap();
        std::fs::write(r.join("skip"), "").unwrap();
        std::os::unix::fs::symlink("b/a", r.join("link")).unwrap();

        let tree = Tree::walk(r, &[PathBuf::from("skip"), PathBuf::from("b/nothing")], Some(7)).unwrap();
        assert_eq!(tree.unmatched, [PathBuf::from("b/nothing")]);
        let names = |n: usize| -> Vec<String> {
            tree.children(n)
                .iter()
                .map(|&c| String::from_utf8_lossy(&tree.nodes[c].name).into_owned())
                .collect()
        };
        assert_eq!(names(0), ["b", "link"]);
        let b = tree.children(0)[0];
        assert_eq!(names(b), ["Z", "a", "sub"]);
        let a = tree.children(b)[1];
        let again = tree.children(tree.children(b)[2])[0];
        assert_eq!(tree.inode_of(again), a);
        assert!(matches!(tree.nodes[a].kind, Kind::File { size: 1 }));
        assert!(matches!(&tree.nodes[tree.children(0)[1]].kind, Kind::Symlink(t) if t == b"b/a"));
        assert!(tree.nodes.iter().all(|n| n.mtime == 7));
    }
}
