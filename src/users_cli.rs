//! `br-cti users …`: the platforms allowed to report hidden dangers. Works on the node's data
//! directory directly (a running node sees changes at once: it reads users per request).

use std::path::PathBuf;

use anyhow::bail;

use br_cti_app::hidden_danger_auth::{check_user_name, new_token};
use br_cti_domain::time::DisplayZone;
use br_cti_domain::vocab::Tlp;

#[derive(clap::Args, Debug)]
pub(crate) struct UsersArgs {
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
    /// The node's PostgreSQL database, when it runs on one (as for `serve`).
    #[arg(
        long,
        env = "BRCTI_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub database_url: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum UsersCommand {
    /// Create a user; prints its new token as the last line.
    Add { name: String },
    /// List users (never their tokens).
    List,
    /// Give a user a new token (the old one stops working); prints it as the last line.
    Rotate { name: String },
    /// Remove a user (the hidden dangers it reported are kept).
    Remove { name: String },
    /// Let a user add objects to a writable TAXII collection (`all`: every writable one),
    /// and/or read objects marked up to a TLP level (green unless granted).
    #[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["collection", "tlp", "report_tlp"])))]
    Grant {
        name: String,
        /// The collection id (see GET /taxii2/api/collections/) or `all`.
        #[arg(long = "write", value_name = "COLLECTION_ID")]
        collection: Option<String>,
        /// The most restricted TLP marking the user may read: clear, green, amber,
        /// amber+strict or red.
        #[arg(long, value_parser = br_cti::serve_args::parse_tlp)]
        tlp: Option<Tlp>,
        /// The TLP marking of the hidden dangers this user (a reporting platform) reports, or
        /// `default` for the node's --hidden-danger-tlp.
        #[arg(long, value_name = "LEVEL|default")]
        report_tlp: Option<String>,
    },
    /// Take a write grant back.
    Revoke {
        name: String,
        #[arg(long = "write", value_name = "COLLECTION_ID")]
        collection: String,
    },
}

pub(crate) fn users_command(args: UsersArgs) -> anyhow::Result<()> {
    br_cti_app::config::prepare_data_dir(&args.data_dir)?;
    let url = args.database_url.as_deref().filter(|u| !u.is_empty());
    let store = br_cti::backend::RecordBackend::open(&args.data_dir, url)?.connect()?;
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
            let zone = DisplayZone::system();
            for u in users {
                let grants = store.taxii_grants(&u.name)?;
                println!(
                    "{}\tcreated {}\ttoken set {}\treads up to TLP:{}\treports marked {}\tTAXII write: {}",
                    u.name,
                    zone.display_ms(u.created_at),
                    zone.display_ms(u.rotated_at),
                    u.tlp.as_str().to_ascii_uppercase(),
                    match store.report_tlp(&u.name)? {
                        Some(t) => t.name(),
                        None => "by default".to_string(),
                    },
                    if grants.is_empty() {
                        "none".to_string()
                    } else {
                        grants.join(", ")
                    }
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
        UsersCommand::Grant {
            name,
            collection,
            tlp,
            report_tlp,
        } => {
            if store.user_token(&name)?.is_none() {
                bail!("no user {name:?}");
            }
            if let Some(level) = report_tlp {
                let level = if level == "default" {
                    None
                } else {
                    Some(br_cti::serve_args::parse_tlp(&level).map_err(anyhow::Error::msg)?)
                };
                store.set_report_tlp(&name, level)?;
                match level {
                    Some(t) => {
                        println!("hidden dangers user {name} reports are marked {}", t.name())
                    }
                    None => println!(
                        "hidden dangers user {name} reports are marked the node's default (--hidden-danger-tlp)"
                    ),
                }
            }
            if let Some(tlp) = tlp {
                store.set_user_tlp(&name, tlp)?;
                println!("user {name} may read objects marked up to {}", tlp.name());
            }
            let Some(collection) = collection else {
                return Ok(());
            };
            let writable: Vec<String> = br_cti_app::taxii::collections()
                .into_iter()
                .filter(|c| c.writable)
                .map(|c| c.id)
                .collect();
            if collection != "all" && !writable.contains(&collection) {
                bail!(
                    "{collection:?} is not a writable collection (writable: {}, or all)",
                    writable.join(", ")
                );
            }
            store.taxii_grant(&name, &collection)?;
            println!("user {name} may write to {collection}");
        }
        UsersCommand::Revoke { name, collection } => {
            if store.user_token(&name)?.is_none() {
                bail!("no user {name:?}");
            }
            // `all` takes back every grant, whichever collections they name.
            let revoke: Vec<String> = if collection == "all" {
                store.taxii_grants(&name)?
            } else {
                vec![collection.clone()]
            };
            let mut revoked = 0;
            for c in &revoke {
                revoked += usize::from(store.taxii_revoke(&name, c)?);
            }
            if revoked == 0 {
                bail!("user {name:?} has no write grant for {collection:?}");
            }
            println!("user {name} may no longer write to {collection}");
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
