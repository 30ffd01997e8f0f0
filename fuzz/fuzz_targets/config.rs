//! Any text as an agent or shipper config, with an environment override taken from its
//! first line: parsed and validated without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry_config::{parse_str, AgentConfig, ShipperConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let env = first
        .split_once('=')
        .map(|(k, v)| vec![(format!("LOGFERRY__{k}"), v.to_owned())])
        .unwrap_or_default();
    if let Ok(cfg) = parse_str::<AgentConfig>(rest, "agent.toml", env.clone()) {
        let _ = cfg.validate();
    }
    if let Ok(cfg) = parse_str::<ShipperConfig>(rest, "shipper.toml", env) {
        let _ = cfg.validate();
    }
});
