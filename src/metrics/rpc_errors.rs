//! The series of `contact_rpc_errors_total{method, code}`: its two bounded
//! label sets, and their registration at zero when the recorder is
//! installed, so a dashboard sees the counter on a server that has not yet
//! failed a call instead of "no data".
//!
//! The rpc layer counts through [`record`]; `install()` calls
//! [`register_all`] once per process.

use metrics::counter;
use tonic::Code;

use super::RPC_ERRORS;
/// Every method the server serves (with who may call it): the method
/// label comes from this fixed set; anything else is counted as "other".
use crate::auth::access::METHODS;

/// The method label of paths not in [`METHODS`].
const OTHER_METHOD: &str = "other";

/// The codes registered for every served method: exactly those the one
/// `From<Error> for Status` in `src/error.rs` can produce (a unit test
/// keeps the two in step). Codes only tonic itself produces (`internal`
/// for an undecodable request, `cancelled`) still get counted when they
/// happen; they are just not registered in advance, which keeps the
/// exposition at `METHODS.len() * 8 + 1` zero series rather than 17 codes
/// for each method.
const ERROR_CODES: [Code; 8] = [
    Code::InvalidArgument,
    Code::NotFound,
    Code::FailedPrecondition,
    Code::AlreadyExists,
    Code::ResourceExhausted,
    Code::DeadlineExceeded,
    Code::PermissionDenied,
    Code::Unavailable,
];

/// The one code an unknown path gets: tonic's router answers it
/// `unimplemented` before any handler runs.
const OTHER_CODE: Code = Code::Unimplemented;

/// The method label of a request path: the path without its leading `/`
/// when the server serves it, else "other".
pub(crate) fn method_label(path: &str) -> &'static str {
    METHODS
        .iter()
        .find(|(m, _)| *m == path)
        .map_or(OTHER_METHOD, |(m, _)| m.trim_start_matches('/'))
}

/// The code label: the gRPC status code's name in snake case.
pub(crate) fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Counts one failed call; `method` is a [`method_label`].
pub(crate) fn record(method: &'static str, code: Code) {
    counter!(RPC_ERRORS, "method" => method, "code" => code_label(code)).increment(1);
}

/// Registers every series of the bounded set at zero: each served method
/// with each of [`ERROR_CODES`], and "other" with [`OTHER_CODE`].
pub(super) fn register_all() {
    for (path, _) in METHODS {
        for code in ERROR_CODES {
            counter!(RPC_ERRORS, "method" => method_label(path), "code" => code_label(code))
                .increment(0);
        }
    }
    counter!(RPC_ERRORS, "method" => OTHER_METHOD, "code" => code_label(OTHER_CODE)).increment(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// Labels come from fixed sets, whatever path a client asks for.
    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            method_label("/contact.v1.Tasks/Get"),
            "contact.v1.Tasks/Get"
        );
        assert_eq!(method_label("/Contact/getTask"), "Contact/getTask");
        assert_eq!(method_label("/evil/a-million-names-1234"), "other");
        assert_eq!(code_label(Code::from_i32(3)), "invalid_argument");
        assert_eq!(code_label(Code::from_i32(999)), "unknown");
    }

    /// Every code the error mapping produces is registered in advance. The
    /// match has no wildcard, so a new `Error` variant fails to compile
    /// here until it is given a sample.
    #[test]
    fn registered_codes_cover_the_error_mapping() {
        let samples = [
            Error::InvalidArgument(String::new()),
            Error::NotFound {
                what: "task",
                id: String::new(),
            },
            Error::FailedPrecondition(String::new()),
            Error::AlreadyExists(String::new()),
            Error::ResourceExhausted(String::new()),
            Error::DeadlineExceeded(String::new()),
            Error::PermissionDenied(String::new()),
            Error::ShuttingDown,
            Error::Unavailable("queue"),
        ];
        for error in samples {
            match &error {
                Error::InvalidArgument(_)
                | Error::NotFound { .. }
                | Error::FailedPrecondition(_)
                | Error::AlreadyExists(_)
                | Error::ResourceExhausted(_)
                | Error::DeadlineExceeded(_)
                | Error::PermissionDenied(_)
                | Error::ShuttingDown
                | Error::Unavailable(_) => {}
            }
            let code = tonic::Status::from(error).code();
            assert!(ERROR_CODES.contains(&code), "{code:?} is not registered");
        }
    }
}
