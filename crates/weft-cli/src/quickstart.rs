//! `weft quickstart`: three controllers on loopback in this process, with data under one
//! directory. The first run bootstraps node 1 and joins nodes 2 and 3 to it; later runs
//! resume on the same data.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use weft_controller::{Controller, ControllerOptions};

use crate::cluster_cmd::ApiClient;

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
            let api = ApiClient::login(&controllers[0].url, &ca, "admin", &password).await?;
            let t = api
                .call(reqwest::Method::POST, "/fabric/v1/cluster/join-token", None)
                .await?;
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
    println!();
    println!(
        "weft quickstart is running ({})",
        if fresh { "new cluster" } else { "resumed" }
    );
    for (i, c) in controllers.iter().enumerate() {
        println!(
            "  controller {}: {}  (node {}, data {})",
            i + 1,
            c.url,
            c.node.id(),
            c.data_dir.display()
        );
    }
    println!("  CA certificate: {}", ca.display());
    println!("  admin user:     admin");
    println!("  admin password: {password}");
    println!();
    println!("Try next:");
    let u = &controllers[0].url;
    println!("  TOKEN=$(curl -s --cacert {} -X POST '{u}/edge/client/v1/authenticate?method=password' \\", ca.display());
    println!("      -H 'content-type: application/json' -d '{{\"username\":\"admin\",\"password\":\"{password}\"}}' | jq -r .data.token)");
    println!(
        "  curl -s --cacert {} -H \"zt-session: $TOKEN\" {u}/fabric/v1/cluster/list-members | jq",
        ca.display()
    );
    println!("  curl -s --cacert {} -H \"zt-session: $TOKEN\" -X POST {}/edge/management/v1/services -d '{{\"name\":\"web\"}}' | jq", ca.display(), controllers[1].url);
    println!("  weft cluster --ca {} -p {password} list", ca.display());
    println!();
    println!("Press Ctrl-C to stop.");
    crate::shutdown_signal().await;
    println!("stopping...");
    for c in controllers {
        c.stop().await;
    }
    Ok(())
}
