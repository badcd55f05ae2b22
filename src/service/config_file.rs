//! When the config file may be read: it is applied only once its writer
//! is done with it. On Linux, inotify on the file's directory and on the
//! file itself says when a writer holds it open, closes it, or when
//! another file is renamed onto its path; elsewhere, and as a backstop,
//! its content is compared at each poll. Either way two reads `SETTLE`
//! apart must agree.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub(super) fn digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(b).into())
}

/// How long a config file must stay the same before it is applied.
const SETTLE: Duration = Duration::from_millis(250);

/// The file's content once two reads `SETTLE` apart agree. A file written
/// in place is half written for a moment, and a valid prefix of a config
/// (a role's allow list without the deny list after it) must never apply.
pub(super) async fn settled_content(path: &Path) -> Result<String, String> {
    let read = || std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"));
    let first = read()?;
    tokio::time::sleep(SETTLE).await;
    let second = read()?;
    if first == second {
        Ok(second)
    } else {
        Err("the file is still being written; it is read again when it has settled".into())
    }
}

/// The longest a burst of events puts a reload off.
const LONGEST_BURST: Duration = Duration::from_secs(2);

/// What a file-system event says about the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // no events: polled
pub(super) enum Seen {
    /// Its content was written: a writer is at work.
    Written,
    /// A writer closed it.
    Closed,
    /// Its path names another file now (a rename onto it, a new file, a
    /// ConfigMap `..data` swap): whoever writes the old one is no concern.
    Replaced,
    /// Something else in its directory changed (a seed file it names, say).
    Changed,
    /// Events were lost: nothing is known about writers.
    Overflow,
}

/// What the events so far say: whether a writer holds the file, and
/// whether a reload is due once events have been quiet for a moment.
#[derive(Debug)]
pub(super) struct Hold {
    /// A writer changed the file and has not closed it.
    pub(super) writing: bool,
    /// Something changed since the last look.
    pub(super) due: bool,
    /// Events about the file itself so far: one that lands between the
    /// reads of a settle check means the read is not to be trusted.
    pub(super) touches: u64,
    /// Events come in bursts (a rename, then the new file's write); the
    /// reload waits for the burst to end rather than reading between them,
    /// but no longer than `LONGEST_BURST` after its first event: files
    /// beside the config that change all the time must not put it off for
    /// ever.
    pub(super) quiet_until: tokio::time::Instant,
    burst_began: Option<tokio::time::Instant>,
    /// The held-back change was logged (once per writer).
    pub(super) said: bool,
}

impl Hold {
    pub(super) fn new() -> Hold {
        Hold {
            writing: false,
            due: false,
            touches: 0,
            quiet_until: tokio::time::Instant::now(),
            burst_began: None,
            said: false,
        }
    }

    /// The quiet moment came: what was due is being looked at.
    pub(super) fn looked(&mut self) {
        self.due = false;
        self.burst_began = None;
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn see(&mut self, seen: Seen) {
        if seen != Seen::Changed {
            self.touches += 1;
        }
        match seen {
            Seen::Written => self.writing = true,
            Seen::Closed | Seen::Replaced | Seen::Overflow => {
                self.writing = false;
                self.said = false;
                self.due = true;
            }
            Seen::Changed => self.due = true,
        }
        let now = tokio::time::Instant::now();
        let began = *self.burst_began.get_or_insert(now);
        self.quiet_until = (now + SETTLE).min(began + LONGEST_BURST);
    }

    /// A change may be read now: there is one, and no writer holds the file.
    pub(super) fn ready(&self) -> bool {
        self.due && !self.writing
    }
}

#[cfg(target_os = "linux")]
pub(super) use inotify_watch::Watcher;

/// inotify on the config file's directory (renames, new files, ConfigMap
/// swaps) and on the file itself, wherever a symlink or a bind mount puts
/// it (writes there are not reported to the directory it is named in).
#[cfg(target_os = "linux")]
mod inotify_watch {
    use std::ffi::OsString;
    use std::io;
    use std::path::{Path, PathBuf};

    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    use super::{Hold, Seen};

    const FILE: WatchMask = WatchMask::MODIFY
        .union(WatchMask::CLOSE_WRITE)
        .union(WatchMask::DELETE_SELF)
        .union(WatchMask::MOVE_SELF);
    /// The directory's writes are not watched while the file has its own
    /// watch: a log or a database beside the config would wake the service
    /// at every write (a line per authorization, when the log is there).
    const DIR: WatchMask = WatchMask::CLOSE_WRITE
        .union(WatchMask::CREATE)
        .union(WatchMask::DELETE)
        .union(WatchMask::MOVED_FROM)
        .union(WatchMask::MOVED_TO)
        .union(WatchMask::DELETE_SELF)
        .union(WatchMask::MOVE_SELF)
        .union(WatchMask::ONLYDIR);
    /// While no file is at the path: a file created there is written to
    /// before its own watch is in place.
    const DIR_WITHOUT_FILE: WatchMask = DIR.union(WatchMask::MODIFY);

