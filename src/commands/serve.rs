use std::io::{IsTerminal, Write};

use super::deliver::verified;
use super::runtime;
use crate::catalog::Catalogs;
use crate::cli::{LogLevel, ServeArgs};
use crate::error::{Error, Result};
use crate::progress::{to_stderr, Stderr};
use crate::reference::DOCKER_HUB;
use crate::serve::node_config::{node_config, Reach};
use crate::serve::{serve, Content, ServeOptions};

pub fn run(catalogs: &Catalogs, args: &ServeArgs, out: &mut dyn Write) -> Result<()> {
    let bundles = args
        .paths
        .iter()
        .map(|path| verified(catalogs, path, &args.trust, false, out))
        .collect::<Result<Vec<_>>>()?;
    let content = Content::load(bundles)?;
    let tls = args.tls_cert.clone().zip(args.tls_key.clone());
    if let Some(runtime) = args.print_config {
        let address = advertised(args)?;
        // docker sends only Docker Hub pulls to a mirror: the others must be pulled by the served names.
        let mut served: Vec<String> = content
            .images
            .iter()
            .filter(|image| image.upstream.registry() != DOCKER_HUB)
            .map(|image| match image.upstream.tag() {
                Some(tag) => format!("{}:{tag}", image.name),
                None => format!("{}@{}", image.name, image.manifest),
            })
            .collect();
        served.sort();
        let config = node_config(
            runtime.into(),
            &content.registries(),
            &served,
            &Reach {
                address: &address,
                tls: tls.is_some(),
                auth: args.htpasswd.is_some(),
            },
        );
        to_stderr(&config.notes);
        return out.write_all(config.text.as_bytes()).map_err(Error::Output);
    }
    tracing_subscriber::fmt()
        .with_writer(|| Stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(match args.log_level {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
        })
        .init();
    let options = ServeOptions {
        listen: args.listen,
        tls,
        htpasswd: args.htpasswd.clone(),
        max_transfers: usize::from(args.max_transfers),
    };
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let images = content.images.len();
    let repositories = content.catalog().len();
    let mut announced = Ok(());
    runtime()?.block_on(serve(content, &options, |bound| {
        tracing::info!("serving {images} image(s) in {repositories} repositories, read-only");
        if options.tls.is_none() {
            tracing::warn!(
                "plain HTTP: nodes must be configured to pull from {bound} as an insecure registry \
                 (--print-config shows how), or serve HTTPS with --tls-cert and --tls-key"
            );
            if options.htpasswd.is_some() {
                tracing::warn!(
                    "--htpasswd without TLS: passwords travel in clear, readable by anyone on the network \
                     path; serve HTTPS with --tls-cert and --tls-key"
                );
            }
        }
        announced = writeln!(out, "listening on {scheme}://{bound}").and_then(|()| out.flush());
    }))?;
    announced.map_err(Error::Output)
}

/// `HOST:PORT` as nodes reach the server: --advertise (with --listen's port if it has none), or --listen
/// when that names one address.
fn advertised(args: &ServeArgs) -> Result<String> {
    let port = args.listen.port();
    match &args.advertise {
        Some(advertised) => Ok(advertised.address(port)),
        None if args.listen.ip().is_unspecified() || port == 0 => Err(Error::Usage(format!(
            "--print-config needs the address nodes reach this server at: --listen {} names none; add --advertise HOST[:PORT]",
            args.listen
        ))),
        None => Ok(args.listen.to_string()),
    }
}
