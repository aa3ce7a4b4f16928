//! Panic isolation: a panic in one job, batch or publishing round becomes an error of that unit
//! of work, and the thread that ran it lives on.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A panic caught by [`catch`]: its message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Panic(pub String);

/// Runs `f`; a panic becomes `Err` with the panic's message.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Panic> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| Panic(panic_message(payload.as_ref())))
}

/// The message a panic was raised with (`panic!("…")`, `expect`, an index out of bounds).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors() {
        assert_eq!(catch(|| 5), Ok(5));
        assert_eq!(
            catch(|| -> u8 { panic!("boom {}", 1) }),
            Err(Panic("boom 1".to_string()))
        );
        let v: Vec<u8> = Vec::new();
        let e = catch(|| v[3]).unwrap_err().0;
        assert!(e.contains("index out of bounds"), "{e}");
    }
}
