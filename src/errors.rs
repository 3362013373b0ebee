//! The error kind that means "the user asked for something wrong": exit code 2 instead of 1.
//! Every CLI module takes it from here (no module imports it from the argument parser).

/// An error in what the user asked for: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Wrap a message as a [`UsageError`] (exit code 2).
pub fn usage_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::Error::new(UsageError(e.to_string()))
}