    pub(in crate::service) struct Watcher {
        fd: AsyncFd<Inotify>,
        path: PathBuf,
        name: OsString,
        dir: WatchDescriptor,
        file: Option<WatchDescriptor>,
        lost: bool,
    }

    struct Raw {
        wd: WatchDescriptor,
        mask: EventMask,
        name: Option<OsString>,
    }

    impl Watcher {
        pub(in crate::service) fn start(path: &Path) -> io::Result<Watcher> {
            let name = path
                .file_name()
                .ok_or_else(|| io::Error::other("the path names no file"))?
                .to_owned();
            let inotify = Inotify::init()?;
            let dir = inotify.watches().add(dir_of(path), DIR_WITHOUT_FILE)?;
            // SAFETY: `Inotify` owns its descriptor and always returns the
            // same one; it is closed only when the `AsyncFd` drops it.
            let fd = unsafe { AsyncFd::register_with_interest(inotify, Interest::READABLE) }?;
            let mut watcher = Watcher {
                fd,
                path: path.to_owned(),
                name,
                dir,
                file: None,
                lost: false,
            };
            watcher.resolve();
            Ok(watcher)
        }

        /// The directory's watch is gone (removed, moved, unmounted).
        pub(in crate::service) fn lost(&self) -> bool {
            self.lost
        }

        /// Waits for events and tells `hold` what they say. Cancel safe:
        /// nothing is read before the last await.
        pub(in crate::service) async fn next(&mut self, hold: &mut Hold) {
            loop {
                let Ok(mut ready) = self.fd.readable_mut().await else {
                    self.lost = true;
                    return;
                };
                match ready.try_io(|fd| read(fd.get_mut())) {
                    Ok(Ok(events)) if !events.is_empty() => {
                        drop(ready);
                        self.tell(events, hold);
                        return;
                    }
                    Ok(Ok(_)) | Err(_) => continue,
                    Ok(Err(_)) => {
                        self.lost = true;
                        return;
                    }
                }
            }
        }

        /// Tells `hold` what events are queued now, without waiting. The
        /// kernel queues a write's event before the write returns, so after
        /// this every finished write has been seen.
        pub(in crate::service) fn drain(&mut self, hold: &mut Hold) {
            match read(self.fd.get_mut()) {
                Ok(events) => self.tell(events, hold),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => self.lost = true,
            }
        }

        fn tell(&mut self, events: Vec<Raw>, hold: &mut Hold) {
            for event in events {
                if let Some(seen) = self.classify(event) {
                    hold.see(seen);
                }
            }
        }

        fn classify(&mut self, event: Raw) -> Option<Seen> {
            let Raw { wd, mask, name } = event;
            let replaced = |w: &mut Watcher| {
                if w.resolve() {
                    Seen::Replaced
                } else {
                    Seen::Changed
                }
            };
            if mask.contains(EventMask::Q_OVERFLOW) {
                self.resolve();
                return Some(Seen::Overflow);
            }
            if wd == self.dir {
                if mask.intersects(
                    EventMask::IGNORED
                        | EventMask::DELETE_SELF
                        | EventMask::MOVE_SELF
                        | EventMask::UNMOUNT,
                ) {
                    self.lost = true;
                    return None;
                }
                let ours = name.as_deref() == Some(self.name.as_os_str());
                return if mask.contains(EventMask::MODIFY) {
                    // Another file's writes matter once it is closed or
                    // renamed onto ours.
                    ours.then_some(Seen::Written)
                } else if mask.contains(EventMask::CLOSE_WRITE) {
                    Some(if ours { Seen::Closed } else { Seen::Changed })
                } else {
                    Some(replaced(self))
                };
            }
            if self.file.as_ref() != Some(&wd) {
                // A watch already given up (the file was replaced).
                return None;
            }
            if mask.contains(EventMask::MODIFY) {
                Some(Seen::Written)
            } else if mask.contains(EventMask::CLOSE_WRITE) {
                Some(Seen::Closed)
            } else {
                if mask.contains(EventMask::IGNORED) {
                    self.file = None;
                }
                Some(replaced(self))
            }
        }

