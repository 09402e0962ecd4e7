//! The simulator in process (port 0, temporary PKI directories) read, written
//! and browsed with async-opcua's client, over the None endpoint and over
//! Basic256Sha256 SignAndEncrypt with a user name and password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opcua::client::{ClientBuilder, IdentityToken, Session};
use opcua::crypto::SecurityPolicy;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDescriptionResultMask, BrowseDirection, DataValue,
    MessageSecurityMode, NodeClassMask, NodeId, ReadValueId, ReferenceTypeId, StatusCode,
    TimestampsToReturn, VariableId, Variant, WriteValue,
};
use opcua_sim::{SimConfig, Simulator};
use tempfile::TempDir;

const PLANT: &str = include_str!("../examples/plant.yaml");

/// A server certificate made once (kept in cargo's test temp dir across
/// runs): generating an RSA key takes seconds in a debug build.
static SERVER_PKI: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();

/// The PKI directory `name` in cargo's test temp dir, made by `make` in a
/// directory of its own and renamed into place, so that test processes
/// running at the same time (nextest runs each test in its own) never see or
/// write a half-made one: whichever finishes first is kept.
async fn shared_pki<F>(name: &str, make: impl FnOnce(PathBuf) -> F) -> PathBuf
where
    F: std::future::Future<Output = ()>,
{
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let pki = tmp.join(name);
    let complete =
        |p: &Path| p.join("own/cert.der").is_file() && p.join("private/private.pem").is_file();
    if complete(&pki) {
        return pki;
    }
    let fresh = tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(tmp)
        .unwrap()
        .keep();
    make(fresh.clone()).await;
    assert!(complete(&fresh), "no key pair made in {}", fresh.display());
    if std::fs::rename(&fresh, &pki).is_ok() {
        return pki;
    }
    // Another process won the race (use its directory), or a half-made one
    // from an interrupted run is in the way (use ours).
    if complete(&pki) {
        let _ = std::fs::remove_dir_all(&fresh);
        pki
    } else {
        fresh
    }
}

/// A PKI directory in `dir` holding a copy of the shared server certificate.
async fn server_pki(dir: &Path) -> PathBuf {
    let template = SERVER_PKI
        .get_or_init(|| {
            shared_pki("opcua-sim-client-test-pki", |pki| async move {
                let cfg = SimConfig {
                    pki_dir: pki,
                    ..SimConfig::default()
                };
                Simulator::start(cfg).await.unwrap().shutdown().await;
            })
        })
        .await;
    let pki = dir.join("server-pki");
    for file in ["own/cert.der", "private/private.pem"] {
        let to = pki.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(template.join(file), to).unwrap();
    }
    pki
}

async fn start(yaml: &str, dir: &Path) -> Simulator {
    let mut cfg: SimConfig = yaml_serde::from_str(yaml).unwrap();
    cfg.pki_dir = server_pki(dir).await;
    cfg.port = 0;
    Simulator::start(cfg).await.unwrap()
}

struct Client {
    session: Arc<Session>,
    event_loop: tokio::task::JoinHandle<StatusCode>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.event_loop.abort();
    }
}

/// A client certificate made once, like [`SERVER_PKI`].
static CLIENT_PKI: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();

fn client_builder(pki: &Path) -> ClientBuilder {
    ClientBuilder::new()
        .application_name("opcua-sim test client")
        .application_uri("urn:edge-dmi:opcua-sim:test-client")
        .product_uri("urn:edge-dmi:opcua-sim:test-client")
        .pki_dir(pki)
        .trust_server_certs(true)
}

/// A client PKI directory in `dir` holding a copy of the shared client
/// certificate.
async fn client_pki(dir: &Path) -> PathBuf {
    let template = CLIENT_PKI
        .get_or_init(|| {
            shared_pki("opcua-sim-client-test-client-pki", |pki| async move {
                tokio::task::spawn_blocking(move || {
                    client_builder(&pki)
                        .create_sample_keypair(true)
                        .client()
                        .unwrap()
                })
                .await
                .unwrap();
            })
        })
        .await;
    let pki = dir.join("client-pki");
    for file in ["own/cert.der", "private/private.pem"] {
        let to = pki.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(template.join(file), to).unwrap();
    }
    pki
}

