//! Talking to OCI registries: credentials, TLS, retries, and the pull of manifests and blobs.

pub mod auth;
