//! What an AWS SDK error means to a seam: a transient failure (the service cannot be reached,
//! throttles or fails internally, after the SDK's own retries) or a refusal with the service's
//! error code, and one message that says which call failed and why. Credentials never appear in
//! SDK errors; request ids do, and help support.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;

/// One failed AWS call, classified.
#[derive(Debug, Clone)]
pub(crate) struct AwsFailure {
    /// Worth retrying later: not reached, timed out, throttled, a 5xx.
    pub transient: bool,
    /// The service's error code (`ConditionalCheckFailedException`, `NoSuchKey`...), if any.
    pub code: Option<String>,
    /// `<call>: <code>: <message>` or `<call>: <what failed>`.
    pub message: String,
}

/// Error codes AWS services use for throttling and internal failures.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "SlowDown",
    "TooManyRequestsException",
    "InternalServerError",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "TransactionConflictException",
];

/// Classifies `err` from `call` (e.g. `DynamoDB PutItem`).
pub(crate) fn classify<E, R>(call: &str, err: &SdkError<E, R>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let code = inner.code().map(str::to_owned);
            let transient = code.as_deref().is_some_and(|c| TRANSIENT_CODES.contains(&c));
            let message = match (inner.code(), inner.message()) {
                (Some(code), Some(message)) => format!("{call}: {code}: {message}"),
                (Some(code), None) => format!("{call}: {code}"),
                _ => format!("{call}: {}", DisplayErrorContext(err)),
            };
            AwsFailure { transient, code, message }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            AwsFailure {
                transient: true,
                code: None,
                message: format!("{call}: {}", DisplayErrorContext(err)),
            }
        }
        _ => AwsFailure {
            transient: false,
            code: None,
            message: format!("{call}: {}", DisplayErrorContext(err)),
        },
    }
}
