//! The resume journal of one output: which tensors of the `.part` file are finished, with a hash
//! of their bytes, so `--resume` continues an interrupted conversion and verifies what it keeps.
//!
//! Format (text, one record per line, appended and fsynced after each tensor):
//! `grok1-quant-journal 1`, `plan <hex>`, then `done <tensor index> <hex hash>` lines. A torn last
//! line (killed mid-write) is ignored.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &str = "grok1-quant-journal 1";

pub struct Journal {
    path: PathBuf,
    file: File,
    done: BTreeMap<usize, u64>,
}

/// Why an existing journal cannot be used.
#[derive(Debug)]
pub enum JournalError {
    Io(PathBuf, io::Error),
    /// The journal belongs to another plan (different input, options or tool version).
    PlanMismatch(PathBuf),
    Corrupt(PathBuf, String),
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            JournalError::PlanMismatch(p) => write!(
                f,
                "{}: written for a different conversion (input files, types or options changed); remove it and the .part file, or run without --resume and with --force",
                p.display()
            ),
            JournalError::Corrupt(p, what) => write!(f, "{}: corrupt journal: {what}", p.display()),
        }
    }
}

impl std::error::Error for JournalError {}

impl Journal {
    /// Start a new journal for `plan`, replacing any old one.
    pub fn create(path: &Path, plan: u64) -> Result<Journal, JournalError> {
        let io_err = |e| JournalError::Io(path.to_path_buf(), e);
        let mut file = File::create(path).map_err(io_err)?;
        writeln!(file, "{MAGIC}\nplan {plan:016x}").map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            done: BTreeMap::new(),
        })
    }

    /// Open an existing journal and check it belongs to `plan`. A journal that is missing, or
    /// whose header was torn while it was being created (a prefix of the header this plan
    /// writes), records no finished tensor: it is started afresh.
    pub fn open(path: &Path, plan: u64) -> Result<Journal, JournalError> {
        let io_err = |e| JournalError::Io(path.to_path_buf(), e);
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Journal::create(path, plan)
            }
            Err(e) => return Err(io_err(e)),
        };
        let header = format!("{MAGIC}\nplan {plan:016x}\n");
        if text.len() < header.len() && header.as_bytes().starts_with(&text) {
            return Journal::create(path, plan);
        }
        let complete = match text.iter().rposition(|&b| b == b'\n') {
            Some(end) => &text[..=end],
            None => &text[..0],
        };
        let text = String::from_utf8_lossy(complete);
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(JournalError::Corrupt(
                path.to_path_buf(),
                format!("first line is not '{MAGIC}'"),
            ));
        }
        if lines.next() != Some(format!("plan {plan:016x}").as_str()) {
            return Err(JournalError::PlanMismatch(path.to_path_buf()));
        }
        let mut done = BTreeMap::new();
        for (n, line) in lines.enumerate() {
            let parts: Vec<&str> = line.split(' ').collect();
            let parsed = match parts.as_slice() {
                ["done", idx, hash] => idx
                    .parse::<usize>()
                    .ok()
                    .zip(u64::from_str_radix(hash, 16).ok()),
                _ => None,
            };
            let Some((idx, hash)) = parsed else {
                return Err(JournalError::Corrupt(
                    path.to_path_buf(),
                    format!("line {}: '{line}'", n + 3),
                ));
            };
            done.insert(idx, hash);
        }
        // Drop a torn tail so new records start on a fresh line.
        let file = OpenOptions::new().write(true).open(path).map_err(io_err)?;
        file.set_len(complete.len() as u64).map_err(io_err)?;
        let mut file = OpenOptions::new().append(true).open(path).map_err(io_err)?;
        file.flush().map_err(io_err)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            done,
        })
    }

    /// Tensors recorded as finished, with their hashes.
    pub fn done(&self) -> &BTreeMap<usize, u64> {
        &self.done
    }

    /// Forget a tensor whose bytes failed verification.
    pub fn forget(&mut self, index: usize) {
        self.done.remove(&index);
    }

    /// Record a finished tensor. The caller has already synced its data to the `.part` file.
    pub fn record(&mut self, index: usize, hash: u64) -> Result<(), JournalError> {
        let io_err = |e| JournalError::Io(self.path.clone(), e);
        writeln!(self.file, "done {index} {hash:016x}").map_err(io_err)?;
        self.file.sync_data().map_err(io_err)?;
        self.done.insert(index, hash);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let mut j = Journal::create(&p, 42).unwrap();
        j.record(3, 0xabc).unwrap();
        j.record(5, 7).unwrap();
        drop(j);
        // A torn record at the end.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"done 9 12").unwrap();
        drop(f);
        let mut j = Journal::open(&p, 42).unwrap();
        assert_eq!(j.done().len(), 2);
        assert_eq!(j.done()[&3], 0xabc);
        j.record(9, 1).unwrap();
        let j = Journal::open(&p, 42).unwrap();
        assert_eq!(j.done().keys().copied().collect::<Vec<_>>(), vec![3, 5, 9]);
        assert!(matches!(
            Journal::open(&p, 43),
            Err(JournalError::PlanMismatch(_))
        ));
    }

    #[test]
    fn torn_or_missing_header_starts_afresh_but_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        // Missing.
        assert!(Journal::open(&p, 7).unwrap().done().is_empty());
        // Torn at every point of the header.
        let header = format!("{MAGIC}\nplan {:016x}\n", 7u64);
        for cut in 0..header.len() {
            std::fs::write(&p, &header.as_bytes()[..cut]).unwrap();
            let mut j = Journal::open(&p, 7).unwrap();
            assert!(j.done().is_empty(), "cut {cut}");
            j.record(1, 2).unwrap();
            assert_eq!(Journal::open(&p, 7).unwrap().done().len(), 1, "cut {cut}");
        }
        // Not a prefix of our header: refused.
        std::fs::write(&p, b"something else").unwrap();
        assert!(matches!(
            Journal::open(&p, 7),
            Err(JournalError::Corrupt(..))
        ));
    }
}
