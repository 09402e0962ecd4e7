//! A plugin rendered from templates/wasm-driver, built for wasm32-wasip2 and
//! run by this host against a fake device speaking the template's line
//! protocol: reads, writes, a device refusal, the connection refused without
//! a grant. `hack/check-template.sh` renders and builds the plugin and runs
//! this test with `WASM_TEMPLATE_PLUGIN` set to the component; without it the
//! test prints `SKIP` and passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mapper_sdk::{DriverError, DynDriver, Value};
use serde_json::{Map, Value as Json, json};

/// Registers of the fake device.
type Registers = Arc<Mutex<Vec<(String, String)>>>;

/// A device that keeps registers and answers `READ r` / `WRITE r v`.
fn fake_device() -> (u16, Registers) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let regs: Registers = Arc::new(Mutex::new(vec![("temp".into(), "21.5".into())]));
    let r = regs.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let r = r.clone();
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                for line in BufReader::new(conn).lines().map_while(Result::ok) {
                    let w: Vec<&str> = line.split(' ').collect();
                    let answer = {
                        let mut regs = r.lock().unwrap();
                        match w.as_slice() {
                            ["READ", name] => regs.iter().find(|(n, _)| n == name).map_or_else(
                                || "ERR no such register".to_owned(),
                                |(_, v)| v.clone(),
                            ),
                            ["WRITE", name, value] => {
                                regs.retain(|(n, _)| n != name);
                                regs.push(((*name).to_owned(), (*value).to_owned()));
                                "OK".to_owned()
                            }
                            _ => "ERR bad request".to_owned(),
                        }
                    };
                    if writeln!(out, "{answer}").is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, regs)
}

fn obj(v: Json) -> Map<String, Json> {
    v.as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_from_the_template_runs_in_the_host() {
    let Some(plugin) = std::env::var_os("WASM_TEMPLATE_PLUGIN") else {
        println!("SKIP: WASM_TEMPLATE_PLUGIN is not set (hack/check-template.sh sets it)");
        return;
    };
    common::logs();
    let plugin = plugin.to_str().unwrap().to_owned();
    let (port, regs) = fake_device();
    let host = common::driver(Duration::from_secs(10));
    let d: &dyn DynDriver = &host;
    let cfg = d
        .config(&obj(json!({
            "plugin": plugin,
            "grantTcp": format!("127.0.0.1:{port}"),
            "host": "127.0.0.1",
            "port": port,
        })))
        .unwrap();
    let client = d.connect(&cfg.value).await.unwrap();
    let temp = d
        .address(&obj(json!({"register": "temp"})), None)
        .unwrap()
        .value;
    let mode = d
        .address(&obj(json!({"register": "mode"})), None)
        .unwrap()
        .value;
    assert_eq!(
        client.read_batch(&[&temp]).await.remove(0).unwrap(),
        Value::Float(21.5)
    );
    let missing = client.read_batch(&[&mode]).await.remove(0).unwrap_err();
    assert!(matches!(missing, DriverError::Device(_)), "{missing}");
    client.write(&mode, &Value::Int(3)).await.unwrap();
    assert!(regs.lock().unwrap().contains(&("mode".into(), "3".into())));
    let both = client.read_batch(&[&temp, &mode]).await;
    assert_eq!(both[1].as_ref().unwrap(), &Value::Int(3));
    client.disconnect().await;

    // Without the grant the host refuses the connection, naming the address.
    let cfg = d
        .config(&obj(
            json!({"plugin": plugin, "host": "127.0.0.1", "port": port}),
        ))
        .unwrap();
    let denied = d.connect(&cfg.value).await.err().unwrap();
    assert!(
        denied
            .to_string()
            .contains(&format!("127.0.0.1:{port} denied")),
        "{denied}"
    );
}