async fn connect(
    sim: &Simulator,
    dir: &Path,
    policy: SecurityPolicy,
    mode: MessageSecurityMode,
    identity: IdentityToken,
) -> Result<Client, String> {
    let pki = if policy == SecurityPolicy::None {
        dir.join("client-pki")
    } else {
        client_pki(dir).await
    };
    let mut client = client_builder(&pki)
        .session_retry_limit(3)
        .session_retry_initial(Duration::from_millis(100))
        .client()
        .map_err(|e| format!("{e:?}"))?;
    let (session, event_loop) = client
        .connect_to_matching_endpoint((sim.endpoint_url(), policy.to_str(), mode), identity)
        .await
        .map_err(|e| e.to_string())?;
    let mut event_loop = event_loop.spawn();
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::select! {
            connected = session.wait_for_connection() => {
                if connected { Ok(()) } else { Err("session did not connect".to_owned()) }
            }
            ended = &mut event_loop => Err(format!("{:?}", ended.map_err(|e| e.to_string()))),
        }
    })
    .await
    .map_err(|_| "no connection within 20 s".to_owned())?;
    if let Err(e) = outcome {
        event_loop.abort();
        return Err(e);
    }
    Ok(Client {
        session,
        event_loop,
    })
}

async fn connect_none(sim: &Simulator, dir: &Path) -> Client {
    connect(
        sim,
        dir,
        SecurityPolicy::None,
        MessageSecurityMode::None,
        IdentityToken::Anonymous,
    )
    .await
    .unwrap()
}

fn id(text: &str) -> NodeId {
    let full = if text.starts_with("ns=") {
        text.to_owned()
    } else {
        format!("ns=2;{text}")
    };
    full.parse().unwrap()
}

async fn read(c: &Client, nodes: &[&str]) -> Vec<DataValue> {
    let ids: Vec<ReadValueId> = nodes.iter().map(|n| ReadValueId::from(id(n))).collect();
    c.session
        .read(&ids, TimestampsToReturn::Both, 0.0)
        .await
        .unwrap()
}

async fn read1(c: &Client, node: &str) -> DataValue {
    read(c, &[node]).await.remove(0)
}

async fn write1(c: &Client, node: &str, v: impl Into<Variant>) -> StatusCode {
    let w = WriteValue {
        node_id: id(node),
        attribute_id: AttributeId::Value as u32,
        index_range: Default::default(),
        value: DataValue::value_only(v.into()),
    };
    c.session.write(&[w]).await.unwrap().remove(0)
}

fn number(dv: &DataValue) -> f64 {
    dv.value.as_ref().and_then(Variant::as_f64).unwrap()
}

const DYNAMIC: &str = "
tickMs: 20
nodes:
  - { nodeId: i=1, dataType: UInt32, pattern: counter, periodMs: 100 }
  - { nodeId: s=Sine, dataType: Double, value: 50, amplitude: 10, pattern: sine, periodMs: 1000 }
  - { nodeId: s=Ramp, dataType: Int16, pattern: ramp, min: 0, max: 1000, periodMs: 2000 }
  - { nodeId: s=Walk, dataType: Float, value: 5, pattern: randomWalk, min: 0, max: 10, step: 1, periodMs: 50 }
  - { nodeId: s=Toggle, dataType: Boolean, pattern: counter, periodMs: 100 }
  - { nodeId: s=Still, dataType: Double, value: 1.5 }
";

#[tokio::test]
async fn values_change_per_pattern() {
    let dir = TempDir::new().unwrap();
    let sim = start(DYNAMIC, dir.path()).await;
    let c = connect_none(&sim, dir.path()).await;
    let nodes = ["i=1", "s=Sine", "s=Ramp", "s=Walk", "s=Still"];
    let first = read(&c, &nodes).await;
    for dv in &first {
        assert_eq!(dv.status(), StatusCode::Good, "{dv:?}");
    }
    let mut toggles = std::collections::HashSet::new();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if let Some(Variant::Boolean(b)) = read1(&c, "s=Toggle").await.value {
            toggles.insert(b);
        }
    }
    let second = read(&c, &nodes).await;
    let (c0, c1) = (number(&first[0]), number(&second[0]));
    assert!(c1 >= c0 + 4.0, "counter {c0} -> {c1}");
    assert_eq!(
        second[0].value,
        Some(Variant::UInt32(c1 as u32)),
        "UInt32 typed"
    );
    assert_ne!(number(&first[1]), number(&second[1]), "sine moves");
    assert!((40.0..=60.0).contains(&number(&second[1])));
    assert_ne!(number(&first[2]), number(&second[2]), "ramp moves");
    let walk = number(&second[3]);
    assert!((0.0..=10.0).contains(&walk), "walk {walk}");
    assert_eq!(second[4].value, Some(Variant::Double(1.5)), "constant");
    assert_eq!(toggles.len(), 2, "the Boolean counter toggles");
    assert!(second[0].source_timestamp.is_some());
    sim.shutdown().await;
}

