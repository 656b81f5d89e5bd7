//! `--emulator`: azure-sim in the gateway's own process, so `cargo run -- --emulator` is a
//! complete local setup with nothing else installed. Production builds can leave it out
//! (`--no-default-features`).

use std::net::SocketAddr;
use std::path::Path;

#[cfg(feature = "emulator")]
use anyhow::Context;

/// The emulator's development configuration, built in so the flag works from any directory.
const DEV_CONFIG: &str = include_str!("../../../deploy/azure-sim.json");

/// A running emulator; dropping it stops it.
pub struct Emulator(#[cfg(feature = "emulator")] azure_sim::SimHandle);

impl Emulator {
    /// The emulator's base URL (`http://ADDR`); resources are under `/r/NAME`.
    pub fn base_url(&self) -> String {
        #[cfg(feature = "emulator")]
        return self.0.base_url();
        #[cfg(not(feature = "emulator"))]
        String::new()
    }
}

#[cfg(feature = "emulator")]
pub async fn start(addr: SocketAddr, config: Option<&Path>) -> anyhow::Result<Emulator> {
    let config = match config {
        Some(path) => azure_sim::SimConfig::from_file(path)?,
        None => serde_json::from_str(DEV_CONFIG).context("the built-in emulator configuration")?,
    };
    let handle = azure_sim::Sim::start_on(config, addr)
        .await
        .context("starting the emulator")?;
    Ok(Emulator(handle))
}

#[cfg(not(feature = "emulator"))]
pub async fn start(_: SocketAddr, _: Option<&Path>) -> anyhow::Result<Emulator> {
    let _ = DEV_CONFIG;
    anyhow::bail!("this build has no emulator (built without the `emulator` feature)")
}
