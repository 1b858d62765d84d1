//! `weft quickstart`: three controllers on loopback in this process, with data under one
//! directory. The first run bootstraps node 1 and joins nodes 2 and 3 to it; later runs
//! resume on the same data.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use weft_controller::{Controller, ControllerOptions};

use crate::connect::Global;

/// Flags of `weft quickstart`.
#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// Where the three controllers keep their data.
    #[arg(long, default_value = "weft-quickstart")]
    pub dir: PathBuf,
    /// Port of the first controller; the others use the next two.
    #[arg(long, default_value_t = 7001)]
    pub port: u16,
}

/// Runs the quickstart until Ctrl-C.
pub async fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let dirs: Vec<PathBuf> = (1..=3).map(|i| args.dir.join(format!("c{i}"))).collect();
    let addr = |i: u16| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.port + i);
    let fresh = !dirs[0].join("node.json").exists();
    let mut o1 = ControllerOptions::new(&dirs[0], addr(0));
    o1.bootstrap = true;
    let c1 = Controller::start(o1)
        .await
        .context("starting controller 1")?;
    let password_file = dirs[0].join("admin-password");
    let password = std::fs::read_to_string(&password_file)
        .with_context(|| format!("reading {}", password_file.display()))?
        .trim()
        .to_owned();
    let ca_path = dirs[0].join("ca.pem");
    let mut controllers = vec![c1];
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        let mut o = ControllerOptions::new(dir, addr(i as u16));
        if !dir.join("node.json").exists() {
            let ca = std::fs::read_to_string(&ca_path)?;
            let quiet = Global {
                profile: crate::profile::DEFAULT_PROFILE.to_owned(),
                verbose: false,
            };
            let urls = [controllers[0].url.clone()];
            let api = crate::connect::with_password(&quiet, &urls, &ca, "admin", &password).await?;
            let t = crate::cluster_cmd::join_token(&api).await?;
            let _ = api.logout().await;
            o.join = Some(controllers[0].url.clone());
            o.join_token = t["token"].as_str().map(str::to_owned);
        }
        controllers.push(
            Controller::start(o)
                .await
                .with_context(|| format!("starting controller {}", i + 1))?,
        );
    }
    let ca = std::fs::canonicalize(&ca_path).unwrap_or(ca_path);
    outln!();
    outln!(
        "weft quickstart is running ({})",
        if fresh { "new cluster" } else { "resumed" }
    );
    for (i, c) in controllers.iter().enumerate() {
        outln!(
            "  controller {}: {}  (node {}, data {})",
            i + 1,
            c.url,
            c.node.id(),
            c.data_dir.display()
        );
    }
    outln!("  CA certificate: {}", ca.display());
    outln!("  admin user:     admin");
    outln!("  admin password: {password}");
    outln!();
    outln!("Try next (in another terminal):");
    let urls: Vec<&str> = controllers.iter().map(|c| c.url.as_str()).collect();
    outln!(
        "  weft login {} --ca {} -u admin -p {password}",
        urls.join(" "),
        ca.display()
    );
    outln!("  weft status");
    outln!("  weft edge create service web --role-attributes demo");
    outln!("  weft edge create identity alice --role-attributes eng --jwt-output-file alice.jwt");
    outln!("  weft edge create service-policy web-dial Dial --identity-roles '#eng' --service-roles '@web'");
    outln!("  weft edge list services");
    outln!("  weft edge list identities -o yaml");
    outln!("  weft cluster list");
    outln!("  weft logout");
    outln!();
    outln!("Press Ctrl-C to stop.");
    crate::shutdown_signal().await;
    outln!("stopping...");
    for c in controllers {
        c.stop().await;
    }
    Ok(())
}