const SETPOINTS: &str = "
nodes:
  - { nodeId: s=Setpoint, dataType: Double, value: 20, writable: true, min: 0, max: 100 }
  - { nodeId: s=Counter, dataType: Int32, writable: true, pattern: counter, periodMs: 50 }
  - { nodeId: s=Levels, dataType: Float, array: true, value: [1, 2], writable: true }
  - { nodeId: s=Name, dataType: String, value: boiler, writable: true }
  - { nodeId: s=Measured, dataType: Double, value: 7 }
";

#[tokio::test]
async fn writes_stick_and_read_only_nodes_refuse() {
    let dir = TempDir::new().unwrap();
    let sim = start(SETPOINTS, dir.path()).await;
    let c = connect_none(&sim, dir.path()).await;

    assert_eq!(write1(&c, "s=Setpoint", 42.5f64).await, StatusCode::Good);
    assert_eq!(write1(&c, "s=Counter", 1000i32).await, StatusCode::Good);
    assert_eq!(write1(&c, "s=Name", "pump").await, StatusCode::Good);
    let levels = opcua::types::Array::new(
        opcua::types::VariantScalarTypeId::Float,
        vec![
            Variant::Float(3.5),
            Variant::Float(4.5),
            Variant::Float(5.5),
        ],
    )
    .unwrap();
    assert_eq!(write1(&c, "s=Levels", levels).await, StatusCode::Good);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = read(&c, &["s=Setpoint", "s=Counter", "s=Name", "s=Levels"]).await;
    assert_eq!(after[0].value, Some(Variant::Double(42.5)));
    assert_eq!(
        after[1].value,
        Some(Variant::Int32(1000)),
        "a written counter stays written"
    );
    assert_eq!(after[2].value, Some(Variant::from("pump")));
    assert_eq!(sim.command("get s=Levels").await, "OK Good [3.5,4.5,5.5]");
    assert_eq!(sim.command("get s=Setpoint").await, "OK Good 42.5");

    assert_eq!(
        write1(&c, "s=Measured", 8.0f64).await,
        StatusCode::BadNotWritable
    );
    assert_eq!(
        read1(&c, "s=Measured").await.value,
        Some(Variant::Double(7.0))
    );
    assert_eq!(
        write1(&c, "s=Setpoint", 5i32).await,
        StatusCode::BadTypeMismatch
    );
    assert_eq!(
        write1(&c, "s=Setpoint", 101.0f64).await,
        StatusCode::BadOutOfRange
    );
    assert_eq!(
        write1(&c, "s=Missing", 1.0f64).await,
        StatusCode::BadNodeIdUnknown
    );
    assert_eq!(
        read1(&c, "s=Setpoint").await.value,
        Some(Variant::Double(42.5))
    );

    // The access levels say the same.
    let rv = |node: &str| ReadValueId {
        node_id: id(node),
        attribute_id: AttributeId::AccessLevel as u32,
        ..Default::default()
    };
    let levels = c
        .session
        .read(
            &[rv("s=Setpoint"), rv("s=Measured")],
            TimestampsToReturn::Neither,
            0.0,
        )
        .await
        .unwrap();
    assert_eq!(
        levels[0].value,
        Some(Variant::Byte(3)),
        "CurrentRead|CurrentWrite"
    );
    assert_eq!(levels[1].value, Some(Variant::Byte(1)), "CurrentRead");
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_command_makes_reads_return_the_status() {
    let dir = TempDir::new().unwrap();
    let sim = start(SETPOINTS, dir.path()).await;
    let c = connect_none(&sim, dir.path()).await;
    assert_eq!(
        sim.command("bad ns=2;s=Measured BadSensorFailure").await,
        "OK"
    );
    let dv = read1(&c, "s=Measured").await;
    assert_eq!(dv.status(), StatusCode::BadSensorFailure);
    assert!(matches!(dv.value, None | Some(Variant::Empty)), "{dv:?}");
    assert_eq!(
        sim.command("get s=Measured").await,
        "OK BadSensorFailure null"
    );
    assert_eq!(sim.command("bad s=Setpoint BadDeviceFailure").await, "OK");
    assert_eq!(
        write1(&c, "s=Setpoint", 30.0f64).await,
        StatusCode::BadDeviceFailure,
        "a failed device refuses writes with its status"
    );
    assert_eq!(sim.command("good s=Measured").await, "OK");
    let dv = read1(&c, "s=Measured").await;
    assert_eq!(dv.status(), StatusCode::Good);
    assert_eq!(dv.value, Some(Variant::Double(7.0)));
    assert_eq!(sim.command("set s=Measured 9.25").await, "OK");
    assert_eq!(
        read1(&c, "s=Measured").await.value,
        Some(Variant::Double(9.25))
    );

    for (line, expect) in [
        (
            "bad s=Measured Broken",
            "ERR `Broken` is not a status code name",
        ),
        ("bad s=Nope BadSensorFailure", "ERR unknown node s=Nope"),
        ("set s=Measured warm", "ERR `warm` is not a value"),
        ("latency soon", "ERR `latency` takes milliseconds"),
        ("frobnicate", "ERR unknown command `frobnicate`"),
    ] {
        let answer = sim.command(line).await;
        assert!(answer.starts_with(expect), "{line}: {answer}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn the_example_plant_serves_every_type_and_a_browsable_tree() {
    let dir = TempDir::new().unwrap();
    let sim = start(PLANT, dir.path()).await;
    let c = connect_none(&sim, dir.path()).await;
    let values = read(
        &c,
        &[
            "s=Boiler.Temperature",
            "s=Boiler.Pressure",
            "s=Boiler.Setpoint",
            "s=Boiler.Burner",
            "s=Boiler.ZoneTemperatures",
            "i=2001",
            "i=2002",
            "i=2003",
            "i=2004",
            "i=2005",
            "i=2006",
            "i=2007",
            "i=2008",
        ],
    )
    .await;
    for dv in &values {
        assert_eq!(dv.status(), StatusCode::Good, "{dv:?}");
    }
    let v = |i: usize| values[i].value.clone().unwrap();
    assert!(matches!(v(0), Variant::Double(x) if (62.0..=68.0).contains(&x)));
    assert!(matches!(v(1), Variant::Float(_)));
    assert_eq!(v(2), Variant::Double(60.0));
    assert_eq!(v(3), Variant::Boolean(true));
    assert!(matches!(&v(4), Variant::Array(a) if a.values.len() == 3));
    assert!(matches!(v(5), Variant::UInt32(_)));
    assert!(matches!(v(6), Variant::Int16(_)));
    assert_eq!(v(7), Variant::from("PMP-0042"));
    assert!(
        matches!(&v(8), Variant::LocalizedText(t) if t.text.as_ref() == "Centrifugal pump 3 kW")
    );
    assert!(
        matches!(&v(9), Variant::DateTime(d) if d.to_rfc3339().starts_with("2024-03-01T08:00:00"))
    );
    assert!(
        matches!(&v(10), Variant::Guid(g) if g.to_string() == "72962b91-fa75-4ae6-8d28-b404dc7daf63")
    );
    assert_eq!(v(11), Variant::ByteString(vec![1u8, 2, 3, 4].into()));
    assert_eq!(v(12), Variant::Byte(1));

    // Objects → Plant → Boiler → variables.
    let browse = |node: NodeId| BrowseDescription {
        node_id: node,
        browse_direction: BrowseDirection::Forward,
        reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
        include_subtypes: true,
        node_class_mask: (NodeClassMask::OBJECT | NodeClassMask::VARIABLE).bits(),
        result_mask: BrowseDescriptionResultMask::all().bits(),
    };
    let names = |node: NodeId| {
        let session = c.session.clone();
        async move {
            let r = session.browse(&[browse(node)], 1000, None).await.unwrap();
            r[0].references
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.browse_name.name.as_ref().to_owned(), r.node_id.node_id))
                .collect::<Vec<_>>()
        }
    };
    let top = names(NodeId::objects_folder_id()).await;
    let plant = top
        .iter()
        .find(|(n, _)| n == "Plant")
        .expect("Plant under Objects");
    let under_plant = names(plant.1.clone()).await;
    let mut folders: Vec<&str> = under_plant.iter().map(|(n, _)| n.as_str()).collect();
    folders.sort_unstable();
    assert_eq!(folders, ["Boiler", "Pump"]);
    let boiler = under_plant.iter().find(|(n, _)| n == "Boiler").unwrap();
    let mut vars: Vec<String> = names(boiler.1.clone())
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    vars.sort_unstable();
    assert_eq!(
        vars,
        [
            "Burner",
            "Pressure",
            "Setpoint",
            "Temperature",
            "ZoneTemperatures"
        ]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn max_nodes_per_read_is_announced_and_enforced() {
    let dir = TempDir::new().unwrap();
    let mut cfg = SimConfig::default().with_generated(20, 1000);
    cfg.pki_dir = server_pki(dir.path()).await;
    cfg.limits.max_nodes_per_read = 10;
    let sim = Simulator::start(cfg).await.unwrap();
    let c = connect_none(&sim, dir.path()).await;
    let limit = c
        .session
        .read(
            &[ReadValueId::from(NodeId::from(
                VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
            ))],
            TimestampsToReturn::Neither,
            0.0,
        )
        .await
        .unwrap();
    assert_eq!(limit[0].value, Some(Variant::UInt32(10)));
    let ten: Vec<ReadValueId> = (1000..1010u32)
        .map(|i| ReadValueId::from(NodeId::new(2, i)))
        .collect();
    let values = c
        .session
        .read(&ten, TimestampsToReturn::Both, 0.0)
        .await
        .unwrap();
    assert_eq!(values.len(), 10);
    // Counter k started at k; all count in step.
    assert_eq!(number(&values[3]) - number(&values[0]), 3.0, "{values:?}");
    let eleven: Vec<ReadValueId> = (1000..1011u32)
        .map(|i| ReadValueId::from(NodeId::new(2, i)))
        .collect();
    let err = c
        .session
        .read(&eleven, TimestampsToReturn::Both, 0.0)
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::BadTooManyOperations, "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_and_drop() {
    let dir = TempDir::new().unwrap();
    let sim = start(SETPOINTS, dir.path()).await;
    let c = connect_none(&sim, dir.path()).await;
    assert_eq!(sim.command("latency 400").await, "OK");
    let t = Instant::now();
    read1(&c, "s=Measured").await;
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(write1(&c, "s=Setpoint", 1.0f64).await, StatusCode::Good);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(sim.command("latency 0").await, "OK");
    let t = Instant::now();
    read1(&c, "s=Measured").await;
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    let old_session = c.session.server_session_id();
    let port = sim.local_addr().port();
    assert_eq!(sim.command("drop").await, "OK");
    assert_eq!(sim.local_addr().port(), port);
    // The client notices, reconnects and, the old session being gone, makes a
    // new one; values survive the restart.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .session
            .read(
                &[ReadValueId::from(id("s=Setpoint"))],
                TimestampsToReturn::Both,
                0.0,
            )
            .await;
        if let Ok(v) = r
            && c.session.server_session_id() != old_session
        {
            assert_eq!(v[0].value, Some(Variant::Double(1.0)));
            break;
        }
        assert!(Instant::now() < deadline, "no new session after drop");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A fresh client connects too.
    let fresh = connect_none(&sim, dir.path()).await;
    assert_eq!(
        read1(&fresh, "s=Setpoint").await.value,
        Some(Variant::Double(1.0))
    );
    sim.shutdown().await;
}

const SECURE: &str = "
security:
  endpoints: [Basic256Sha256/SignAndEncrypt]
  anonymous: false
  users: [{ username: operator, password: s3cret }]
  trustClientCerts: true
nodes:
  - { nodeId: s=Setpoint, dataType: Double, value: 20, writable: true }
";

#[tokio::test]
async fn basic256sha256_sign_and_encrypt_with_user_and_password() {
    let dir = TempDir::new().unwrap();
    let sim = start(SECURE, dir.path()).await;
    assert!(sim.certificate_path().is_file());
    assert!(sim.certificate_path().ends_with("own/cert.der"));
    let user = |pass: &str| IdentityToken::UserName("operator".into(), pass.into());
    let c = connect(
        &sim,
        dir.path(),
        SecurityPolicy::Basic256Sha256,
        MessageSecurityMode::SignAndEncrypt,
        user("s3cret"),
    )
    .await
    .unwrap();
    assert_eq!(
        read1(&c, "s=Setpoint").await.value,
        Some(Variant::Double(20.0))
    );
    assert_eq!(write1(&c, "s=Setpoint", 21.0f64).await, StatusCode::Good);
    assert_eq!(
        read1(&c, "s=Setpoint").await.value,
        Some(Variant::Double(21.0))
    );
    drop(c);

    let wrong = connect(
        &sim,
        dir.path(),
        SecurityPolicy::Basic256Sha256,
        MessageSecurityMode::SignAndEncrypt,
        user("guess"),
    )
    .await;
    let wrong = wrong.err().expect("a wrong password is refused");
    assert!(wrong.contains("BadIdentityTokenRejected"), "{wrong}");
    let anonymous = connect(
        &sim,
        dir.path(),
        SecurityPolicy::Basic256Sha256,
        MessageSecurityMode::SignAndEncrypt,
        IdentityToken::Anonymous,
    )
    .await;
    assert!(anonymous.is_err(), "anonymous is off");
    let none = connect(
        &sim,
        dir.path(),
        SecurityPolicy::None,
        MessageSecurityMode::None,
        user("s3cret"),
    )
    .await;
    let none = none.err().expect("there is no None endpoint");
    assert!(none.contains("Cannot find matching endpoint"), "{none}");
    sim.shutdown().await;
}

#[tokio::test]
async fn untrusted_client_certificates_are_rejected_until_trusted() {
    let dir = TempDir::new().unwrap();
    let sim = start(
        &SECURE.replace("trustClientCerts: true", "trustClientCerts: false"),
        dir.path(),
    )
    .await;
    let attempt = || {
        connect(
            &sim,
            dir.path(),
            SecurityPolicy::Basic256Sha256,
            MessageSecurityMode::SignAndEncrypt,
            IdentityToken::UserName("operator".into(), "s3cret".into()),
        )
    };
    let refused = attempt().await.err().expect("an unknown client is refused");
    assert!(refused.contains("BadSecurityChecksFailed"), "{refused}");
    let rejected = sim.pki_dir().join("rejected");
    let certs: Vec<PathBuf> = std::fs::read_dir(&rejected)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        certs.len(),
        1,
        "the client certificate is kept in {rejected:?}"
    );
    let trusted = sim
        .pki_dir()
        .join("trusted")
        .join(certs[0].file_name().unwrap());
    std::fs::rename(&certs[0], trusted).unwrap();
    let c = attempt().await.unwrap();
    assert_eq!(
        read1(&c, "s=Setpoint").await.value,
        Some(Variant::Double(20.0))
    );
    sim.shutdown().await;
}

async fn next_notification(
    rx: &mut tokio::sync::mpsc::Receiver<DataValue>,
    what: &str,
) -> DataValue {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("a notification within 5 s: {what}"))
        .unwrap()
}

#[tokio::test]
async fn subscriptions_see_pattern_changes_and_faults() {
    let dir = TempDir::new().unwrap();
    let sim = start(DYNAMIC, dir.path()).await;
    let c = connect_none(&sim, dir.path()).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<DataValue>(256);
    let sub = c
        .session
        .create_subscription(
            Duration::from_millis(100),
            100,
            10,
            0,
            0,
            true,
            opcua::client::DataChangeCallback::new(move |dv, _item| {
                let _ = tx.try_send(dv);
            }),
        )
        .await
        .unwrap();
    let created = c
        .session
        .create_monitored_items(sub, TimestampsToReturn::Both, vec![id("i=1").into()])
        .await
        .unwrap();
    assert_eq!(created[0].result.status_code, StatusCode::Good);
    let a = number(&next_notification(&mut rx, "first").await);
    let mut b = a;
    while b <= a {
        b = number(&next_notification(&mut rx, "a higher count").await);
    }
    assert!(b > a, "the counter moves in notifications: {a} then {b}");
    assert_eq!(sim.command("bad i=1 BadSensorFailure").await, "OK");
    // Compared by sub-code: with a queue of 1 the server may also set the
    // Overflow info bit (Part 4, 7.39.1).
    while next_notification(&mut rx, "BadSensorFailure")
        .await
        .status()
        .sub_code()
        != StatusCode::BadSensorFailure.sub_code()
    {}
    sim.shutdown().await;
}
