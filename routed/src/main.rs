//! `cbrnet-routed`: see the library for the parts.
use cbrnet_ipam::cluster::store::{AnyStore, LeaseStore};
use cbrnet_routed::cli::{Cli, Command};
use clap::CommandFactory;
use std::io::Write;

/// Reports an error on stderr, which may be closed: nothing here may fail.
fn report(msg: &str) {
    let _ = writeln!(std::io::stderr(), "cbrnet-routed: {msg}");
}

fn main() {
    // A panic in any task is a bug that leaves the daemon in an unknown state: exit, and let the
    // service manager restart it (routes and lease survive a restart).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(101);
    }));
    let cli = Cli::parse_on_host();
    // CBRNET_LOG=error|warn|info|debug|trace (default info); CBRNET_DEBUG=1 is debug.
    let level = match std::env::var("CBRNET_LOG")
        .ok()
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("error") => tracing::Level::ERROR,
        Some("warn") => tracing::Level::WARN,
        Some("debug") => tracing::Level::DEBUG,
        Some("trace") => tracing::Level::TRACE,
        _ if std::env::var_os("CBRNET_DEBUG").is_some() => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        // A closed stderr must not kill the daemon: a failed log write is dropped.
        .log_internal_errors(false)
        .init();
    // Errors that retrying cannot fix: exit 2 before anything is opened, created or written.
    let run = match (
        cli.command.is_none(),
        cli.run
            .map(|r| r.validate().and_then(|c| c.with_etcd_auth(&cli.etcd_auth))),
    ) {
        (true, Some(Ok(c))) => {
            for w in c.warnings() {
                tracing::warn!("{w}");
            }
            Some(c)
        }
        (true, Some(Err(e))) => {
            report(&e);
            std::process::exit(2);
        }
        _ => None,
    };
    // doctor judges the daemon's flags as the daemon does: a usage error is exit 2.
    let doctor = match &cli.command {
        Some(Command::Doctor(a)) => match a
            .run
            .clone()
            .validate()
            .and_then(|c| c.with_etcd_auth(&a.etcd_auth))
        {
            Ok(c) => Some(c),
            Err(e) => {
                report(&e);
                std::process::exit(2);
            }
        },
        _ => None,
    };
    // The same for the commands that read or change the store.
    let store_auth = match &cli.command {
        Some(Command::Leases(cbrnet_routed::cli::LeasesArgs { store, .. }))
        | Some(Command::Release(cbrnet_routed::cli::ReleaseArgs { store, .. })) => {
            match store.etcd_auth.validate(&store.store) {
                Ok(auth) => {
                    for w in store.etcd_auth.warnings(&store.store) {
                        report(&format!("warning: {w}"));
                    }
                    auth
                }
                Err(e) => {
                    report(&e);
                    std::process::exit(2);
                }
            }
        }
        _ => Default::default(),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            report(&format!("starting the async runtime: {e}"));
            std::process::exit(1);
        }
    };
    let res: Result<(), String> = rt.block_on(async {
        match (cli.command, run) {
            (Some(Command::Leases(a)), _) => {
                let s = AnyStore::open_with(&a.store.store, &a.store.etcd_prefix, false, &store_auth)
                    .await
                    .map_err(|e| e.to_string())?;
                let listing = s.list().await.map_err(|e| e.to_string())?;
                // On a node (its subnet file is there), how it reaches each peer.
                let paths = match cbrnet_ipam::SubnetFile::read(&a.subnet_file) {
                    Ok(f) => {
                        let ours = cbrnet_routed::raw::Raw::open()
                            .and_then(|mut r| r.our_routes())
                            .map_err(|e| format!("reading this node's routes: {e}"))?;
                        let subnets = listing.leases.iter().flat_map(|v| v.lease.subnets());
                        let own: Vec<_> = f.families().iter().map(|f| f.subnet).collect();
                        Some(cbrnet_routed::leases::paths(&own, &ours, subnets))
                    }
                    Err(_) => None,
                };
                let (table, problems) = cbrnet_routed::leases::render(&listing, a.json, paths.as_ref());
                print!("{table}");
                let _ = std::io::stderr().write_all(problems.as_bytes());
                Ok(())
            }
            (Some(Command::Release(a)), _) => {
                let s = AnyStore::open_with(&a.store.store, &a.store.etcd_prefix, false, &store_auth)
                    .await
                    .map_err(|e| e.to_string())?;
                use cbrnet_routed::daemon::Released;
                match cbrnet_routed::daemon::release(&s, &a.node_name)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Released::Yes => Ok(()),
                    Released::NoLease => Err(format!("node {} holds no lease", a.node_name)),
                    Released::WrittenBack(subnet) => Err(format!(
                        "node {}'s daemon is still running: it wrote its lease of {subnet} back at once; \
                         stop it first (systemctl stop cbrnet-routed on that node), then release",
                        a.node_name
                    )),
                }
            }
            (Some(Command::Doctor(a)), _) => {
                let Some(cfg) = doctor else {
                    return Err("doctor: no configuration".into());
                };
                let opts = cbrnet_routed::doctor::Options {
                    probe: a.probe,
                    cni_bin_dirs: a.cni_bin_dirs.clone(),
                };
                let checks = cbrnet_routed::doctor::run(&cfg, &opts).await;
                let text = match a.json {
                    true => cbrnet_routed::doctor::render_json(&checks),
                    false => cbrnet_routed::doctor::render_text(&checks),
                };
                // stdout is the report; a reader that went away is no reason to panic.
                let _ = std::io::stdout().write_all(text.as_bytes());
                let _ = std::io::stdout().flush();
                std::process::exit(cbrnet_routed::doctor::exit_code(&checks));
            }
            (Some(Command::InstallCni(a)), _) => {
                for f in cbrnet_routed::install::install_cni(&a)? {
                    println!("installed {}", f.display());
                }
                Ok(())
            }
            (None, Some(cfg)) => cbrnet_routed::daemon::run(cfg).await.map_err(|e| e.to_string()),
            (None, None) => {
                let _ = Cli::command().print_help();
                Err("missing arguments".into())
            }
        }
    });
    if let Err(e) = res {
        report(&e);
        std::process::exit(1);
    }
}
