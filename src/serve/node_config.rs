//! The node configuration that sends pulls of the bundle's upstream names to `ferry serve`: containerd's
//! `hosts.toml` per upstream registry (what kubelet's pulls go through), docker's `daemon.json`, and
//! CRI-O's (containers') `registries.conf`. The text goes to stdout to be pasted; notes go to stderr.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::reference::DOCKER_HUB;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    Docker,
    CriO,
}

/// `HOST[:PORT]` as nodes reach the server (`--advertise`): a DNS name, an IPv4 address or an IPv6 one
/// (bracketed when a port follows), and nothing else, since it is written into shell scripts, TOML and
/// JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    /// As written in a URL: IPv6 in brackets.
    host: String,
    port: Option<u16>,
}

impl Advertised {
    /// `HOST:PORT`, with `port` when none was given.
    pub fn address(&self, port: u16) -> String {
        format!("{}:{}", self.host, self.port.unwrap_or(port))
    }
}

impl FromStr for Advertised {
    type Err = String;

    fn from_str(text: &str) -> Result<Advertised, String> {
        let refused = || {
            format!(
                "{} is not HOST[:PORT]: HOST is a DNS name, an IPv4 address or an IPv6 address \
                 ([bracketed] with a port), PORT a number from 1 to 65535",
                text.escape_debug()
            )
        };
        let port = |digits: &str| {
            digits
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| digits.parse::<u16>().ok())
                .flatten()
                .filter(|&port| port > 0)
                .ok_or_else(refused)
        };
        if let Ok(ip) = text.parse::<Ipv6Addr>() {
            return Ok(Advertised {
                host: format!("[{ip}]"),
                port: None,
            });
        }
        let (host, port) = match text.strip_prefix('[') {
            Some(bracketed) => {
                let (ip, rest) = bracketed.split_once(']').ok_or_else(refused)?;
                let ip: Ipv6Addr = ip.parse().map_err(|_| refused())?;
                let port = match rest {
                    "" => None,
                    _ => Some(port(rest.strip_prefix(':').ok_or_else(refused)?)?),
                };
                (format!("[{ip}]"), port)
            }
            None => {
                let (host, port) = match text.split_once(':') {
                    Some((host, digits)) => (host, Some(port(digits)?)),
                    None => (text, None),
                };
                if host.parse::<Ipv4Addr>().is_err() && !is_dns_name(host) {
                    return Err(refused());
                }
                (host.to_string(), port)
            }
        };
        Ok(Advertised { host, port })
    }
}

/// Letters, digits and inner hyphens, in dot-separated labels of 1 to 63 characters (RFC 1123).
fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// How nodes reach the server.
pub struct Reach<'a> {
    /// `HOST:PORT` as nodes resolve it.
    pub address: &'a str,
    pub tls: bool,
    pub auth: bool,
}

/// The configuration to paste, and notes for the operator.
pub struct NodeConfig {
    pub text: String,
    pub notes: String,
}

/// What a registry's own endpoint is, for containerd's `server` (Docker Hub's is not `docker.io`).
fn upstream_server(registry: &str) -> String {
    match registry {
        DOCKER_HUB => "https://registry-1.docker.io".to_string(),
        other => format!("https://{other}"),
    }
}

