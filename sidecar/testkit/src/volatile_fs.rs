//! A FUSE filesystem that loses what was never synced, for power-cut tests (LazyFS's idea).
//!
//! Mounted over a backing directory, it passes metadata operations (create, mkdir, rename,
//! unlink, rmdir) straight through, but keeps every file write in memory, as a page cache
//! does, until the file is `fsync`ed or `fdatasync`ed: only then is it written to the backing
//! file. [`VolatileFs::cut_power`] drops every unsynced write, as a power cut drops the page
//! cache; what a process reads afterwards is what it had synced. (Metadata surviving at once
//! is kinder than a real filesystem, which may also lose an unsynced rename or create; file
//! data is where a database's durability lives or dies.)
//!
//! Files are opened with direct I/O, so the kernel caches no file data of its own and reads
//! after a cut see the backing file. Each open handle holds its backing file open, so a file
//! unlinked or renamed over while open stays readable through it. Needs root and `/dev/fuse`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

/// Attributes are never cached by the kernel: sizes change under it at a cut.
const TTL: Duration = Duration::ZERO;

/// Unsynced writes of one file.
#[derive(Debug, Default)]
struct Dirty {
    /// Non-overlapping, non-adjacent extents of written bytes, by offset.
    extents: BTreeMap<u64, Vec<u8>>,
    /// The file's size as its writers see it.
    size: u64,
}

impl Dirty {
    fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        let touching: Vec<u64> = self
            .extents
            .range(..=end)
            .filter(|(at, bytes)| **at + bytes.len() as u64 >= offset)
            .map(|(at, _)| *at)
            .collect();
        let start = touching
            .first()
            .map_or(offset, |first| (*first).min(offset));
        let mut merged_end = end;
        for at in &touching {
            if let Some(bytes) = self.extents.get(at) {
                merged_end = merged_end.max(at + bytes.len() as u64);
            }
        }
        let mut merged = vec![0u8; usize::try_from(merged_end - start).unwrap_or(0)];
        for at in touching {
            if let Some(bytes) = self.extents.remove(&at) {
                let from = usize::try_from(at - start).unwrap_or(0);
                merged[from..from + bytes.len()].copy_from_slice(&bytes);
            }
        }
        let from = usize::try_from(offset - start).unwrap_or(0);
        merged[from..from + data.len()].copy_from_slice(data);
        self.extents.insert(start, merged);
        self.size = self.size.max(end);
    }

    fn truncate(&mut self, size: u64) {
        self.extents.retain(|at, _| *at < size);
        if let Some((at, bytes)) = self.extents.iter_mut().next_back() {
            let keep = usize::try_from(size - *at).unwrap_or(usize::MAX);
            bytes.truncate(keep);
        }
        self.size = size;
    }

    /// Lay the unsynced bytes over `buf`, which holds the file from `offset` on.
    fn overlay(&self, offset: u64, buf: &mut [u8]) {
        let end = offset + buf.len() as u64;
        for (at, bytes) in self.extents.range(..end) {
            let (from, to) = ((*at).max(offset), (at + bytes.len() as u64).min(end));
            if from < to {
                let src = usize::try_from(from - at).unwrap_or(0);
                let dst = usize::try_from(from - offset).unwrap_or(0);
                let n = usize::try_from(to - from).unwrap_or(0);
                buf[dst..dst + n].copy_from_slice(&bytes[src..src + n]);
            }
        }
    }
}

#[derive(Debug)]
struct State {
    backing: PathBuf,
    /// Inode → path relative to the backing directory (the root is `""`).
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_inode: u64,
    dirty: HashMap<u64, Dirty>,
    /// Open handles: the inode and the backing file, opened when the handle was, so a file
    /// unlinked or renamed over while open stays readable through it (as POSIX requires).
    handles: HashMap<u64, (u64, Arc<fs::File>)>,
    next_handle: u64,
}

