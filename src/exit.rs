//! The one exit-code type of the command line: 0 ok, 1 a runtime failure (partial failure,
//! AWS unreachable, a corrupt archive), 2 a usage or configuration error (nothing was done).

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Fatal {
    /// 1 or 2.
    pub code: u8,
    /// What went wrong, printed as `bunker: {error:#}`.
    pub error: anyhow::Error,
}

/// Bad input: exit 2.
pub fn usage(error: impl Into<anyhow::Error>) -> Fatal {
    Fatal { code: 2, error: error.into() }
}

/// A failure while running: exit 1.
pub fn runtime(error: impl Into<anyhow::Error>) -> Fatal {
    Fatal { code: 1, error: error.into() }
}
