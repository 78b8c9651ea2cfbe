//! Run directories: `--out DIR`, or a new numbered directory under `runs/`.

use anyhow::{Context, Result, bail};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Where a run will write, checked before any work is done.
#[derive(Debug)]
pub enum OutDir {
    /// A directory given with `--out` that is absent or empty.
    Given(PathBuf),
    /// The next free `runs/run-NNN`.
    Numbered,
    /// The directory of a run being resumed, written into again.
    Existing(PathBuf),
}

/// Checks `--out`: an existing non-empty directory, or a file, is an error.
pub fn check_out(out: Option<&Path>) -> Result<OutDir> {
    let Some(dir) = out else {
        return Ok(OutDir::Numbered);
    };
    if dir.is_file() {
        bail!(
            "--out {}: a file with that name exists; choose a directory name",
            dir.display()
        );
    }
    if dir.is_dir() {
        let mut entries = fs::read_dir(dir)
            .with_context(|| format!("--out {}: failed to read the directory", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "--out {}: the directory exists and is not empty; choose another name \
                 so the earlier run is kept",
                dir.display()
            );
        }
    }
    Ok(OutDir::Given(dir.to_path_buf()))
}

/// Creates the run directory, checks that files can be written into it, and returns its
/// path, so an unwritable directory fails before training rather than after it.
pub fn create(out: OutDir) -> Result<PathBuf> {
    let resuming = matches!(out, OutDir::Existing(_));
    let dir = create_dir(out)?;
    let probe = dir.join(".densetrain-write-check");
    fs::write(&probe, b"")
        .and_then(|()| fs::remove_file(&probe))
        .with_context(|| {
            let advice = if resuming {
                "make it writable, or copy it to a writable place and resume the copy"
            } else {
                "choose another --out"
            };
            format!(
                "{}: the run directory is not writable; {advice}",
                dir.display()
            )
        })?;
    Ok(dir)
}

fn create_dir(out: OutDir) -> Result<PathBuf> {
    match out {
        OutDir::Existing(dir) => Ok(dir),
        OutDir::Given(dir) => {
            fs::create_dir_all(&dir).with_context(|| {
                format!("--out {}: failed to create the directory", dir.display())
            })?;
            Ok(dir)
        }
        OutDir::Numbered => {
            let root = Path::new("runs");
            fs::create_dir_all(root).context("failed to create the directory runs/")?;
            for n in 1..100_000 {
                let dir = root.join(format!("run-{n:03}"));
                match fs::create_dir(&dir) {
                    Ok(()) => return Ok(dir),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("failed to create {}", dir.display()));
                    }
                }
            }
            bail!("runs/ holds 99,999 numbered runs; pass --out DIR or clean up runs/")
        }
    }
}