impl State {
    fn real(&self, ino: u64) -> Result<PathBuf, Errno> {
        self.paths
            .get(&ino)
            .map(|p| self.backing.join(p))
            .ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        self.paths
            .get(&parent)
            .map(|p| p.join(name))
            .ok_or(Errno::ENOENT)
    }

    fn inode(&mut self, rel: &Path) -> u64 {
        if let Some(ino) = self.inodes.get(rel) {
            return *ino;
        }
        self.next_inode += 1;
        let ino = self.next_inode;
        self.inodes.insert(rel.to_path_buf(), ino);
        self.paths.insert(ino, rel.to_path_buf());
        ino
    }

    /// `rel` is gone (unlinked, or renamed over): its inode lives on while handles are open.
    fn forget_path(&mut self, rel: &Path) {
        if let Some(ino) = self.inodes.remove(rel) {
            self.paths.remove(&ino);
            if !self.handles.values().any(|(i, _)| *i == ino) {
                self.dirty.remove(&ino);
            }
        }
    }

    /// A backing file of `ino`: an open handle's (works after an unlink), else by its path.
    fn file(&self, ino: u64) -> Result<Arc<fs::File>, Errno> {
        if let Some((_, file)) = self.handles.values().find(|(i, _)| *i == ino) {
            return Ok(file.clone());
        }
        Ok(Arc::new(
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.real(ino)?)?,
        ))
    }

    fn open_handle(&mut self, ino: u64) -> Result<u64, Errno> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.real(ino)?)?;
        self.next_handle += 1;
        self.handles.insert(self.next_handle, (ino, Arc::new(file)));
        Ok(self.next_handle)
    }

    /// The file handle `fh` of `ino`, or any way to reach its backing file.
    fn handle(&self, fh: FileHandle, ino: u64) -> Result<Arc<fs::File>, Errno> {
        match self.handles.get(&fh.0) {
            Some((_, file)) => Ok(file.clone()),
            None => self.file(ino),
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let meta = match self.real(ino) {
            Ok(path) => fs::symlink_metadata(path)?,
            Err(_) => self.file(ino)?.metadata()?,
        };
        let kind = FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile);
        let size = self.dirty.get(&ino).map_or(meta.len(), |d| d.size);
        let time = |secs: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time(meta.atime()),
            mtime: time(meta.mtime()),
            ctime: time(meta.ctime()),
            crtime: time(meta.ctime()),
            kind,
            perm: u16::try_from(meta.permissions().mode() & 0o7777).unwrap_or(0o600),
            nlink: u32::try_from(meta.nlink()).unwrap_or(1),
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Write `ino`'s unsynced bytes to its backing file.
    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        let Some(dirty) = self.dirty.remove(&ino) else {
            return Ok(());
        };
        let file = self.file(ino)?;
        for (at, bytes) in &dirty.extents {
            file.write_all_at(bytes, *at)?;
        }
        file.set_len(dirty.size)?;
        Ok(())
    }

    fn dirty_for(&mut self, ino: u64) -> Result<&mut Dirty, Errno> {
        if !self.dirty.contains_key(&ino) {
            let size = self.file(ino)?.metadata()?.len();
            self.dirty.insert(
                ino,
                Dirty {
                    size,
                    ..Dirty::default()
                },
            );
        }
        self.dirty.get_mut(&ino).ok_or(Errno::EIO)
    }
}

