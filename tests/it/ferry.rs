//! Runs the real `ferry` binary, the way a user does.

use std::process::{Command, Output};

pub struct Run {
    pub output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// Panics with both streams unless ferry exited 0.
    pub fn success(self) -> Self {
        assert!(
            self.output.status.success(),
            "ferry failed ({:?})\nstdout:\n{}\nstderr:\n{}",
            self.code(),
            self.stdout(),
            self.stderr()
        );
        self
    }

    /// Panics unless ferry exited with `code`.
    pub fn fails_with(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout()))
    }
}

pub fn command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

pub fn ferry(args: &[&str]) -> Run {
    run(command().args(args))
}

pub fn run(command: &mut Command) -> Run {
    Run {
        output: command.output().expect("ferry binary runs"),
    }
}
