//! `br-cti users …`: the platforms allowed to report hidden dangers. Works on the node's data
//! directory directly (a running node sees changes at once: it reads users per request).

use std::path::PathBuf;

use anyhow::bail;

use br_cti_app::users;
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
            let token = users::add(&*store, &name)?;
            println!("user {name} added; its token (shown once, keep it secret):");
            println!("{token}");
        }
        UsersCommand::List => {
            let all = users::list(&*store)?;
            if all.is_empty() {
                println!("no users (add one with `br-cti users add NAME`)");
            }
            let zone = DisplayZone::system();
            for u in all {
                println!(
                    "{}\tcreated {}\ttoken set {}\treads up to TLP:{}\treports marked {}\tTAXII write: {}",
                    u.info.name,
                    zone.display_ms(u.info.created_at),
                    zone.display_ms(u.info.rotated_at),
                    u.info.tlp.as_str().to_ascii_uppercase(),
                    match u.report_tlp {
                        Some(t) => t.name(),
                        None => "by default".to_string(),
                    },
                    if u.grants.is_empty() {
                        "none".to_string()
                    } else {
                        u.grants.join(", ")
                    }
                );
            }
        }
        UsersCommand::Rotate { name } => {
            let token = users::rotate(&*store, &name)?;
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
                users::set_report_tlp(&*store, &name, level)?;
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
                users::set_read_tlp(&*store, &name, tlp)?;
                println!("user {name} may read objects marked up to {}", tlp.name());
            }
            let Some(collection) = collection else {
                return Ok(());
            };
            users::grant(&*store, &name, &collection)?;
            println!("user {name} may write to {collection}");
        }
        UsersCommand::Revoke { name, collection } => {
            users::revoke(&*store, &name, &collection)?;
            println!("user {name} may no longer write to {collection}");
        }
        UsersCommand::Remove { name } => {
            users::remove(&*store, &name)?;
            println!("user {name} removed (the hidden dangers it reported are kept)");
        }
    }
    Ok(())
}
