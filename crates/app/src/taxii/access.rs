//! Who may do what in the TAXII collections: the credentials a request presents become a
//! [`Principal`]; the operator may do everything, users read every collection and write those
//! they were granted, anonymous clients (when allowed) read the node's read collections.

use subtle::ConstantTimeEq;

use br_cti_domain::vocab::Tlp;
use br_cti_store::RecordStore;

use super::{Collection, collections};
use crate::error::AppError;

/// What a request presents, parsed from its `Authorization` header.
pub enum Credentials {
    /// No `Authorization` header.
    None,
    /// HTTP Basic: a user name and its token as the password.
    Basic { user: String, token: String },
    /// A Bearer token: the node's API token or a user's token.
    Bearer(String),
    /// A header that is neither (or a Basic value that does not decode).
    Malformed,
}

/// Who a request acts for.
pub enum Principal {
    /// The node's own API token.
    Operator,
    User(String),
    Anonymous,
}

/// The access rules of the node's configuration.
pub struct Policy<'a> {
    /// Clients without credentials may read the read collections.
    pub anonymous: bool,
    /// The node's API token, if it has one.
    pub api_token: Option<&'a str>,
}

fn unauthorized() -> AppError {
    AppError::Unauthorized(
        "send HTTP Basic (user name, token as password) or a Bearer token".into(),
    )
}

/// Whose credentials these are; tokens compare in constant time.
pub fn authenticate(
    db: &dyn RecordStore,
    policy: &Policy<'_>,
    credentials: Credentials,
) -> Result<Principal, AppError> {
    match credentials {
        Credentials::None if policy.anonymous => Ok(Principal::Anonymous),
        Credentials::None | Credentials::Malformed => Err(unauthorized()),
        Credentials::Basic { user, token } => {
            let stored = db
                .user_token(&user)
                .map_err(|e| AppError::store("reading users", e))?;
            let matches = stored
                .as_deref()
                .is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())));
            if matches {
                Ok(Principal::User(user))
            } else {
                Err(unauthorized())
            }
        }
        Credentials::Bearer(token) => {
            if let Some(op) = policy.api_token
                && bool::from(op.as_bytes().ct_eq(token.as_bytes()))
            {
                return Ok(Principal::Operator);
            }
            match db
                .user_by_token(&token)
                .map_err(|e| AppError::store("reading users", e))?
            {
                Some(user) => Ok(Principal::User(user)),
                None => Err(unauthorized()),
            }
        }
    }
}

/// Whether the principal may add objects to (and delete from) the collection.
pub fn can_write(db: &dyn RecordStore, who: &Principal, c: &Collection) -> Result<bool, AppError> {
    if !c.writable {
        return Ok(false);
    }
    Ok(match who {
        Principal::Operator => true,
        Principal::Anonymous => false,
        Principal::User(u) => db
            .taxii_grants(u)
            .map_err(|e| AppError::store("reading grants", e))?
            .iter()
            .any(|g| g == "all" || *g == c.id),
    })
}

/// The most restricted TLP marking the principal may read: the operator everything, a user
/// what it was granted (`br-cti users grant NAME --tlp LEVEL`, green unless granted more),
/// anonymous clients TLP:CLEAR only.
pub fn tlp_ceiling(db: &dyn RecordStore, who: &Principal) -> Result<Tlp, AppError> {
    Ok(match who {
        Principal::Operator => Tlp::Red,
        Principal::Anonymous => Tlp::Clear,
        Principal::User(u) => db
            .user_tlp(u)
            .map_err(|e| AppError::store("reading users", e))?
            .unwrap_or(Tlp::Clear),
    })
}

/// Every known user (and the operator) may read every collection; anonymous clients, when
/// allowed, the node's read collections.
pub fn can_read(who: &Principal, c: &Collection) -> bool {
    !(matches!(who, Principal::Anonymous) && c.writable)
}

/// The collection, if the principal may see it (not found otherwise).
pub fn visible_collection(
    db: &dyn RecordStore,
    who: &Principal,
    id: &str,
) -> Result<Collection, AppError> {
    let not_found = || AppError::NotFound(format!("no collection {id}"));
    let c = collections()
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(not_found)?;
    if !can_read(who, &c) && !can_write(db, who, &c)? {
        return Err(not_found());
    }
    Ok(c)
}

/// The collection, if the principal may write to it (forbidden when it may only see it).
pub fn writable_collection(
    db: &dyn RecordStore,
    who: &Principal,
    id: &str,
) -> Result<Collection, AppError> {
    let c = visible_collection(db, who, id)?;
    if !can_write(db, who, &c)? {
        return Err(AppError::Forbidden(
            if c.writable {
                "writing here takes a grant: br-cti users grant NAME --write <collection id>"
            } else {
                "this collection is filled by the node itself and cannot be written"
            }
            .into(),
        ));
    }
    Ok(c)
}
