//! Prints what the code under test makes of each input, with the fuzzing
//! fixture: a quick look at the seed corpus or at a crash input.
//!
//!     cd fuzz && cargo run --example replay -- token corpus/token/*
//!     cargo run --example replay -- auth_request corpus/auth_request/*
//!     cargo run --example replay -- config corpus/config/*

use std::path::Path;

use nats_oidc_callout::config::Config;
use nats_oidc_callout::Arrival;
use nats_oidc_callout::Deadline;
use nats_oidc_callout_fuzz::{
    fixture, request_claims, sealed, server_signed, CALLOUT_XKEY_PUBLIC, NOW, SERVER_XKEY_PUBLIC,
};
use serde_json::json;

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("target: token, auth_request or config");
    for file in args {
        let data = std::fs::read(&file).unwrap();
        let name = Path::new(&file).file_name().unwrap().to_string_lossy();
        let outcome = match target.as_str() {
            "token" => {
                let f = fixture();
                let token = String::from_utf8_lossy(&data);
                match f.block_on(f.verifier.verify(&token, NOW, &Deadline::none())) {
                    Ok(v) => format!("ok, exp {}", v.exp),
                    Err(e) => format!("{}: {e}", e.code()),
                }
            }
            "auth_request" => {
                let f = fixture();
                let Some((&mode, payload)) = data.split_first() else {
                    continue;
                };
                // The mode byte as fuzz_targets/auth_request.rs reads it.
                let header = match (mode & 1 != 0, mode & 4 != 0) {
                    (false, false) => None,
                    (true, false) => Some(SERVER_XKEY_PUBLIC),
                    (true, true) => Some(CALLOUT_XKEY_PUBLIC),
                    (false, true) => Some("not-a-curve-key"),
                };
                let wrapped;
                let payload = if mode & 8 != 0 {
                    let token = String::from_utf8_lossy(payload);
                    let jwt = server_signed(&request_claims(json!({"pass": token, "protocol": 1})));
                    wrapped = if mode & 1 != 0 { sealed(&jwt) } else { jwt };
                    &wrapped[..]
                } else {
                    payload
                };
                let max = if mode & 2 != 0 { 1024 } else { 1024 * 1024 };
                let d = f.block_on(f.callout.decide(payload, header, max, Arrival::now()));
                format!("mode {mode}, {} byte body, {:?}", d.body.len(), d.verdict)
            }
            "config" => {
                match Config::parse(&String::from_utf8_lossy(&data), Path::new("fuzz.toml")) {
                    Ok(_) => "valid".to_string(),
                    Err(e) => e.to_string(),
                }
            }
            other => panic!("unknown target {other}"),
        };
        println!("{name}: {outcome}");
    }
}
