//! The authenticated identity behind a request (Kafka's `KafkaPrincipal`), shared by every
//! listener: the Kafka protocol today, the admin API and SASL/mTLS authentication later.

/// Who is making requests: Kafka's `KafkaPrincipal`, `<type>:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub principal_type: String,
    pub name: String,
}

impl Principal {
    /// Kafka's principal of an unauthenticated connection.
    pub fn anonymous() -> Principal {
        Principal {
            principal_type: "User".to_owned(),
            name: "ANONYMOUS".to_owned(),
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}
