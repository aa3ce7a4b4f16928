//! `br-cti users …`: the platforms allowed to report hidden dangers. Works on the node's data
//! directory directly (a running node sees changes at once: it reads users per request).

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::hidden_danger::auth::{check_user_name, new_token};
use crate::store::{HiddenDangerStore, SqliteStore};
use crate::time_util::ms_to_display;

#[derive(clap::Args, Debug)]
pub struct UsersArgs {
    #[command(subcommand)]
    pub command: UsersCommand,
    /// The node's data directory (as for `serve`).
    #[arg(
        long,
        env = "BRCTI_DATA_DIR",
        default_value = "./br-cti-data",
        global = true
    )]
    pub data_dir: PathBuf,
}

#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a user; prints its new token as the last line.
    Add { name: String },
    /// List users (never their tokens).
    List,
    /// Give a user a new token (the old one stops working); prints it as the last line.
    Rotate { name: String },
    /// Remove a user (the hidden dangers it reported are kept).
    Remove { name: String },
}

pub fn users_command(args: UsersArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let store = SqliteStore::open(&args.data_dir.join("br-cti.sqlite"))?;
    match args.command {
        UsersCommand::Add { name } => {
            check_user_name(&name).map_err(anyhow::Error::msg)?;
            let token = new_token();
            store.add_user(&name, &token)?;
            println!("user {name} added; its token (shown once, keep it secret):");
            println!("{token}");
        }
        UsersCommand::List => {
            let users = store.users()?;
            if users.is_empty() {
                println!("no users (add one with `br-cti users add NAME`)");
            }
            for u in users {
                println!(
                    "{}\tcreated {}\ttoken set {}",
                    u.name,
                    ms_to_display(u.created_at),
                    ms_to_display(u.rotated_at)
                );
            }
        }
        UsersCommand::Rotate { name } => {
            let token = new_token();
            if !store.rotate_user(&name, &token)? {
                bail!("no user {name:?}");
            }
            println!("user {name} has a new token (the old one no longer works):");
            println!("{token}");
        }
        UsersCommand::Remove { name } => {
            if !store.remove_user(&name)? {
                bail!("no user {name:?}");
            }
            println!("user {name} removed (the hidden dangers it reported are kept)");
        }
    }
    Ok(())
}
