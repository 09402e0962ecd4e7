//! The driver against an independent server: Python asyncua
//! (`python/asyncua_server.py`). Every supported type read in one Read
//! call, writes coerced to the node's type and read back, Basic256Sha256
//! with Sign and SignAndEncrypt and a user name and password, the untrusted
//! server certificate, subscriptions, browse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use mapper_sdk::{DeviceClient, DriverError, Value};
use serde_json::json;

fn node(ns: u16, name: &str) -> String {
    format!("ns={ns};s={name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_is_read_in_one_read_call_and_a_bad_node_is_only_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_asyncua(dir.path(), &[]);
    let driver = driver(dir.path());
    let dev = connect(&driver, json!({"url": server.url()})).await;
    let ns = server.ns;
    let expected: Vec<(&str, Value)> = vec![
        ("Bool", Value::Bool(true)),
        ("SByte", Value::Int(-5)),
        ("Byte", Value::Int(200)),
        ("Int16", Value::Int(-300)),
        ("UInt16", Value::Int(60000)),
        ("Int32", Value::Int(-70000)),
        ("UInt32", Value::Int(4_000_000_000)),
        ("Int64", Value::Int(-9_000_000_000)),
        ("UInt64", Value::Int(42)),
        ("Float", Value::Float(0.1)),
        ("Double", Value::Float(2.5)),
        ("String", Value::String("hello".into())),
        ("DateTime", Value::String("2024-05-01T12:00:00.000Z".into())),
        ("ByteString", Value::Bytes(vec![0x01, 0xab])),
        ("LocalizedText", Value::String("Pump".into())),
        (
            "Guid",
            Value::String("72962b91-fa75-4ae6-8d28-b404dc7daf63".into()),
        ),
        ("Int32Array", Value::String("1,-2,3".into())),
        ("DoubleArray", Value::String("1.5,-2".into())),
    ];
    let mut addrs: Vec<_> = expected
        .iter()
        .map(|(n, _)| address(&node(ns, n)))
        .collect();
    addrs.insert(3, address(&node(ns, "NoSuchNode")));
    // A namespace URI works as well as an index.
    addrs.push(address("nsu=urn:edge-dmi:test:plant;s=Int16"));
    let refs: Vec<_> = addrs.iter().collect();
    let before = dev.requests();
    let got = dev.read_batch(&refs).await;
    assert_eq!(dev.requests() - before, 1, "one Read call for the tick");
    assert_eq!(got.len(), refs.len());
    let bad = got[3].as_ref().unwrap_err();
    assert!(matches!(bad, DriverError::Device(_)), "{bad}");
    assert!(bad.to_string().contains("BadNodeIdUnknown"), "{bad}");
    let mut rest = got;
    let _ = rest.remove(3);
    let last = rest.pop().unwrap();
    assert_eq!(last.unwrap(), Value::Int(-300));
    for ((name, want), r) in expected.iter().zip(rest) {
        assert_eq!(r.as_ref().unwrap(), want, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_coerced_to_the_nodes_type_refused_when_they_do_not_fit_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_asyncua(dir.path(), &[]);
    let driver = driver(dir.path());
    let dev = connect(&driver, json!({"url": server.url()})).await;
    let ns = server.ns;
    let cases: Vec<(&str, Value, Value)> = vec![
        ("SetInt16", Value::Int(-12), Value::Int(-12)),
        ("SetByte", Value::Float(7.0), Value::Int(7)),
        (
            "SetUInt32",
            Value::String("4000000000".into()),
            Value::Int(4_000_000_000),
        ),
        ("SetFloat", Value::Float(1.25), Value::Float(1.25)),
        ("SetDouble", Value::Int(3), Value::Float(3.0)),
        ("SetBool", Value::Bool(true), Value::Bool(true)),
        ("SetString", Value::Int(42), Value::String("42".into())),
        (
            "SetDateTime",
            Value::String("2025-01-02T03:04:05Z".into()),
            Value::String("2025-01-02T03:04:05.000Z".into()),
        ),
        (
            "SetGuid",
            Value::String("0b5e1c4a-9f4e-4b8e-8d6a-2f1e3c5d7a9b".into()),
            Value::String("0b5e1c4a-9f4e-4b8e-8d6a-2f1e3c5d7a9b".into()),
        ),
        (
            "SetLocalizedText",
            Value::String("Open".into()),
            Value::String("Open".into()),
        ),
        (
            "SetInt32Array",
            Value::String("4,5,6".into()),
            Value::String("4,5,6".into()),
        ),
    ];
    for (name, value, back) in cases {
        let a = address(&node(ns, name));
        dev.write(&a, &value)
            .await
            .unwrap_or_else(|e| panic!("{name} {value:?}: {e}"));
        assert_eq!(dev.read(&a).await.unwrap(), back, "{name}");
    }
    // Values the node's type cannot hold: refused before anything is sent.
    let before = dev.requests();
    let e = dev
        .write(&address(&node(ns, "SetByte")), &Value::Int(300))
        .await
        .unwrap_err();
    assert!(matches!(e, DriverError::Value(_)), "{e}");
    assert!(
        e.to_string()
            .contains("`300` does not fit Byte: outside 0..=255"),
        "{e}"
    );
    let e = dev
        .write(
            &address(&node(ns, "SetInt16")),
            &Value::String("warm".into()),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("`warm` does not fit Int16: not an integer"),
        "{e}"
    );
    assert_eq!(
        dev.requests(),
        before,
        "the node types were read once, no writes sent"
    );
    // A node the server does not let us write: its status, named.
    let e = dev
        .write(&address(&node(ns, "Int16")), &Value::Int(1))
        .await
        .unwrap_err();
    assert!(matches!(e, DriverError::Device(_)), "{e}");
    assert!(e.to_string().contains("Bad"), "{e}");
    // An unknown node: BadNodeIdUnknown, from reading its type.
    let e = dev
        .write(&address(&node(ns, "Nope")), &Value::Int(1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("BadNodeIdUnknown"), "{e}");
    // dataType overrides what the server says (here: the same type).
    let a = address_with(
        json!({"nodeID": node(ns, "SetUInt32"), "dataType": "UInt32"}),
        None,
        Duration::from_secs(1),
    );
    dev.write(&a, &Value::Int(5)).await.unwrap();
    assert_eq!(dev.read(&a).await.unwrap(), Value::Int(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic256sha256_sign_and_encrypt_with_user_name_and_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_asyncua(
        dir.path(),
        &["--security", "encrypt", "--user", "operator:s3cret"],
    );
    let pw = dir.path().join("password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let driver = driver(dir.path());
    let cfg = json!({
        "url": server.url(),
        "securityPolicy": "Basic256Sha256",
        "securityMode": "SignAndEncrypt",
        "userName": "operator",
        "password": pw.to_str().unwrap(),
    });
    // The server's certificate is not trusted yet: refused, saved, and the
    // message says how to trust it.
    let e = mapper_sdk::Driver::connect(&driver, &config(cfg.clone()))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(e.is_link_failure(), "{text}");
    assert!(text.contains("is not trusted"), "{text}");
    assert!(text.contains("/pki/rejected/"), "{text}");
    assert!(text.contains("/pki/trusted"), "{text}");
    assert!(text.contains("remoteCertificate"), "{text}");
    // remoteCertificate trusts it.
    let mut trusted = cfg.clone();
    trusted["remoteCertificate"] = json!(dir.path().join("server-certs/server_cert.der"));
    let dev = connect(&driver, trusted.clone()).await;
    let a = address(&node(server.ns, "Int16"));
    assert_eq!(dev.read(&a).await.unwrap(), Value::Int(-300));
    let w = address(&node(server.ns, "SetInt16"));
    dev.write(&w, &Value::Int(77)).await.unwrap();
    assert_eq!(dev.read(&w).await.unwrap(), Value::Int(77));
    // A wrong password is refused, naming the user.
    std::fs::write(&pw, "wrong\n").unwrap();
    let mut other = trusted.clone();
    other["timeout"] = json!(4000); // another endpoint key: a new session
    let e = mapper_sdk::Driver::connect(&driver, &config(other))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("refused user `operator`"), "{e}");
    // The server offers no None endpoint: said so.
    let e = mapper_sdk::Driver::connect(
        &driver,
        &config(
            json!({"url": server.url(), "userName": "operator", "password": pw.to_str().unwrap()}),
        ),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("offers no endpoint with securityPolicy None and securityMode None (it offers Basic256Sha256/SignAndEncrypt)"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic256sha256_sign_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_asyncua(dir.path(), &["--security", "sign"]);
    let driver = driver(dir.path());
    let dev = connect(
        &driver,
        json!({
            "url": server.url(),
            "securityPolicy": "Basic256Sha256",
            "securityMode": "Sign",
            "remoteCertificate": dir.path().join("server-certs/server_cert.der"),
        }),
    )
    .await;
    assert_eq!(
        dev.read(&address(&node(server.ns, "String")))
            .await
            .unwrap(),
        Value::String("hello".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_push_values_and_a_bad_node_is_left_to_polling() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_asyncua(dir.path(), &[]);
    let driver = driver(dir.path());
    let dev = connect(
        &driver,
        json!({"url": server.url(), "subscribe": true, "publishingInterval": 100}),
    )
    .await;
    let counter = address_with(
        json!({"nodeID": node(server.ns, "Counter")}),
        None,
        Duration::from_millis(100),
    );
    let missing = address(&node(server.ns, "Missing"));
    let sub = dev.subscribe(&[&counter, &missing]).await.unwrap().unwrap();
    assert_eq!(sub.covered, vec![true, false]);
    let mut stream = sub.stream;
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let p = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a notification")
            .expect("the stream goes on");
        assert_eq!(p.index, 0);
        match p.value.unwrap() {
            Value::Int(n) => seen.push(n),
            other => panic!("{other:?}"),
        }
        assert!(p.source_time.is_some());
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    // The server going away ends the stream with a link error.
    drop(server);
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.next().await {
                Some(p) if p.value.is_err() => return p.value.unwrap_err(),
                Some(_) => continue,
                None => panic!("the stream ended without an error"),
            }
        }
    })
    .await
    .expect("the loss is noticed");
    assert!(end.is_link_failure(), "{end}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_one_endpoint_share_a_session_and_a_lost_session_is_a_link_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_asyncua(dir.path(), &[]);
    let driver = driver(dir.path());
    let a = connect(&driver, json!({"url": server.url()})).await;
    let b = connect(&driver, json!({"url": server.url()})).await;
    assert!(std::sync::Arc::ptr_eq(a.conn(), b.conn()));
    assert_eq!(a.sessions_opened(), 1);
    assert_eq!(driver.pool().len(), 1);
    let port = server.port;
    server.kill();
    let x = address(&node(server.ns, "Int16"));
    let e = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Err(e) = a.read(&x).await
                && e.is_link_failure()
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap();
    assert!(e.is_link_failure(), "{e}");
    assert!(b.read(&x).await.unwrap_err().is_link_failure());
    // Back on the same port: a new session, shared again.
    let server = start_asyncua_on(dir.path(), port, &[]);
    let c = connect(&driver, json!({"url": server.url()})).await;
    assert_eq!(c.read(&x).await.unwrap(), Value::Int(-300));
    assert_eq!(c.sessions_opened(), 2);
    assert!(!std::sync::Arc::ptr_eq(a.conn(), c.conn()));
    let d = connect(&driver, json!({"url": server.url()})).await;
    assert!(std::sync::Arc::ptr_eq(c.conn(), d.conn()));
    drop((a, b, c, d));
    assert_eq!(driver.pool().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_lists_variables_and_writes_a_device_and_model_that_validate() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_asyncua(dir.path(), &[]);
    let driver = driver(dir.path());
    let endpoint = config(json!({"url": server.url()})).endpoint().unwrap();
    let (_slot, conn) = driver.pool().open(&endpoint).await.unwrap();
    let opts = mapper_opcua::browse::Options {
        start: mapper_opcua::browse::start_node(&conn, "nsu=urn:edge-dmi:test:plant;s=Plant")
            .unwrap(),
        depth: 2,
        ..Default::default()
    };
    let vars = mapper_opcua::browse::browse(&conn, &opts).await.unwrap();
    let table = mapper_opcua::browse::table(&vars);
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} not in\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(line("Int16")[2..], ["Int16", "R"]);
    assert_eq!(line("SetFloat")[2..], ["Float", "RW"]);
    assert_eq!(line("Int32Array")[2..], ["Int32[]", "R"]);
    assert_eq!(line("DateTime")[2..], ["DateTime", "R"]);
    assert_eq!(line("Int16")[0], format!("ns={};s=Int16", server.ns));
    // From the Objects folder the Server object is skipped.
    let all = mapper_opcua::browse::browse(&conn, &Default::default())
        .await
        .unwrap();
    assert!(
        all.iter().all(|v| v.node_id.namespace != 0),
        "{:?}",
        all.first()
    );
    assert_eq!(all.len(), vars.len());

    let cfg = config(json!({"url": server.url()}));
    let yaml = mapper_opcua::browse::yaml(
        &vars,
        &cfg,
        &mapper_opcua::browse::YamlOptions {
            name: "plant".into(),
            namespace: "default".into(),
            collect_cycle_ms: 500,
            node_name: None,
        },
    );
    let docs: Vec<&str> = yaml.split("\n---\n").collect();
    assert_eq!(docs.len(), 2, "{yaml}");
    let model: device_crds::DeviceModel = yaml_serde::from_str(docs[0]).unwrap();
    let device: device_crds::Device = yaml_serde::from_str(docs[1]).unwrap();
    assert_eq!(model.spec.properties.len(), vars.len());
    let p = model
        .spec
        .properties
        .iter()
        .find(|p| p.name == "SetFloat")
        .unwrap();
    assert_eq!(p.type_, "FLOAT");
    assert_eq!(p.access_mode, "ReadWrite");
    assert!(device_crds::check::model_problems(&model).is_empty());
    assert!(device_crds::check::device_problems(&device).is_empty());
    assert!(matches!(
        device_crds::check::device_against_model(&device, Some(&model)),
        device_crds::check::ModelCheck::Checked(ref p) if p.is_empty()
    ));
    assert!(
        device_crds::protocols::config_problems(&device, Some(&model)).is_empty(),
        "{:?}",
        device_crds::protocols::config_problems(&device, Some(&model))
    );
    // And the mapper reads what browse wrote.
    let dev = connect(&driver, json!({"url": server.url()})).await;
    let addrs: Vec<mapper_opcua::OpcuaAddress> = device
        .spec
        .properties
        .iter()
        .map(|p| {
            let v = p.visitors.as_ref().unwrap().config_data.clone().unwrap();
            address_with(
                serde_json::to_value(v).unwrap(),
                None,
                Duration::from_secs(1),
            )
        })
        .collect();
    let refs: Vec<_> = addrs.iter().collect();
    for (r, p) in dev
        .read_batch(&refs)
        .await
        .iter()
        .zip(&device.spec.properties)
    {
        if p.name != "Counter" {
            assert!(r.is_ok(), "{}: {r:?}", p.name);
        }
    }
}
