//! What every PostgreSQL backend of this crate shares: how a server is named in messages (never
//! with its password), and which errors mean "unreachable" or "run the transaction again".

use sqlx::postgres::PgConnectOptions;

/// `host:port/database` of a connection URL, for messages.
pub fn describe(options: &PgConnectOptions) -> String {
    format!(
        "PostgreSQL {}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default database)")
    )
}

/// `text` without the password of `url`, should an error quote it.
pub(crate) fn redact(text: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(password) => text.replace(password, "<redacted>"),
        None => text.to_owned(),
    }
}

/// A deadlock or serialization failure: the transaction may simply run again.
pub(crate) fn retryable(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// Errors that say the database cannot be reached or is overloaded, not that a call is wrong:
/// connection failures (SQLSTATE class 08), too many connections (53), shutdown (57P), and the
/// pool's own timeouts.
pub fn unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57P")),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("bad postgres://a:s3cret@h/db", "postgres://a:s3cret@h/db"),
            "bad postgres://a:<redacted>@h/db"
        );
        assert_eq!(redact("x", "postgres://a@h/db"), "x");
    }
}
