//! Use cases of the node's users (the platforms that report hidden dangers, and TAXII readers
//! and writers): add, rotate, remove, the TLP level each reads up to, the level its reports
//! are marked, and TAXII write grants. The CLI (`br-cti users`) and the web console call them.

use br_cti_domain::model::UserInfo;
use br_cti_domain::vocab::Tlp;
use br_cti_store::RecordStore;

use crate::error::AppError;
use crate::hidden_danger_auth::{check_user_name, new_token};

/// A user as the console and `users list` show it.
#[derive(Clone, Debug)]
pub struct UserView {
    pub info: UserInfo,
    /// The level its hidden-danger reports are marked; `None`: the node's default.
    pub report_tlp: Option<Tlp>,
    /// The collections it may write to.
    pub grants: Vec<String>,
}

fn store(context: &'static str) -> impl FnOnce(br_cti_store::StoreError) -> AppError {
    move |e| AppError::store(context, e)
}

fn exists(db: &dyn RecordStore, name: &str) -> Result<(), AppError> {
    match db.user_token(name).map_err(store("reading the user"))? {
        Some(_) => Ok(()),
        None => Err(AppError::NotFound(format!("no user {name:?}"))),
    }
}

/// Every user with its levels and grants, by name.
pub fn list(db: &dyn RecordStore) -> Result<Vec<UserView>, AppError> {
    let mut out = Vec::new();
    for info in db.users().map_err(store("listing users"))? {
        let report_tlp = db
            .report_tlp(&info.name)
            .map_err(store("reading a user's report marking"))?;
        let grants = db
            .taxii_grants(&info.name)
            .map_err(store("reading a user's grants"))?;
        out.push(UserView {
            info,
            report_tlp,
            grants,
        });
    }
    Ok(out)
}

/// Adds a user; answers its new token (shown once: the node keeps it only to check signs).
pub fn add(db: &dyn RecordStore, name: &str) -> Result<String, AppError> {
    check_user_name(name).map_err(|e| AppError::Invalid(e.0))?;
    let token = new_token();
    db.add_user(name, &token)
        .map_err(store("adding the user"))?;
    tracing::info!(user = name, "user added");
    Ok(token)
}

/// Gives a user a new token (the old one stops working at once); answers it.
pub fn rotate(db: &dyn RecordStore, name: &str) -> Result<String, AppError> {
    let token = new_token();
    if !db
        .rotate_user(name, &token)
        .map_err(store("rotating the token"))?
    {
        return Err(AppError::NotFound(format!("no user {name:?}")));
    }
    tracing::info!(user = name, "user token rotated");
    Ok(token)
}

/// Removes a user (the hidden dangers it reported are kept).
pub fn remove(db: &dyn RecordStore, name: &str) -> Result<(), AppError> {
    if !db.remove_user(name).map_err(store("removing the user"))? {
        return Err(AppError::NotFound(format!("no user {name:?}")));
    }
    tracing::info!(user = name, "user removed");
    Ok(())
}

/// The highest TLP level a user reads over TAXII.
pub fn set_read_tlp(db: &dyn RecordStore, name: &str, tlp: Tlp) -> Result<(), AppError> {
    if !db
        .set_user_tlp(name, tlp)
        .map_err(store("setting the user's level"))?
    {
        return Err(AppError::NotFound(format!("no user {name:?}")));
    }
    Ok(())
}

/// The level a user's hidden-danger reports are marked; `None`: the node's default.
pub fn set_report_tlp(db: &dyn RecordStore, name: &str, tlp: Option<Tlp>) -> Result<(), AppError> {
    if !db
        .set_report_tlp(name, tlp)
        .map_err(store("setting the user's report marking"))?
    {
        return Err(AppError::NotFound(format!("no user {name:?}")));
    }
    Ok(())
}

/// Lets a user write to a writable collection (`all`: every one).
pub fn grant(db: &dyn RecordStore, name: &str, collection: &str) -> Result<(), AppError> {
    exists(db, name)?;
    let writable: Vec<String> = crate::taxii::collections()
        .into_iter()
        .filter(|c| c.writable)
        .map(|c| c.id)
        .collect();
    if collection != "all" && !writable.iter().any(|c| c == collection) {
        return Err(AppError::Invalid(format!(
            "{collection:?} is not a writable collection (writable: {}, or all)",
            writable.join(", ")
        )));
    }
    db.taxii_grant(name, collection)
        .map_err(store("granting the collection"))?;
    tracing::info!(user = name, collection, "write grant added");
    Ok(())
}

/// Takes a write grant back (`all`: every grant the user has).
pub fn revoke(db: &dyn RecordStore, name: &str, collection: &str) -> Result<(), AppError> {
    exists(db, name)?;
    let revoke: Vec<String> = if collection == "all" {
        db.taxii_grants(name).map_err(store("reading grants"))?
    } else {
        vec![collection.to_string()]
    };
    let mut revoked = 0;
    for c in &revoke {
        revoked += usize::from(
            db.taxii_revoke(name, c)
                .map_err(store("revoking the grant"))?,
        );
    }
    if revoked == 0 {
        return Err(AppError::NotFound(format!(
            "user {name:?} has no write grant for {collection:?}"
        )));
    }
    tracing::info!(user = name, collection, "write grant revoked");
    Ok(())
}
