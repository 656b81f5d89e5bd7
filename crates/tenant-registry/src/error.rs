/// What went wrong in the registry. No variant carries a secret, and no variant's message
/// repeats what the database said (which could quote stored values).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The input broke a rule; `field` names the offending field (dotted path).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{what} '{name}' does not exist")]
    NotFound { what: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("the store failed")]
    Store(#[source] sqlx::Error),
    #[error("the store holds a value this version cannot read: {0}")]
    Corrupt(String),
    #[error("a sealed credential could not be opened or sealed")]
    Crypto,
}

impl RegistryError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error with its field named from `prefix` (`keys[0]` + `name`).
    pub fn within(self, prefix: &str) -> Self {
        match self {
            Self::Invalid { field, message } => Self::Invalid {
                field: if field.starts_with('[') {
                    format!("{prefix}{field}")
                } else {
                    format!("{prefix}.{field}")
                },
                message,
            },
            other => other,
        }
    }

    pub fn not_found(what: &'static str, name: impl std::fmt::Display) -> Self {
        Self::NotFound {
            what,
            name: name.to_string(),
        }
    }
}

impl From<sqlx::Error> for RegistryError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error)
    }
}

impl From<sqlx::migrate::MigrateError> for RegistryError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        Self::Store(sqlx::Error::Migrate(Box::new(error)))
    }
}

/// Maps a constraint violation to a conflict with our own words; anything else stays a
/// store failure.
pub(crate) fn on_constraint(
    conflict: impl FnOnce() -> String,
) -> impl FnOnce(sqlx::Error) -> RegistryError {
    move |error| match &error {
        // SQLite reports a RESTRICT hit inside a cascade as a trigger constraint (1811).
        sqlx::Error::Database(db)
            if db.is_unique_violation()
                || db.is_foreign_key_violation()
                || db.message() == "FOREIGN KEY constraint failed" =>
        {
            RegistryError::Conflict(conflict())
        }
        _ => RegistryError::Store(error),
    }
}
