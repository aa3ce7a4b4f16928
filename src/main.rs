mod backup_cli;
mod cli;
mod migrate_cli;
mod report_cli;
mod users_cli;

use br_cti::node;
use br_cti::serve_args::ServeArgs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use br_cti_engine::dataset::DatasetLimits;

/// br-cti: a cyber-threat-intelligence data node.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node: the HTTP APIs on an embedded database.
    Serve(Box<ServeArgs>),
    /// Print the column names of a dataset file (CSV, XLSX, XLS, JSON, JSON Lines), one per line.
    Features {
        /// The dataset file.
        file: PathBuf,
    },
    /// Convert a dataset to STIX 2.1 offline: JSON Lines files named by their SHA-256, or one bundle.
    Convert(cli::ConvertArgs),
    /// Manage the users allowed to report hidden dangers (add, list, rotate, remove).
    Users(users_cli::UsersArgs),
    /// Push hidden dangers (a JSON file) to the platform above, in signed batches with retries.
    Report(report_cli::ReportArgs),
    /// Copy the data directory consistently while the node runs (database, files, mappings)
    /// into a new directory, which `serve --data-dir` can then use as it is.
    Backup(backup_cli::BackupArgs),
    /// Move a data directory's records into PostgreSQL (and its files into an S3 bucket), so
    /// that several nodes can serve them.
    MigrateStore(migrate_cli::MigrateArgs),
}

/// Standard error for the log, never failing. tracing-subscriber reports a failed write with
/// `eprint!`, which panics when standard error itself cannot be written (a full disk under a
/// redirected log): every request that logs would then die unanswered. A log line that cannot
/// be written is dropped instead.
struct LogWriter(std::io::Stderr);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(|| LogWriter(std::io::stderr()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BRCTI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Features { file } => features(&file),
        Command::Convert(args) => cli::convert_command(args),
        Command::Users(args) => users_cli::users_command(args),
        Command::Report(args) => report_cli::report_command(args),
        Command::Backup(args) => backup_cli::backup_command(args),
        Command::MigrateStore(args) => migrate_cli::migrate_command(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config();
    tokio::runtime::Runtime::new()?.block_on(node::serve(config))
}

fn features(file: &std::path::Path) -> anyhow::Result<()> {
    let input = std::fs::File::open(file)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
    let columns = br_cti_engine::dataset::features(Box::new(input), &DatasetLimits::default())
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    for c in columns {
        println!("{c}");
    }
    Ok(())
}