        /// Points the file's watch at the file the path names now. True if
        /// that is another file than before (or none).
        fn resolve(&mut self) -> bool {
            let mut watches = self.fd.get_ref().watches();
            let now = watches.add(&self.path, FILE).ok();
            if now == self.file {
                return false;
            }
            if let Some(old) = self.file.take() {
                let _ = watches.remove(old);
            }
            // The file's watch is in place before the directory's writes
            // stop being watched, so no write falls between the two.
            let mask = if now.is_some() { DIR } else { DIR_WITHOUT_FILE };
            if watches.add(dir_of(&self.path), mask).ok().as_ref() != Some(&self.dir) {
                self.lost = true;
            }
            self.file = now;
            true
        }
    }

    /// The directory `path` names its file in.
    fn dir_of(path: &Path) -> &Path {
        match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        }
    }

    /// Every event queued now; WouldBlock if there is none.
    fn read(inotify: &mut Inotify) -> io::Result<Vec<Raw>> {
        let mut buffer = [0u8; 4096];
        let mut all = Vec::new();
        loop {
            match inotify.read_events(&mut buffer) {
                Ok(events) => all.extend(events.map(|e| Raw {
                    wd: e.wd,
                    mask: e.mask,
                    name: e.name.map(|n| n.to_owned()),
                })),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !all.is_empty() => {
                    return Ok(all)
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// No inotify here: the file is polled.
#[cfg(not(target_os = "linux"))]
pub(super) enum Watcher {}

#[cfg(not(target_os = "linux"))]
impl Watcher {
    pub(super) fn start(_: &Path) -> std::io::Result<Watcher> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    pub(super) fn lost(&self) -> bool {
        match *self {}
    }

    pub(super) async fn next(&mut self, _: &mut Hold) {
        match *self {}
    }

    pub(super) fn drain(&mut self, _: &mut Hold) {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_being_written_is_not_read_until_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "a").unwrap();
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    std::fs::write(&path, "a".repeat(i + 2)).unwrap();
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(settled_content(&path).await.is_err(), "read while written");
        writer.await.unwrap();
        assert_eq!(settled_content(&path).await.unwrap(), "a".repeat(21));
    }

    fn hold_after(seen: &[Seen]) -> Hold {
        let mut hold = Hold::new();
        for s in seen {
            hold.see(*s);
        }
        hold
    }

    #[test]
    fn a_written_file_waits_for_its_writer_to_close_it() {
        assert!(!hold_after(&[Seen::Written]).ready());
        assert!(!hold_after(&[Seen::Written, Seen::Changed]).ready());
        assert!(!hold_after(&[Seen::Closed, Seen::Written]).ready());
        assert!(hold_after(&[Seen::Written, Seen::Closed]).ready());
    }

    #[test]
    fn a_new_file_at_the_path_or_lost_events_end_the_wait() {
        assert!(hold_after(&[Seen::Written, Seen::Replaced]).ready());
        assert!(hold_after(&[Seen::Written, Seen::Overflow]).ready());
        assert!(hold_after(&[Seen::Changed]).ready());
        assert!(!Hold::new().ready());
    }

    #[tokio::test(start_paused = true)]
    async fn changes_beside_the_file_put_a_reload_off_for_two_seconds_at_most() {
        let mut hold = Hold::new();
        let first = tokio::time::Instant::now();
        for _ in 0..30 {
            hold.see(Seen::Changed);
            assert!(hold.quiet_until <= first + LONGEST_BURST);
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert!(hold.ready() && hold.quiet_until <= tokio::time::Instant::now());
        hold.looked();
        hold.see(Seen::Changed);
        assert_eq!(
            hold.quiet_until,
            tokio::time::Instant::now() + SETTLE,
            "a new burst waits its own quiet moment"
        );
    }

    #[test]
    fn only_events_on_the_file_itself_void_a_read() {
        assert_eq!(hold_after(&[Seen::Changed, Seen::Changed]).touches, 0);
        let all = [Seen::Written, Seen::Closed, Seen::Replaced, Seen::Overflow];
        assert_eq!(hold_after(&all).touches, 4);
    }

    /// Feeds `hold` every event that comes within a moment.
    #[cfg(target_os = "linux")]
    async fn events(watcher: &mut Watcher, hold: &mut Hold) {
        while tokio::time::timeout(Duration::from_millis(300), watcher.next(hold))
            .await
            .is_ok()
        {}
        assert!(!watcher.lost());
    }

    /// A config file in a directory of its own, and its watcher.
    #[cfg(target_os = "linux")]
    fn watched() -> (tempfile::TempDir, std::path::PathBuf, Watcher) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        let watcher = Watcher::start(&path).unwrap();
        (dir, path, watcher)
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn inotify_holds_a_file_while_its_writer_keeps_it_open() {
        use std::io::Write;
        let (dir, path, mut watcher) = watched();
        let mut hold = Hold::new();

        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"a = 2\n").unwrap();
        events(&mut watcher, &mut hold).await;
        assert!(hold.writing && !hold.ready());

        // Another file written and closed beside it changes nothing.
        std::fs::write(dir.path().join("other"), "x").unwrap();
        events(&mut watcher, &mut hold).await;
        assert!(hold.writing && !hold.ready());

        drop(file);
        events(&mut watcher, &mut hold).await;
        assert!(hold.ready());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_log_written_beside_the_config_wakes_nothing() {
        use std::io::Write;
        let (dir, path, mut watcher) = watched();
        let mut log = std::fs::File::create(dir.path().join("service.log")).unwrap();
        let mut hold = Hold::new();
        events(&mut watcher, &mut hold).await;
        hold.looked();
        let before = hold.touches;

        for _ in 0..1000 {
            log.write_all(b"an audit line\n").unwrap();
        }
        let woke = tokio::time::timeout(Duration::from_millis(300), watcher.next(&mut hold));
        assert!(
            woke.await.is_err(),
            "a write beside the config woke the watcher"
        );
        assert!(!hold.due && hold.touches == before);

        // The config's own writes are still seen.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"b = 1\n")
            .unwrap();
        events(&mut watcher, &mut hold).await;
        assert!(hold.due);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_config_deleted_then_written_anew_is_held_while_its_writer_has_it() {
        use std::io::Write;
        let (_dir, path, mut watcher) = watched();
        let mut hold = Hold::new();

        std::fs::remove_file(&path).unwrap();
        events(&mut watcher, &mut hold).await;
        // Created and written before the service has looked: only the
        // directory can tell of these writes.
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"a = 2\n").unwrap();
        events(&mut watcher, &mut hold).await;
        assert!(hold.writing && !hold.ready());
        file.write_all(b"b = 2\n").unwrap();
        drop(file);
        events(&mut watcher, &mut hold).await;
        assert!(hold.ready());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn inotify_sees_writes_and_swaps_through_configmap_symlinks() {
        use std::io::Write;
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for version in ["..v1", "..v2"] {
            std::fs::create_dir(d.join(version)).unwrap();
            std::fs::write(d.join(version).join("config.toml"), version).unwrap();
        }
        symlink("..v1", d.join("..data")).unwrap();
        symlink("..data/config.toml", d.join("config.toml")).unwrap();
        let mut watcher = Watcher::start(&d.join("config.toml")).unwrap();
        let mut hold = Hold::new();

        // Written where the symlinks lead, which the directory is not told.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(d.join("..v1/config.toml"))
            .unwrap();
        file.write_all(b"more").unwrap();
        events(&mut watcher, &mut hold).await;
        assert!(hold.writing);

        // Kubernetes' swap: a new `..data` link renamed over the old one.
        symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        events(&mut watcher, &mut hold).await;
        assert!(
            !hold.writing && hold.ready(),
            "the old file's writer is no concern"
        );

        // The new file is watched, the old one no longer.
        hold.due = false;
        file.write_all(b"more").unwrap();
        drop(file);
        events(&mut watcher, &mut hold).await;
        assert!(!hold.writing && !hold.due);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(d.join("..v2/config.toml"))
            .unwrap();
        file.write_all(b"more").unwrap();
        events(&mut watcher, &mut hold).await;
        assert!(hold.writing);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn inotify_applies_a_file_renamed_onto_the_path_at_once() {
        use std::io::Write;
        let (dir, path, mut watcher) = watched();
        let mut hold = Hold::new();

        let mut old_writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        old_writer.write_all(b"b = 1\n").unwrap();
        let new = dir.path().join("config.toml.new");
        std::fs::write(&new, "a = 2\n").unwrap();
        events(&mut watcher, &mut hold).await;
        assert!(hold.writing);
        std::fs::rename(&new, &path).unwrap();
        events(&mut watcher, &mut hold).await;
        assert!(hold.ready());
        // Its name is all the directory tells of the replaced file's
        // writer: that may delay the new file, never leave it held.
        drop(old_writer);
        events(&mut watcher, &mut hold).await;
        assert!(hold.ready());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_write_is_seen_at_once_without_waiting_for_the_reactor() {
        let (_dir, path, mut watcher) = watched();
        let mut hold = Hold::new();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Write::write_all(&mut &file, b"a = 2\n").unwrap();
        watcher.drain(&mut hold);
        assert!(hold.writing);
    }
}
