//! `cbrnet-routed`: see the library for the parts.
use cbrnet_ipam::cluster::store::{AnyStore, LeaseStore};
use cbrnet_routed::cli::{Cli, Command};
use clap::{CommandFactory, Parser};

fn main() {
    // A panic in any task is a bug that leaves the daemon in an unknown state: exit, and let the
    // service manager restart it (routes and lease survive a restart).
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(if std::env::var_os("CBRNET_DEBUG").is_some() {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        })
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let res: Result<(), String> = rt.block_on(async {
        match (cli.command, cli.run) {
            (Some(Command::Leases(a)), _) => {
                let s = AnyStore::open(&a.store.store, &a.store.etcd_prefix)
                    .await
                    .map_err(|e| e.to_string())?;
                let leases = s.list().await.map_err(|e| e.to_string())?;
                print!("{}", cbrnet_routed::leases::render(&leases, a.json));
                Ok(())
            }
            (Some(Command::Release(a)), _) => {
                let s = AnyStore::open(&a.store.store, &a.store.etcd_prefix)
                    .await
                    .map_err(|e| e.to_string())?;
                match cbrnet_routed::daemon::release(&s, &a.node_name)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    true => Ok(()),
                    false => Err(format!("node {} holds no lease", a.node_name)),
                }
            }
            (None, Some(run)) => cbrnet_routed::daemon::run(run).await.map_err(|e| e.to_string()),
            (None, None) => {
                Cli::command().print_help().ok();
                Err("missing arguments".into())
            }
        }
    });
    if let Err(e) = res {
        eprintln!("cbrnet-routed: {e}");
        std::process::exit(1);
    }
}
