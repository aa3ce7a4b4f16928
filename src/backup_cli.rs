//! `br-cti backup DEST`: a consistent copy of a data directory, taken while the node runs.
//! The database first (SQLite's online backup: one consistent state), then the files (they are
//! immutable and written before the records that name them, so every file the copied database
//! names is there), then the mapping tables. DEST is then a data directory of its own:
//! `br-cti serve --data-dir DEST` serves what the node had at the time of the backup.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use br_cti_store_local::{FsBlobStore, backup_database};

#[derive(clap::Args, Debug)]
pub(crate) struct BackupArgs {
    /// Where to write the backup: a directory that does not exist yet, or an empty one.
    pub dest: PathBuf,
    /// The node's data directory (as for `serve`).
    #[arg(long, env = "BRCTI_DATA_DIR", default_value = "./br-cti-data")]
    pub data_dir: PathBuf,
}

pub(crate) fn backup_command(args: BackupArgs) -> anyhow::Result<()> {
    let database = args.data_dir.join("br-cti.sqlite");
    if !database.is_file() {
        bail!(
            "{} holds no node database (br-cti.sqlite): is --data-dir right?",
            args.data_dir.display()
        );
    }
    if args.dest.exists()
        && std::fs::read_dir(&args.dest)
            .with_context(|| format!("cannot read {}", args.dest.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: a backup goes to a new or empty directory",
            args.dest.display()
        );
    }
    std::fs::create_dir_all(&args.dest)
        .with_context(|| format!("cannot create {}", args.dest.display()))?;
    let partial = args.dest.join(".br-cti.sqlite.partial");
    backup_database(&database, &partial).context("copying the database")?;
    std::fs::rename(&partial, args.dest.join("br-cti.sqlite"))?;
    let db_bytes = std::fs::metadata(args.dest.join("br-cti.sqlite"))?.len();
    let (files, bytes) =
        FsBlobStore::copy_all(&args.data_dir, &args.dest).context("copying the files")?;
    let mappings = copy_dir(&args.data_dir.join("mappings"), &args.dest.join("mappings"))?;
    sync_dir(&args.dest)?;
    println!(
        "backup of {} written to {}: database {db_bytes} bytes, {files} files ({bytes} bytes), \
         {mappings} mapping tables",
        args.data_dir.display(),
        args.dest.display()
    );
    Ok(())
}

/// Copies the regular files of `from` (when it exists) into `to`; answers how many.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<u64> {
    if !from.is_dir() {
        return Ok(0);
    }
    std::fs::create_dir_all(to)?;
    let mut n = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            n += 1;
        }
    }
    sync_dir(to)?;
    Ok(n)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
