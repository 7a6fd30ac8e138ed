//! Access to one repository, as token services grant it and as refusals name it.

/// `repository:NAME:pull` or `repository:NAME:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Scope {
    pub repository: String,
    pub push: bool,
}

impl Scope {
    pub fn pull(repository: &str) -> Scope {
        Scope {
            repository: repository.to_string(),
            push: false,
        }
    }

    pub fn push(repository: &str) -> Scope {
        Scope {
            repository: repository.to_string(),
            push: true,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let actions = if self.push { "pull,push" } else { "pull" };
        write!(f, "repository:{}:{actions}", self.repository)
    }
}