/// The mounted filesystem; unmounted when dropped.
pub struct VolatileFs {
    state: Arc<Mutex<State>>,
    sync_delay: Arc<AtomicU64>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl VolatileFs {
    /// Mount a volatile view of `backing` (created if missing) at `mountpoint`.
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<VolatileFs> {
        fs::create_dir_all(backing)?;
        fs::create_dir_all(mountpoint)?;
        let mut paths = HashMap::new();
        let mut inodes = HashMap::new();
        paths.insert(INodeNo::ROOT.0, PathBuf::new());
        inodes.insert(PathBuf::new(), INodeNo::ROOT.0);
        let state = Arc::new(Mutex::new(State {
            backing: backing.to_path_buf(),
            paths,
            inodes,
            next_inode: INodeNo::ROOT.0,
            dirty: HashMap::new(),
            handles: HashMap::new(),
            next_handle: 0,
        }));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("volatilefs".into()),
            MountOption::DefaultPermissions,
        ];
        config.n_threads = Some(4);
        let sync_delay = Arc::new(AtomicU64::new(0));
        let session = fuser::spawn_mount2(
            Handler {
                state: state.clone(),
                sync_delay: sync_delay.clone(),
            },
            mountpoint,
            &config,
        )?;
        Ok(VolatileFs {
            state,
            sync_delay,
            mountpoint: mountpoint.to_path_buf(),
            session: Some(session),
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Make every `fsync` take `delay` longer (zero: as fast as the backing disk), as a
    /// saturated or failing disk does: the process using it stays up, its writes crawl.
    pub fn set_sync_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.sync_delay.store(ms, Ordering::Relaxed);
    }

    /// Drop every write not yet synced, as a power cut drops the page cache. Stop the processes
    /// using the filesystem first (`kill -9`): the cut is the moment they die. Returns the
    /// unsynced bytes dropped, per file (relative to the mount).
    pub fn cut_power(&self) -> Vec<(PathBuf, u64)> {
        let mut state = lock(&self.state);
        let dirty = std::mem::take(&mut state.dirty);
        let mut lost: Vec<(PathBuf, u64)> = dirty
            .into_iter()
            .map(|(ino, d)| {
                let path = state.paths.get(&ino).cloned().unwrap_or_default();
                (path, d.extents.values().map(|b| b.len() as u64).sum())
            })
            .filter(|(_, bytes)| *bytes > 0)
            .collect();
        lost.sort();
        lost
    }
}

impl Drop for VolatileFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Handler {
    state: Arc<Mutex<State>>,
    /// Milliseconds each `fsync` waits before syncing ([`VolatileFs::set_sync_delay`]).
    sync_delay: Arc<AtomicU64>,
}

impl Handler {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Create `name` in `parent` with `make`, then answer its attributes.
    fn make(
        &self,
        parent: INodeNo,
        name: &OsStr,
        make: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<FileAttr, Errno> {
        let mut st = self.state();
        let rel = st.child(parent.0, name)?;
        make(&st.backing.join(&rel))?;
        st.forget_path(&rel);
        let ino = st.inode(&rel);
        st.attr(ino)
    }
}

impl Handler {
    /// Remove `name` from `parent` with `remove`, forgetting its inode.
    fn remove(
        &self,
        parent: INodeNo,
        name: &OsStr,
        remove: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<(), Errno> {
        let mut st = self.state();
        let rel = st.child(parent.0, name)?;
        remove(&st.backing.join(&rel))?;
        st.forget_path(&rel);
        Ok(())
    }
}

impl Filesystem for Handler {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.state();
        let found = st.child(parent.0, name).and_then(|rel| {
            fs::symlink_metadata(st.backing.join(&rel))?;
            let ino = st.inode(&rel);
            st.attr(ino)
        });
        match found {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.state();
        let done = (|| {
            if let Some(mode) = mode {
                fs::set_permissions(st.real(ino.0)?, fs::Permissions::from_mode(mode))?;
            }
            if let Some(size) = size {
                st.dirty_for(ino.0)?.truncate(size);
            }
            st.attr(ino.0)
        })();
        match done {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let made = self.make(parent, name, |path| {
            fs::create_dir(path)?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
        });
        match made {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let made = self.make(parent, name, |path| {
            let mut open = fs::OpenOptions::new();
            open.write(true).create(true);
            if flags & libc::O_EXCL != 0 {
                open.create_new(true);
            }
            if flags & libc::O_TRUNC != 0 {
                open.truncate(true);
            }
            open.open(path)?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
        });
        match made.and_then(|attr| Ok((attr, self.state().open_handle(attr.ino.0)?))) {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent, name, |p| fs::remove_file(p)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent, name, |p| fs::remove_dir(p)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.state();
        let done = (|| {
            let from = st.child(parent.0, name)?;
            let to = st.child(newparent.0, newname)?;
            fs::rename(st.backing.join(&from), st.backing.join(&to))?;
            // The target's old inode is gone; every path under `from` moves under `to`, each
            // keeping its inode and its unsynced writes.
            st.forget_path(&to);
            let moved: Vec<(PathBuf, u64)> = st
                .inodes
                .iter()
                .filter(|(p, _)| p.starts_with(&from))
                .map(|(p, i)| (p.clone(), *i))
                .collect();
            for (old, ino) in moved {
                let new = match old.strip_prefix(&from) {
                    Ok(rest) if rest.as_os_str().is_empty() => to.clone(),
                    Ok(rest) => to.join(rest),
                    Err(_) => continue,
                };
                st.inodes.remove(&old);
                st.inodes.insert(new.clone(), ino);
                st.paths.insert(ino, new);
            }
            Ok::<(), Errno>(())
        })();
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.state();
        let done = (|| {
            if flags.0 & libc::O_TRUNC != 0 {
                st.dirty_for(ino.0)?.truncate(0);
            }
            st.open_handle(ino.0)
        })();
        match done {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.state();
        let done = (|| {
            let file = st.handle(fh, ino.0)?;
            let len = st
                .dirty
                .get(&ino.0)
                .map_or(file.metadata()?.len(), |d| d.size);
            let n = len.saturating_sub(offset).min(u64::from(size));
            let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0)];
            let mut filled = 0;
            while filled < buf.len() {
                match file.read_at(&mut buf[filled..], offset + filled as u64)? {
                    0 => break,
                    k => filled += k,
                }
            }
            if let Some(d) = st.dirty.get(&ino.0) {
                d.overlay(offset, &mut buf);
            }
            Ok::<_, Errno>(buf)
        })();
        match done {
            Ok(buf) => reply.data(&buf),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.state();
        match st.dirty_for(ino.0) {
            Ok(dirty) => {
                dirty.write(offset, data);
                reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX));
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() does not make data durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.state();
        st.handles.remove(&fh.0);
        // The last handle of a file whose name is gone: nothing can reach its writes any more.
        if !st.paths.contains_key(&ino.0) && !st.handles.values().any(|(i, _)| *i == ino.0) {
            st.dirty.remove(&ino.0);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Before the state lock: other operations go on meanwhile, as on a slow device.
        let delay = self.sync_delay.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        match self.state().sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Metadata is passed through at once.
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = self.state();
        let listed = (|| {
            let rel = st.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)?;
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (ino.0, FileType::Directory, "..".into()),
            ];
            for entry in fs::read_dir(st.backing.join(&rel))? {
                let entry = entry?;
                let kind = FileType::from_std(entry.file_type()?).unwrap_or(FileType::RegularFile);
                let child = st.inode(&rel.join(entry.file_name()));
                entries.push((child, kind, entry.file_name()));
            }
            Ok::<_, Errno>(entries)
        })();
        match listed {
            Ok(entries) => {
                let skip = usize::try_from(offset).unwrap_or(usize::MAX);
                for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(skip) {
                    if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Plenty of room: the backing directory's real figures do not matter to the tests.
        reply.statfs(1 << 30, 1 << 29, 1 << 29, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_merge_into_extents_and_overlay_what_is_on_disk() {
        let mut d = Dirty::default();
        d.write(10, b"abc");
        d.write(13, b"def");
        d.write(0, b"xy");
        d.write(11, b"ZZ");
        assert_eq!(d.extents.len(), 2);
        assert_eq!(d.size, 16);
        let mut buf = *b"................";
        d.overlay(0, &mut buf);
        assert_eq!(&buf, b"xy........aZZdef");
        d.truncate(12);
        let mut buf = *b"............";
        d.overlay(0, &mut buf);
        assert_eq!(&buf, b"xy........aZ");
        assert_eq!(d.size, 12);
    }
}
