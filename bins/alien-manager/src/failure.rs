//! How the process ends: a [`Failure`] carries the exit status (2 for configuration, 1 at run
//! time) and what to tell the operator.

/// Exit status for configuration errors (also a key that does not open the data).
pub const EXIT_CONFIG: u8 = 2;

/// A failure with the exit status it ends the process with.
#[derive(Debug)]
pub struct Failure {
    /// Exit status.
    pub code: u8,
    /// What to tell the operator.
    pub message: String,
}

impl Failure {
    /// A configuration problem: exit 2.
    pub fn config(message: impl Into<String>) -> Self {
        Self { code: EXIT_CONFIG, message: message.into() }
    }

    /// A runtime problem: exit 1.
    pub fn runtime(message: impl Into<String>) -> Self {
        Self { code: 1, message: message.into() }
    }
}
