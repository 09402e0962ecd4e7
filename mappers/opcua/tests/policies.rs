//! The security policies besides Basic256Sha256 (tested in `asyncua.rs`)
//! against Python asyncua, which offers every one of them (opcua-sim offers
//! Basic256Sha256 only): Basic128Rsa15 and Basic256 (both deprecated),
//! Aes128_Sha256_RsaOaep and Aes256_Sha256_RsaPss, each with SignAndEncrypt
//! (anonymous) and with Sign and a user name and password (the password
//! encrypted with the policy's asymmetric algorithm): a read, a write and its
//! read-back on a secured session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mapper_sdk::{DeviceClient, Value};
use serde_json::json;

/// `policy` as the asyncua server names it, as the device configures it.
async fn read_and_write_over(server_policy: &str, device_policy: &str) {
    for (mode, security, user) in [
        ("SignAndEncrypt", "encrypt", None),
        ("Sign", "sign", Some("operator:s3cret")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["--security", security, "--policy", server_policy];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        let server = start_asyncua(dir.path(), &args);
        let driver = driver(dir.path());
        let mut cfg = json!({
            "url": server.url(),
            "securityPolicy": device_policy,
            "securityMode": mode,
            "remoteCertificate": dir.path().join("server-certs/server_cert.der"),
        });
        if user.is_some() {
            let pw = dir.path().join("password");
            std::fs::write(&pw, "s3cret\n").unwrap();
            cfg["userName"] = json!("operator");
            cfg["password"] = json!(pw);
        }
        let what = format!("{device_policy}/{mode}");
        let dev = connect(&driver, cfg).await;
        let ns = server.ns;
        assert_eq!(
            dev.read(&address(&format!("ns={ns};s=Int16")))
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}")),
            Value::Int(-300),
            "{what}"
        );
        let w = address(&format!("ns={ns};s=SetDouble"));
        dev.write(&w, &Value::Float(12.5))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(dev.read(&w).await.unwrap(), Value::Float(12.5), "{what}");
        assert_eq!(dev.sessions_opened(), 1, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic128rsa15() {
    read_and_write_over("Basic128Rsa15", "Basic128Rsa15").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic256() {
    read_and_write_over("Basic256", "Basic256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes128_sha256_rsaoaep() {
    read_and_write_over("Aes128Sha256RsaOaep", "Aes128_Sha256_RsaOaep").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes256_sha256_rsapss() {
    read_and_write_over("Aes256Sha256RsaPss", "Aes256_Sha256_RsaPss").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_the_server_does_not_offer_is_named_with_what_it_offers() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_asyncua(
        dir.path(),
        &["--security", "encrypt", "--policy", "Aes256Sha256RsaPss"],
    );
    let driver = driver(dir.path());
    let e = mapper_sdk::Driver::connect(
        &driver,
        &config(json!({
            "url": server.url(),
            "securityPolicy": "Basic128Rsa15",
            "securityMode": "SignAndEncrypt",
            "remoteCertificate": dir.path().join("server-certs/server_cert.der"),
        })),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("offers no endpoint with securityPolicy Basic128Rsa15 and securityMode SignAndEncrypt (it offers Aes256_Sha256_RsaPss/SignAndEncrypt)"),
        "{e}"
    );
}
