//! The spill directory: events that neither the store nor memory can take right now, as JSON
//! lines. Appends go to one *active* file; to replay, the writer rotates it (a new active file
//! takes further appends) and reads the old one back, so reading never races with appending.
//! A file is deleted only after every batch read from it was committed; a crash before that
//! means it is read again, which is harmless because writes are idempotent.
//!
//! File names are `spill-<uuid v7>.jsonl` (creation order). At start every such file is left
//! from an earlier process and is replayed. `ledger.lock` (an exclusive `flock`) keeps a
//! second ledger out of the directory.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Deserialize;
use uuid::Uuid;

use crate::{LedgerError, UsageEvent};

const LOCK_FILE: &str = "ledger.lock";
const PREFIX: &str = "spill-";
const SUFFIX: &str = ".jsonl";

/// No event: the `oldest` value when nothing is spilled.
const NONE: i64 = i64::MAX;

#[derive(Debug)]
pub(crate) struct Spill {
    dir: PathBuf,
    active: Mutex<Active>,
    /// Lines were appended without an fsync (by `record` on a full channel).
    dirty: AtomicBool,
    /// The earliest `finished_at` (µs) among spilled events not yet replayed, for the lag.
    oldest: AtomicI64,
    /// Held (and locked) for the ledger's life.
    _lock: File,
}

#[derive(Debug)]
struct Active {
    file: Arc<File>,
    path: PathBuf,
    lines: u64,
    /// Bytes in the file: where a failed append is cut back to, without a `stat` per append.
    len: u64,
}

/// A spill file waiting to be replayed, and how far it has been.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub path: PathBuf,
    pub offset: u64,
    pub lines: u64,
}

/// Events read from a spill file, and where the next read starts.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub events: Vec<UsageEvent>,
    pub next_offset: u64,
    pub eof: bool,
    /// Lines that did not parse (a write torn by a crash); they cannot be recovered.
    pub corrupt: u64,
}

#[derive(Deserialize)]
struct FinishedAt {
    finished_at: DateTime<Utc>,
}

fn spill_error(path: &Path) -> impl FnOnce(io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Spill {
        path: path.to_path_buf(),
        source,
    }
}

impl Spill {
    /// Locks `dir` (creating it) and returns the files an earlier process left, oldest first.
    pub fn open(dir: &Path) -> Result<(Self, Vec<Pending>), LedgerError> {
        fs::create_dir_all(dir).map_err(spill_error(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(spill_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LedgerError::SpillDirInUse(dir.to_path_buf()))
            }
            Err(TryLockError::Error(source)) => return Err(spill_error(&lock_path)(source)),
        }
        let mut paths = Vec::new();
        for entry in fs::read_dir(dir).map_err(spill_error(dir))? {
            let path = entry.map_err(spill_error(dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(PREFIX) && name.ends_with(SUFFIX) {
                paths.push(path);
            }
        }
        paths.sort();
        let mut oldest = NONE;
        let mut pending = Vec::new();
        for path in paths {
            let (lines, first) = survey(&path).map_err(spill_error(&path))?;
            if lines == 0 {
                fs::remove_file(&path).map_err(spill_error(&path))?;
                continue;
            }
            oldest = oldest.min(first);
            pending.push(Pending {
                path,
                offset: 0,
                lines,
            });
        }
        let active = Active::create(dir).map_err(spill_error(dir))?;
        let spill = Self {
            dir: dir.to_path_buf(),
            active: Mutex::new(active),
            dirty: AtomicBool::new(false),
            oldest: AtomicI64::new(oldest),
            _lock: lock,
        };
        Ok((spill, pending))
    }

    /// Appends one event without an fsync (the request path calls this). The line reaches
    /// the page cache, so it survives the process; the writer fsyncs it within a tick.
    pub fn append_unsynced(&self, event: &UsageEvent) -> io::Result<()> {
        let lines = encode(std::slice::from_ref(event))?;
        let mut active = self.active.lock();
        active.append(&lines)?;
        active.lines += 1;
        self.oldest
            .fetch_min(event.finished_at.timestamp_micros(), Ordering::Relaxed);
        drop(active);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Appends `events` and fsyncs them (with any unsynced lines before them).
    pub fn append_synced(&self, events: &[UsageEvent]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let lines = encode(events)?;
        let oldest = events
            .iter()
            .map(|e| e.finished_at.timestamp_micros())
            .min()
            .unwrap_or(NONE);
        let mut active = self.active.lock();
        active.append(&lines)?;
        active.lines += events.len() as u64;
        self.oldest.fetch_min(oldest, Ordering::Relaxed);
        let file = Arc::clone(&active.file);
        drop(active);
        self.dirty.store(false, Ordering::Release);
        file.sync_data().inspect_err(|_| {
            self.dirty.store(true, Ordering::Release);
        })
    }

    /// Whether the active file holds no line (cheap enough for every writer step).
    pub fn is_empty(&self) -> bool {
        self.active.lock().lines == 0
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Fsyncs lines appended by `record` since the last fsync (group commit).
    pub fn sync_if_dirty(&self) -> io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let file = Arc::clone(&self.active.lock().file);
        file.sync_data().inspect_err(|_| {
            self.dirty.store(true, Ordering::Release);
        })
    }

    /// Hands the active file over for replay when it holds any line; a new, empty active
    /// file takes further appends.
    pub fn rotate(&self) -> io::Result<Option<Pending>> {
        let mut active = self.active.lock();
        if active.lines == 0 {
            return Ok(None);
        }
        let old = std::mem::replace(&mut *active, Active::create(&self.dir)?);
        drop(active);
        old.file.sync_data()?;
        Ok(Some(Pending {
            path: old.path,
            offset: 0,
            lines: old.lines,
        }))
    }

    /// Forgets the oldest spilled time once nothing is spilled any more.
    pub fn clear_oldest_if_empty(&self, nothing_pending: bool) {
        let active = self.active.lock();
        if nothing_pending && active.lines == 0 {
            self.oldest.store(NONE, Ordering::Relaxed);
        }
    }

    /// The earliest `finished_at` (µs since the epoch) among spilled, unreplayed events.
    pub fn oldest_micros(&self) -> Option<i64> {
        Some(self.oldest.load(Ordering::Relaxed)).filter(|&m| m != NONE)
    }
}

impl Active {
    fn create(dir: &Path) -> io::Result<Self> {
        let path = dir.join(format!("{PREFIX}{}{SUFFIX}", Uuid::now_v7().simple()));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        // The new name must survive a power loss as well as the lines fsynced into it.
        File::open(dir)?.sync_all()?;
        Ok(Self {
            file: Arc::new(file),
            path,
            lines: 0,
            len: 0,
        })
    }

    /// Appends whole lines: a failed write is cut back so no torn line precedes later appends.
    fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        let mut writer = &*self.file;
        match writer.write_all(lines) {
            Ok(()) => {
                self.len += lines.len() as u64;
                Ok(())
            }
            Err(error) => {
                let _ = self.file.set_len(self.len);
                Err(error)
            }
        }
    }
}

fn encode(events: &[UsageEvent]) -> io::Result<Vec<u8>> {
    let mut lines = Vec::with_capacity(events.len() * 400);
    for event in events {
        serde_json::to_writer(&mut lines, event).map_err(io::Error::other)?;
        lines.push(b'\n');
    }
    Ok(lines)
}

/// Counts a leftover file's lines and finds its earliest event.
fn survey(path: &Path) -> io::Result<(u64, i64)> {
    let mut lines = 0;
    let mut oldest = NONE;
    for line in BufReader::new(File::open(path)?).split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        lines += 1;
        if let Ok(at) = serde_json::from_slice::<FinishedAt>(&line) {
            oldest = oldest.min(at.finished_at.timestamp_micros());
        }
    }
    Ok((lines, oldest))
}

/// Reads up to `max` events of a spill file from `offset` (blocking; run off the runtime).
pub(crate) fn read_chunk(path: &Path, offset: u64, max: usize) -> io::Result<Chunk> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file);
    let mut chunk = Chunk {
        events: Vec::with_capacity(max),
        next_offset: offset,
        eof: false,
        corrupt: 0,
    };
    let mut line = Vec::new();
    while chunk.events.len() < max {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 {
            chunk.eof = true;
            break;
        }
        chunk.next_offset += read as u64;
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        if body.is_empty() {
            continue;
        }
        match serde_json::from_slice::<UsageEvent>(body) {
            Ok(event) => chunk.events.push(event),
            Err(error) => {
                chunk.corrupt += 1;
                tracing::error!(
                    path = %path.display(),
                    offset = chunk.next_offset - read as u64,
                    %error,
                    "unreadable line in a usage spill file (a write torn by a crash)"
                );
            }
        }
    }
    Ok(chunk)
}

pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("usage-spill-{}", Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn event(n: u64) -> UsageEvent {
        let mut e = UsageEvent::openai(Uuid::new_v4(), "gpt", "chat", Utc::now());
        e.prompt_tokens = n;
        e
    }

    #[test]
    fn a_rotated_file_reads_back_every_appended_event_in_chunks() {
        let dir = temp_dir();
        let (spill, pending) = Spill::open(&dir).unwrap();
        assert!(pending.is_empty());
        let events: Vec<_> = (0..7).map(event).collect();
        spill.append_synced(&events[..3]).unwrap();
        for e in &events[3..] {
            spill.append_unsynced(e).unwrap();
        }
        spill.sync_if_dirty().unwrap();
        let file = spill.rotate().unwrap().unwrap();
        assert_eq!(file.lines, 7);
        assert!(
            spill.rotate().unwrap().is_none(),
            "the new active file is empty"
        );
        let first = read_chunk(&file.path, 0, 4).unwrap();
        assert_eq!((first.events.len(), first.eof), (4, false));
        let rest = read_chunk(&file.path, first.next_offset, 4).unwrap();
        assert_eq!((rest.events.len(), rest.eof), (3, true));
        let read: Vec<_> = first.events.into_iter().chain(rest.events).collect();
        assert_eq!(read, events);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_counted_and_skipped() {
        let dir = temp_dir();
        let path = dir.join("spill-torn.jsonl");
        let mut text = serde_json::to_string(&event(1)).unwrap();
        text.push('\n');
        text.push_str("{\"id\":\"01");
        fs::write(&path, text).unwrap();
        let chunk = read_chunk(&path, 0, 10).unwrap();
        assert_eq!((chunk.events.len(), chunk.corrupt, chunk.eof), (1, 1, true));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn files_left_behind_are_pending_and_the_directory_is_exclusive() {
        let dir = temp_dir();
        {
            let (spill, _) = Spill::open(&dir).unwrap();
            spill.append_synced(&[event(1), event(2)]).unwrap();
            assert!(matches!(
                Spill::open(&dir),
                Err(LedgerError::SpillDirInUse(_))
            ));
        }
        let (spill, pending) = Spill::open(&dir).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].lines, 2);
        assert!(spill.oldest_micros().is_some());
        fs::remove_dir_all(dir).unwrap();
    }
}
