//! A file system in memory that loses power on cue, deterministically.
//!
//! Every file keeps what its last `sync_data` made durable and the operations since. After
//! a budget of mutating operations the power fails: every call errs from then on. Then
//! [`SimIo::power_loss`] decides, from a seeded RNG, what the disk holds: the synced
//! contents, plus a prefix of the unsynced operations, the last of them possibly torn at a
//! 512-byte sector boundary (so mid-record); a file whose directory entry was never synced
//! may vanish altogether. Handles from before the loss stay dead.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::Rng;

use super::io::{Io, IoFile};

const SECTOR: u64 = 512;

#[derive(Clone, Debug)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    Truncate(u64),
}

fn apply(content: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[*offset as usize..end].copy_from_slice(data);
        }
        Op::Truncate(len) => content.resize(*len as usize, 0),
    }
}

#[derive(Default)]
struct FileState {
    data: Vec<u8>,
    synced: Vec<u8>,
    unsynced: Vec<Op>,
    name_durable: bool,
}

#[derive(Default)]
struct Sim {
    generation: u64,
    /// Mutating operations left before the power fails; `None`: no failure planned.
    budget: Option<u64>,
    /// The planned failure is an I/O error that passes (the power stays on).
    transient: bool,
    dead: bool,
    files: BTreeMap<PathBuf, FileState>,
    syncs: u64,
}

impl Sim {
    fn alive(&self, generation: u64) -> io::Result<()> {
        if self.dead || generation != self.generation {
            Err(io::Error::other("the power is off"))
        } else {
            Ok(())
        }
    }

    /// Spends one mutating operation of the budget.
    fn spend(&mut self, generation: u64) -> io::Result<()> {
        self.alive(generation)?;
        if let Some(left) = &mut self.budget {
            if *left == 0 {
                self.budget = None;
                if std::mem::take(&mut self.transient) {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                self.dead = true;
                return Err(io::Error::other("the power failed"));
            }
            *left -= 1;
        }
        Ok(())
    }
}

/// The simulated file system. Cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct SimIo(Arc<Mutex<Sim>>);

impl SimIo {
    pub fn new() -> SimIo {
        SimIo::default()
    }

    /// The power fails at the `ops`-th mutating operation from now.
    pub fn fail_after(&self, ops: u64) {
        self.0.lock().unwrap().budget = Some(ops);
    }

    /// The `ops`-th mutating operation from now fails with `EIO`, once; the power stays on
    /// and what the file holds in memory stays as it was (as a page cache would).
    pub fn fail_once_after(&self, ops: u64) {
        let mut sim = self.0.lock().unwrap();
        sim.budget = Some(ops);
        sim.transient = true;
    }

    /// Whether the power has failed.
    pub fn dead(&self) -> bool {
        self.0.lock().unwrap().dead
    }

    /// File syncs so far.
    pub fn syncs(&self) -> u64 {
        self.0.lock().unwrap().syncs
    }

    /// Cuts the power now, decides what survives, and turns the power back on.
    pub fn power_loss(&self, rng: &mut StdRng) {
        let mut sim = self.0.lock().unwrap();
        let files = std::mem::take(&mut sim.files);
        for (path, file) in files {
            if !file.name_durable && rng.random_bool(0.5) {
                continue;
            }
            let mut content = file.synced;
            let kept = rng.random_range(0..=file.unsynced.len());
            for op in &file.unsynced[..kept] {
                apply(&mut content, op);
            }
            if let Some(Op::Write { offset, data }) = file.unsynced.get(kept) {
                // Torn: the sectors up to some boundary inside the write reached the disk.
                let end = offset + data.len() as u64;
                let first = (offset / SECTOR + 1) * SECTOR;
                let bounds: Vec<u64> = (first..end).step_by(SECTOR as usize).collect();
                if !bounds.is_empty() && rng.random_bool(0.5) {
                    let cut = bounds[rng.random_range(0..bounds.len())];
                    let torn = Op::Write {
                        offset: *offset,
                        data: data[..(cut - offset) as usize].to_vec(),
                    };
                    apply(&mut content, &torn);
                }
            }
            sim.files.insert(
                path,
                FileState {
                    data: content.clone(),
                    synced: content,
                    unsynced: Vec::new(),
                    name_durable: true,
                },
            );
        }
        sim.generation += 1;
        sim.dead = false;
        sim.budget = None;
    }
}

struct SimFile {
    sim: SimIo,
    path: PathBuf,
    generation: u64,
}

impl SimFile {
    fn with<T>(
        &self,
        mutating: bool,
        f: impl FnOnce(&mut FileState) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut sim = self.sim.0.lock().unwrap();
        if mutating {
            sim.spend(self.generation)?;
        } else {
            sim.alive(self.generation)?;
        }
        let file = sim
            .files
            .get_mut(&self.path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        f(file)
    }
}

impl IoFile for SimFile {
    fn size(&self) -> io::Result<u64> {
        self.with(false, |f| Ok(f.data.len() as u64))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.with(false, |f| {
            let end = offset as usize + buf.len();
            if end > f.data.len() {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            buf.copy_from_slice(&f.data[offset as usize..end]);
            Ok(())
        })
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(true, |f| {
            let op = Op::Write {
                offset,
                data: data.to_vec(),
            };
            apply(&mut f.data, &op);
            f.unsynced.push(op);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut sim = self.sim.0.lock().unwrap();
        sim.spend(self.generation)?;
        sim.syncs += 1;
        let file = sim
            .files
            .get_mut(&self.path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        file.synced = file.data.clone();
        file.unsynced.clear();
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.with(true, |f| {
            let op = Op::Truncate(len);
            apply(&mut f.data, &op);
            f.unsynced.push(op);
            Ok(())
        })
    }
}

impl Io for SimIo {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        let sim = self.0.lock().unwrap();
        sim.alive(sim.generation)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let sim = self.0.lock().unwrap();
        sim.alive(sim.generation)?;
        Ok(sim
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        let mut sim = self.0.lock().unwrap();
        let generation = sim.generation;
        sim.spend(generation)?;
        if sim.files.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        sim.files.insert(path.to_path_buf(), FileState::default());
        Ok(Arc::new(SimFile {
            sim: self.clone(),
            path: path.to_path_buf(),
            generation,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        let sim = self.0.lock().unwrap();
        sim.alive(sim.generation)?;
        if !sim.files.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(Arc::new(SimFile {
            sim: self.clone(),
            path: path.to_path_buf(),
            generation: sim.generation,
        }))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut sim = self.0.lock().unwrap();
        let generation = sim.generation;
        sim.spend(generation)?;
        for (path, file) in sim.files.iter_mut() {
            if path.parent() == Some(dir) {
                file.name_durable = true;
            }
        }
        Ok(())
    }

    fn inline(&self) -> bool {
        true
    }
}
