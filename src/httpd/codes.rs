//! The APR status codes the callbacks return, and the one mapping from an
//! engine error to one of them.

use super::bindings::{self as b, apr_status_t};
use crate::engine::Error;

pub(crate) const SUCCESS: apr_status_t = b::APR_SUCCESS as apr_status_t;
pub(crate) const NOTFOUND: apr_status_t = b::APR_NOTFOUND as apr_status_t;
pub(crate) const ENOSPC: apr_status_t = b::APR_ENOSPC as apr_status_t;
pub(crate) const EINVAL: apr_status_t = b::APR_EINVAL as apr_status_t;
pub(crate) const EGENERAL: apr_status_t = b::APR_EGENERAL as apr_status_t;
pub(crate) const EINIT: apr_status_t = b::APR_EINIT as apr_status_t;

/// The APR status for an engine error: its errno for I/O errors (APR
/// statuses below APR_OS_START_ERROR are errno values), else EGENERAL.
pub(crate) fn apr_status(e: &Error) -> apr_status_t {
    match e {
        Error::Io { source, .. } => source.raw_os_error().unwrap_or(EGENERAL),
        Error::EntryTooLarge { .. } | Error::IdTooLong { .. } => ENOSPC,
        Error::BudgetTooSmall { .. } | Error::BudgetTooLarge { .. } => EINVAL,
        _ => EGENERAL,
    }
}

/// Why `init` failed: the status httpd gets and the line the log gets.
#[derive(Debug)]
pub(crate) struct InitError {
    pub(crate) status: apr_status_t,
    pub(crate) message: String,
}

impl InitError {
    pub(crate) fn new(status: apr_status_t, message: impl Into<String>) -> InitError {
        InitError {
            status,
            message: message.into(),
        }
    }
}

impl From<Error> for InitError {
    fn from(e: Error) -> InitError {
        InitError::new(apr_status(&e), e.to_string())
    }
}
