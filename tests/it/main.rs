//! ferry integration tests: one binary, one module per area. Registries, containerd, dockerd and podman
//! are real, started by `services` on loopback; `faults` only injects failures in front of them.

mod bundle;
mod cli;
mod deliver;
mod delta;
mod far_side;
mod faults;
mod ferry;
mod formats;
mod harbor;
mod hostile;
mod interrupt;
mod kubernetes;
mod multiarch;
mod named;
mod output;
mod pull;
mod recovery;
mod releases;
mod run_all;
mod seed;
mod seeded;
mod serve;
mod services;
mod site;
mod trust;
mod upstream_index;
pub mod verify;