pub fn node_config(
    runtime: Runtime,
    registries: &[String],
    other_pulls: &[String],
    reach: &Reach<'_>,
) -> NodeConfig {
    let scheme = if reach.tls { "https" } else { "http" };
    let address = reach.address;
    let mut text = String::new();
    let mut notes = String::new();
    match runtime {
        Runtime::Containerd => {
            let _ = writeln!(
                text,
                "# containerd: pulls from {} are served by ferry serve at {address}, kubelet's included.\n\
                 # The CRI plugin must read this directory; in /etc/containerd/config.toml:\n\
                 #   [plugins.\"io.containerd.grpc.v1.cri\".registry]\n\
                 #     config_path = \"/etc/containerd/certs.d\"\n\
                 # then: systemctl restart containerd. (ctr: ctr images pull --hosts-dir /etc/containerd/certs.d ...)\n\
                 certs_d=\"${{CONTAINERD_CERTS_D:-/etc/containerd/certs.d}}\"",
                registries.join(", ")
            );
            for registry in registries {
                let _ = writeln!(
                    text,
                    "mkdir -p \"$certs_d/{registry}\"\ncat > \"$certs_d/{registry}/hosts.toml\" <<'EOF'\n\
                     server = \"{}\"\n\n[host.\"{scheme}://{address}\"]\n  capabilities = [\"pull\", \"resolve\"]",
                    upstream_server(registry)
                );
                if reach.tls {
                    let _ = writeln!(
                        text,
                        "  # ca = \"/etc/containerd/certs.d/{registry}/ca.crt\"  # if a CA the node does not trust signed the certificate"
                    );
                }
                if reach.auth {
                    let _ = writeln!(
                        text,
                        "  [host.\"{scheme}://{address}\".header]\n    Authorization = [\"Basic BASE64_OF_USER:PASSWORD\"]  # echo -n USER:PASSWORD | base64"
                    );
                }
                let _ = writeln!(text, "EOF");
            }
        }
        Runtime::Docker => {
            let mut lines = vec![format!(
                "  \"registry-mirrors\": [\"{scheme}://{address}\"]"
            )];
            if !reach.tls {
                lines.push(format!("  \"insecure-registries\": [\"{address}\"]"));
            }
            let _ = writeln!(text, "{{\n{}\n}}", lines.join(",\n"));
            let _ = writeln!(
                notes,
                "Merge this into /etc/docker/daemon.json, then: systemctl restart docker.\n\
                 docker sends only Docker Hub pulls to a mirror; pull the other images by their served names:"
            );
            for name in other_pulls {
                let _ = writeln!(notes, "  docker pull {address}/{name}");
            }
        }
        Runtime::CriO => {
            let _ = writeln!(
                text,
                "# /etc/containers/registries.conf.d/50-ferry.conf (CRI-O, podman, skopeo): pulls from {}\n\
                 # are served by ferry serve at {address}. Then: systemctl restart crio",
                registries.join(", ")
            );
            for registry in registries {
                let _ = writeln!(
                    text,
                    "\n[[registry]]\nprefix = \"{registry}\"\nlocation = \"{registry}\"\n\n\
                     [[registry.mirror]]\nlocation = \"{address}/{registry}\"{}",
                    if reach.tls { "" } else { "\ninsecure = true" }
                );
            }
        }
    }
    // containerd's credentials and CA go into hosts.toml above; docker and CRI-O keep them elsewhere.
    let elsewhere = match runtime {
        Runtime::Containerd => None,
        Runtime::Docker => Some(("docker login", "/etc/docker/certs.d")),
        Runtime::CriO => Some((
            "podman login --authfile /etc/crio/auth.json",
            "/etc/containers/certs.d",
        )),
    };
    if let Some((login, certs_d)) = elsewhere {
        if reach.auth {
            let _ = writeln!(notes, "With --htpasswd: {login} {address}");
        }
        if reach.tls {
            let _ = writeln!(
                notes,
                "If a CA the node does not trust signed the certificate: {certs_d}/{address}/ca.crt"
            );
        }
    }
    NodeConfig { text, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_gets_a_hosts_toml_per_registry() {
        let config = node_config(
            Runtime::Containerd,
            &["docker.io".into(), "registry.k8s.io".into()],
            &[],
            &Reach {
                address: "10.0.0.5:5000",
                tls: false,
                auth: false,
            },
        );
        assert!(config.text.contains(
            "cat > \"$certs_d/registry.k8s.io/hosts.toml\" <<'EOF'\nserver = \"https://registry.k8s.io\"\n\n[host.\"http://10.0.0.5:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\nEOF\n"
        ), "{}", config.text);
        assert!(
            config
                .text
                .contains("server = \"https://registry-1.docker.io\""),
            "{}",
            config.text
        );
    }

    #[test]
    fn advertised_addresses_are_host_and_port_and_nothing_else() {
        let address = |text: &str| text.parse::<Advertised>().map(|a| a.address(5000));
        assert_eq!(address("10.0.0.5"), Ok("10.0.0.5:5000".into()));
        assert_eq!(address("10.0.0.5:5443"), Ok("10.0.0.5:5443".into()));
        assert_eq!(
            address("registry.site-1.local"),
            Ok("registry.site-1.local:5000".into())
        );
        assert_eq!(address("fd00::5"), Ok("[fd00::5]:5000".into()));
        assert_eq!(address("[fd00::5]:5443"), Ok("[fd00::5]:5443".into()));
        for hostile in [
            "10.0.0.5\nrm -rf /",
            "a\"b",
            "reg'istry",
            "host:0",
            "host:+80",
            "host:65536",
            "host:",
            "-host",
            "a..b",
            "[fd00::5]x",
            "[not-ip]:80",
            "host name",
            "",
            "h/x",
            "$(id)",
        ] {
            assert!(address(hostile).is_err(), "{hostile:?}");
        }
        assert_eq!(
            address("a\nb").unwrap_err(),
            "a\\nb is not HOST[:PORT]: HOST is a DNS name, an IPv4 address or an IPv6 address \
             ([bracketed] with a port), PORT a number from 1 to 65535"
        );
    }
}
