//! Data-plane benchmarks: `pushMethod.mqtt` from the real mapper-modbus
//! runtime (collecting from modbus-sim, registered with the fake EdgeCore) to
//! a mosquitto broker started here, at QoS 0 and 1, against the same mapper
//! without sinks and a bare rumqttc publisher (its own process) sending the
//! same number of same-size JSON payloads; then the spool: a broker outage
//! (everything goes to `spool.redb`) and the replay once the broker is back.
//!
//! Every figure comes from the mapper's `/metrics` (`mapper_reads_total`,
//! `mapper_sink_delivered_total`, `mapper_sink_dropped_total`,
//! `mapper_sink_failures_total`, `mapper_sink_queued`, `mapper_sink_spooled`)
//! and `/proc/<pid>` (CPU, RSS) of the mapper and the broker. Drops and
//! failures are printed, never hidden.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dmi_proto::v1beta1 as pb;
use serde_json::json;

use crate::fmt_n;
use crate::modbus::{self, Map, Mapper, Scenario, Sim};
use crate::procs::{Proc, cpu_seconds, free_port, http_get, metric_sum, rss_mib, wait_until};

/// Records per MQTT burst, as the data plane's default `batch_records`.
const BATCH: usize = 500;

/// A benchmark table row: measure, result, baseline, ratio, target.
pub(crate) type Row = [String; 5];

/// The scale of the group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    devices: usize,
    points: u16,
    cycle_ms: i64,
    /// Measuring window of each live run.
    window: Duration,
    /// Settling time after every device reads and the sink delivers.
    warmup: Duration,
    /// Broker outage of the spool run.
    outage: Duration,
    /// Longest wait for the spool to drain while collection goes on.
    drain_wait: Duration,
    /// Longest wait for the spool to drain with collection stopped.
    replay_wait: Duration,
}

impl Scale {
    /// Full: 10 devices × 100 registers every 10 ms (100 k points/s), 10 s
    /// windows. Quick (CI, debug builds): 4 × 50 every 10 ms, 1 s windows.
    pub(crate) fn new(quick: bool, secs: Option<u64>) -> Self {
        if quick {
            let w = Duration::from_secs(secs.unwrap_or(1));
            Scale {
                devices: 4,
                points: 50,
                cycle_ms: 10,
                window: w,
                warmup: Duration::from_millis(200),
                outage: w,
                drain_wait: Duration::from_secs(2),
                replay_wait: Duration::from_secs(3),
            }
        } else {
            let w = Duration::from_secs(secs.unwrap_or(10));
            Scale {
                devices: 10,
                points: 100,
                cycle_ms: 10,
                window: w,
                warmup: Duration::from_secs(1),
                outage: w,
                drain_wait: w * 3,
                replay_wait: Duration::from_secs(120),
            }
        }
    }

    fn scenario(&self) -> Scenario {
        Scenario {
            devices: self.devices,
            points: self.points,
            map: Map::Contiguous,
            planning: true,
            cycle_ms: self.cycle_ms,
            duration: self.window,
        }
    }

    fn label(&self) -> String {
        format!(
            "{} devices × {} registers every {} ms",
            self.devices, self.points, self.cycle_ms
        )
    }
}

/// mosquitto, from PATH or the Debian location (`/usr/sbin` is not on every
/// user's PATH).
pub(crate) fn mosquitto() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// A mosquitto broker on a loopback port, in its own directory; stopped when
/// dropped.
struct Broker {
    proc: Proc,
    port: u16,
}

impl Broker {
    /// `nodelay`: `set_tcp_nodelay true` (mosquitto's default is false:
    /// Nagle's algorithm on the broker's sockets, which holds back PUBACKs).
    async fn start(bin: &Path, dir: &Path, port: u16, nodelay: bool) -> anyhow::Result<Broker> {
        let d = dir.join(format!("mosquitto-{port}"));
        std::fs::create_dir_all(&d)?;
        let conf = d.join("mosquitto.conf");
        // No subscriber: the broker parses, acknowledges (QoS 1) and routes
        // every publish to nobody. Limits raised so that they never throttle.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 1000000\nmax_inflight_messages 0\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n{}",
                if nodelay {
                    "set_tcp_nodelay true\n"
                } else {
                    ""
                }
            ),
        )?;
        let proc = Proc::start(
            bin,
            &["-c".to_owned(), conf.display().to_string()],
            &d.join("mosquitto.log"),
            &[],
        )?;
        wait_until("mosquitto listening", 10, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .await?;
        Ok(Broker { proc, port })
    }

    fn cpu(&self) -> f64 {
        cpu_seconds(self.proc.pid())
    }
}

/// The benchmark devices; with `push = Some((broker port, qos))` every
/// property publishes every sample (`reportCycle` = `collectCycle`) to
/// `bench/<device>/<property>`.
fn devices(ports: &[u16], s: &Scenario, push: Option<(u16, u8)>) -> Vec<pb::Device> {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut d = modbus::device(i, *p, s, None);
            if let (Some((port, qos)), Some(spec)) = (push, d.spec.as_mut()) {
                for prop in &mut spec.properties {
                    prop.report_cycle = s.cycle_ms;
                    prop.push_method = Some(pb::PushMethod {
                        mqtt: Some(pb::PushMethodMqtt {
                            address: format!("tcp://127.0.0.1:{port}"),
                            topic: format!("bench/bench-{i}/{}", prop.name),
                            qos: i32::from(qos),
                            retained: false,
                        }),
                        ..Default::default()
                    });
                }
            }
            d
        })
        .collect()
}

/// The mapper's arguments: its spool in the run's directory, and `data`
/// settings when given.
fn mapper_args(dir: &Path, data_yaml: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut a = vec![
        "--state-dir".to_owned(),
        dir.join("state").display().to_string(),
    ];
    if let Some(y) = data_yaml {
        let f = dir.join("mapper.yaml");
        std::fs::write(&f, y)?;
        a.push("--config-file".to_owned());
        a.push(f.display().to_string());
    }
    Ok(a)
}

/// One reading of the mapper's counters.
#[derive(Debug, Clone, Copy)]
struct Snap {
    t: Instant,
    reads: f64,
    delivered: f64,
    dropped: f64,
    failures: f64,
    queued: f64,
    spooled: f64,
    cpu: f64,
}

fn snap(m: &Mapper) -> Snap {
    let text = http_get(m.metrics, "/metrics").unwrap_or_default();
    let f = |n: &str| metric_sum(&text, n);
    Snap {
        t: Instant::now(),
        reads: f("mapper_reads_total"),
        delivered: f("mapper_sink_delivered_total"),
        dropped: f("mapper_sink_dropped_total"),
        failures: f("mapper_sink_failures_total"),
        queued: f("mapper_sink_queued"),
        spooled: f("mapper_sink_spooled"),
        cpu: cpu_seconds(m.pid()),
    }
}

fn per_m(cpu: f64, n: f64) -> f64 {
    if n > 0.0 { cpu / (n / 1e6) } else { f64::NAN }
}

/// How the mapper publishes and how the broker is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Variant {
    qos: u8,
    /// Broker with `set_tcp_nodelay true`.
    nodelay: bool,
}

impl Variant {
    fn label(&self) -> String {
        if self.nodelay {
            format!("QoS {}, broker set_tcp_nodelay true", self.qos)
        } else {
            format!("QoS {}", self.qos)
        }
    }
}

/// What one live run measured.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Live {
    collected_per_s: f64,
    delivered_per_s: f64,
    delivered: f64,
    cpu_per_mpoints: f64,
    cpu_cores: f64,
    rss_mib: f64,
    /// Dropped in the window / since the mapper started.
    dropped: f64,
    dropped_total: f64,
    failures_total: f64,
    /// Records waiting (memory + spool) at the start and end of the window.
    backlog_start: f64,
    backlog_end: f64,
    max_queued: f64,
    max_spooled: f64,
    broker_cpu_per_m: f64,
}

/// The mapper collecting at the group's scale, with `pushMethod.mqtt` as
/// `variant` to a fresh broker, or without sinks (`None`).
async fn live(sc: &Scale, variant: Option<Variant>, bin: &Path) -> anyhow::Result<Live> {
    let dir = tempfile::tempdir()?;
    let s = sc.scenario();
    let sim = Sim::start(dir.path(), s.devices, s.points + 8)?;
    let broker = match variant {
        Some(v) => Some(Broker::start(bin, dir.path(), free_port(), v.nodelay).await?),
        None => None,
    };
    let push = broker.as_ref().zip(variant).map(|(b, v)| (b.port, v.qos));
    let mapper = Mapper::start_with(
        dir.path(),
        devices(&sim.ports, &s, push),
        s.points,
        &mapper_args(dir.path(), None)?,
    )
    .await?;
    let expected = s.devices as f64 * f64::from(s.points);
    wait_until("all devices reading", 30, || {
        (snap(&mapper).reads >= expected).then_some(())
    })
    .await?;
    if variant.is_some() {
        wait_until("first sink delivery", 30, || {
            (snap(&mapper).delivered > 0.0).then_some(())
        })
        .await?;
    }
    tokio::time::sleep(sc.warmup).await;
    let bc0 = broker.as_ref().map_or(0.0, Broker::cpu);
    let a = snap(&mapper);
    let (mut max_queued, mut max_spooled) = (a.queued, a.spooled);
    let end = a.t + sc.window;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        tokio::time::sleep((end - now).min(Duration::from_millis(250))).await;
        let x = snap(&mapper);
        max_queued = max_queued.max(x.queued);
        max_spooled = max_spooled.max(x.spooled);
    }
    let b = snap(&mapper);
    let bc1 = broker.as_ref().map_or(0.0, Broker::cpu);
    let secs = b.t.duration_since(a.t).as_secs_f64();
    let points = b.reads - a.reads;
    let delivered = b.delivered - a.delivered;
    let out = Live {
        collected_per_s: points / secs,
        delivered_per_s: delivered / secs,
        delivered,
        cpu_per_mpoints: per_m(b.cpu - a.cpu, points),
        cpu_cores: (b.cpu - a.cpu) / secs,
        rss_mib: rss_mib(mapper.pid()),
        dropped: b.dropped - a.dropped,
        dropped_total: b.dropped,
        failures_total: b.failures,
        backlog_start: a.queued + a.spooled,
        backlog_end: b.queued + b.spooled,
        max_queued,
        max_spooled,
        broker_cpu_per_m: per_m(bc1 - bc0, delivered),
    };
    drop(mapper);
    drop(sim);
    Ok(out)
}

/// What the bare publisher measured.
#[derive(Debug, Clone, Copy, Default)]
struct Bare {
    per_s: f64,
    cpu_per_m: f64,
    rss_mib: f64,
    payload_bytes: f64,
    broker_cpu_per_m: f64,
}

/// `bench-suite mqtt-publisher` against a fresh broker set up as `v`:
/// `count` publishes at `v.qos`, in the sink's bursts or `stream`ed.
async fn bare(
    sc: &Scale,
    v: Variant,
    count: u64,
    stream: bool,
    bin: &Path,
) -> anyhow::Result<Bare> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(bin, dir.path(), free_port(), v.nodelay).await?;
    let c0 = broker.cpu();
    let qos = v.qos;
    let mut args = vec![
        "mqtt-publisher".to_owned(),
        "--port".to_owned(),
        broker.port.to_string(),
        "--qos".to_owned(),
        qos.to_string(),
        "--count".to_owned(),
        count.to_string(),
        "--devices".to_owned(),
        sc.devices.to_string(),
        "--points".to_owned(),
        sc.points.to_string(),
    ];
    if stream {
        args.push("--stream".to_owned());
    }
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .args(args)
        .output()
        .await?;
    let c1 = broker.cpu();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| {
        anyhow::anyhow!(
            "mqtt publisher said {text:?} ({}): {e}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(Bare {
        per_s: f("per_s"),
        cpu_per_m: f("cpu_per_m"),
        rss_mib: f("rss_mib"),
        payload_bytes: f("payload_bytes"),
        broker_cpu_per_m: per_m(c1 - c0, count as f64),
    })
}

/// Arguments of `bench-suite mqtt-publisher`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PublisherArgs {
    /// Broker port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    #[arg(long)]
    qos: u8,
    /// Publishes to send.
    #[arg(long)]
    count: u64,
    /// Topics and payloads: as the benchmark devices' properties.
    #[arg(long)]
    devices: usize,
    #[arg(long)]
    points: u16,
    /// Unacknowledged QoS 1/2 publishes in flight (rumqttc's default, which
    /// the data plane keeps, is 100).
    #[arg(long, default_value_t = 100)]
    inflight: u16,
    /// Publish from a separate task without waiting between bursts
    /// (rumqttc's usual pattern) instead of the sink's burst-then-wait.
    #[arg(long)]
    stream: bool,
}

/// The body of `bench-suite mqtt-publisher`: one rumqttc connection
/// publishing `count` pre-encoded JSON documents (the data plane's own
/// encoding of a record of every benchmark property, so the same sizes) on
/// the same topics, in bursts of [`BATCH`] waited for as the sink waits for
/// them (written for QoS 0, acknowledged for QoS 1). Prints one JSON line.
pub(crate) async fn publisher_main(args: PublisherArgs) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
    let PublisherArgs {
        port,
        qos,
        count,
        devices,
        points,
        inflight,
        stream,
    } = args;
    let mut o = MqttOptions::new(
        format!("bench-bare-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(inflight.max(1));
    let (client, mut el) = AsyncClient::new(o, BATCH + 16);
    loop {
        if let Event::Incoming(Incoming::ConnAck(_)) = el.poll().await? {
            break;
        }
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut topics = Vec::new();
    let mut payloads = Vec::new();
    for d in 0..devices {
        for j in 0..points {
            let rec = mapper_sdk::sink::Record {
                device: format!("bench-{d}"),
                namespace: "default".into(),
                property: format!("r{j}"),
                // The simulator's registers count and swing up to 60 000.
                value: (u64::from(j) * 601 % 60_000).to_string(),
                ty: "int".into(),
                timestamp: now_ms,
            };
            topics.push(format!("bench/bench-{d}/r{j}"));
            payloads.push(rec.document().to_string().into_bytes());
        }
    }
    let n = topics.len().max(1);
    let (topics, payloads) = (std::sync::Arc::new(topics), std::sync::Arc::new(payloads));
    let q = match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let me = std::process::id();
    let cpu0 = cpu_seconds(me);
    let t0 = Instant::now();
    let (mut sent, mut bytes) = (0u64, 0u64);
    if stream {
        let (c, topics, payloads) = (client.clone(), topics.clone(), payloads.clone());
        let task = tokio::spawn(async move {
            let mut bytes = 0u64;
            for k in 0..count {
                let i = (k % n as u64) as usize;
                bytes += payloads[i].len() as u64;
                c.publish(topics[i].clone(), q, false, payloads[i].clone())
                    .await?;
            }
            Ok::<_, rumqttc::ClientError>(bytes)
        });
        let (mut writes, mut acks) = (0u64, 0u64);
        while writes < count || (qos > 0 && acks < count) {
            match el.poll().await? {
                Event::Outgoing(Outgoing::Publish(_)) => writes += 1,
                Event::Incoming(Incoming::PubAck(_)) | Event::Incoming(Incoming::PubComp(_)) => {
                    acks += 1
                }
                _ => {}
            }
        }
        bytes = task.await??;
        sent = count;
    }
    while sent < count {
        let end = (sent + BATCH as u64).min(count);
        let (mut writes, mut acks) = (0usize, 0usize);
        for k in sent..end {
            let i = (k % n as u64) as usize;
            bytes += payloads[i].len() as u64;
            client.try_publish(topics[i].clone(), q, false, payloads[i].clone())?;
            writes += 1;
            if qos > 0 {
                acks += 1;
            }
        }
        while writes > 0 || acks > 0 {
            match el.poll().await? {
                Event::Outgoing(Outgoing::Publish(_)) => writes = writes.saturating_sub(1),
                Event::Incoming(Incoming::PubAck(_)) | Event::Incoming(Incoming::PubComp(_)) => {
                    acks = acks.saturating_sub(1)
                }
                _ => {}
            }
        }
        sent = end;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(me) - cpu0;
    let out = json!({
        "per_s": sent as f64 / secs,
        "cpu_per_m": per_m(cpu, sent as f64),
        "rss_mib": rss_mib(me),
        "payload_bytes": bytes as f64 / sent.max(1) as f64,
    });
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, format!("{out}\n").as_bytes())?;
    Ok(())
}

/// What the outage-and-replay run measured.
#[derive(Debug, Clone, Default)]
struct SpoolRun {
    // Outage (broker port closed, collection on).
    collected_per_s: f64,
    spooled_per_s: f64,
    outage_cpu_per_m: f64,
    outage_dropped: f64,
    outage_failures: f64,
    queued_end: f64,
    spooled_at_up: f64,
    file_bytes_per_record: f64,
    // Broker back, collection on.
    first_delivery_s: f64,
    load_delivered_per_s: f64,
    load_net_drain_per_s: f64,
    load_secs: f64,
    load_drained: bool,
    load_cpu_cores: f64,
    spooled_after_load: f64,
    // Collection stopped, the rest of the spool.
    replay: Option<Replay>,
    /// Dropped before the outage window, during it, while draining under
    /// load, during the replay.
    dropped: [f64; 4],
    /// Mapper RSS at the end of the outage and at the end, MiB.
    rss_outage: f64,
    rss_end: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Replay {
    records: f64,
    per_s: f64,
    drained: bool,
    left: f64,
    cpu_per_m: f64,
}

/// Broker down for `outage` (all records spooled), then up: how fast the
/// spool fills and drains (first while collection goes on, then, if records
/// are left, with collection stopped). QoS 0, so that the replay is
/// measured rather than the broker's acknowledgements.
async fn spool(sc: &Scale, bin: &Path) -> anyhow::Result<SpoolRun> {
    let dir = tempfile::tempdir()?;
    let s = sc.scenario();
    let sim = Sim::start(dir.path(), s.devices, s.points + 8)?;
    let port = free_port();
    // The spool bound is raised so that nothing is dropped (64 MiB default
    // hold about 3 s at 100 k records/s) and the retry delay capped at 1 s
    // so the reconnection does not wait out a 10 s backoff.
    let data = "data:\n  spool_max_bytes: 17179869184\n  retry_max: 1s\n";
    let mapper = Mapper::start_with(
        dir.path(),
        devices(&sim.ports, &s, Some((port, 0))),
        s.points,
        &mapper_args(dir.path(), Some(data))?,
    )
    .await?;
    let expected = s.devices as f64 * f64::from(s.points);
    wait_until("all devices reading and spooling", 30, || {
        let x = snap(&mapper);
        (x.reads >= expected && x.failures > 0.0 && x.spooled > 0.0).then_some(())
    })
    .await?;
    let mut r = SpoolRun::default();
    let a = snap(&mapper);
    tokio::time::sleep(sc.outage).await;
    let b = snap(&mapper);
    let secs = b.t.duration_since(a.t).as_secs_f64();
    r.collected_per_s = (b.reads - a.reads) / secs;
    r.spooled_per_s = (b.spooled - a.spooled) / secs;
    r.outage_cpu_per_m = per_m(b.cpu - a.cpu, b.spooled - a.spooled);
    r.outage_dropped = b.dropped - a.dropped;
    r.dropped[0] = a.dropped;
    r.dropped[1] = b.dropped - a.dropped;
    r.rss_outage = rss_mib(mapper.pid());
    r.outage_failures = b.failures;
    r.queued_end = b.queued;
    r.spooled_at_up = b.spooled;
    let file =
        std::fs::metadata(dir.path().join("state").join("spool.redb")).map_or(0, |m| m.len());
    r.file_bytes_per_record = file as f64 / b.spooled.max(1.0);

    // The broker comes back; collection goes on.
    let up = Instant::now();
    let broker = Broker::start(bin, dir.path(), port, false).await?;
    let first = wait_until("first delivery after the outage", 30, || {
        let x = snap(&mapper);
        (x.delivered > b.delivered).then_some(x)
    })
    .await?;
    r.first_delivery_s = first.t.duration_since(up).as_secs_f64();
    let deadline = first.t + sc.drain_wait;
    let mut last = first;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = snap(&mapper);
        if last.spooled == 0.0 {
            r.load_drained = true;
            break;
        }
    }
    let secs = last.t.duration_since(first.t).as_secs_f64();
    r.load_secs = secs;
    r.load_delivered_per_s = (last.delivered - first.delivered) / secs;
    r.load_net_drain_per_s = (first.spooled - last.spooled) / secs;
    r.load_cpu_cores = (last.cpu - first.cpu) / secs;
    r.spooled_after_load = last.spooled;
    r.dropped[2] = last.dropped - b.dropped;

    // Collection stopped: what is left drains at the replay's own speed.
    if !r.load_drained {
        drop(sim);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let p0 = snap(&mapper);
        let deadline = p0.t + sc.replay_wait;
        let mut p1 = p0;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            p1 = snap(&mapper);
            if p1.spooled == 0.0 && p1.queued == 0.0 {
                break;
            }
        }
        let secs = p1.t.duration_since(p0.t).as_secs_f64();
        let n = p1.delivered - p0.delivered;
        r.replay = Some(Replay {
            records: n,
            per_s: n / secs,
            drained: p1.spooled == 0.0,
            left: p1.spooled,
            cpu_per_m: per_m(p1.cpu - p0.cpu, n),
        });
        r.dropped[3] = p1.dropped - last.dropped;
    }
    r.rss_end = rss_mib(mapper.pid());
    drop(broker);
    Ok(r)
}

fn row(a: &str, b: String, c: String, d: String, e: &str) -> Row {
    [a.to_owned(), b, c, d, e.to_owned()]
}

fn pct(a: f64, b: f64) -> String {
    format!("{:.0} %", 100.0 * a / b)
}

/// The sink's health over a window, as a table cell.
fn health(l: &Live) -> String {
    format!(
        "{} dropped, {} failures, max queued {}, max spooled {}, backlog {} → {}",
        l.dropped, l.failures_total, l.max_queued, l.max_spooled, l.backlog_start, l.backlog_end
    )
}

/// Runs the group and returns its rows (a single explanatory row when
/// mosquitto is not installed).
pub(crate) async fn rows(quick: bool, secs: Option<u64>) -> anyhow::Result<Vec<Row>> {
    let Some(bin) = mosquitto() else {
        eprintln!(
            "sinks: SKIPPED — mosquitto is not installed (looked on PATH, /usr/sbin, /usr/local/sbin); apt-get install mosquitto"
        );
        return Ok(vec![row(
            "Data plane (sinks group)",
            "skipped: mosquitto not installed".into(),
            String::new(),
            String::new(),
            "",
        )]);
    };
    let sc = Scale::new(quick, secs);
    let scale = sc.label();
    let mut out = Vec::new();

    eprintln!("sinks: no sinks ({scale})...");
    let none = live(&sc, None, &bin).await?;
    let mut variants = vec![
        Variant {
            qos: 0,
            nodelay: false,
        },
        Variant {
            qos: 1,
            nodelay: false,
        },
    ];
    if !quick {
        variants.push(Variant {
            qos: 1,
            nodelay: true,
        });
    }
    let mut runs = Vec::new();
    for v in variants {
        let label = v.label();
        eprintln!("sinks: pushMethod.mqtt {label}...");
        let l = live(&sc, Some(v), &bin).await?;
        // As many publishes as the mapper delivered in its window (at least
        // one burst), as fast as the bare client goes.
        let count = (l.delivered.round() as u64).max(BATCH as u64);
        eprintln!(
            "sinks: bare rumqttc publisher {label}, {count} publishes, bursts and streamed..."
        );
        let b = bare(&sc, v, count, false, &bin).await?;
        let bs = bare(&sc, v, count, true, &bin).await?;
        if l.dropped_total > 0.0 || l.backlog_end > l.backlog_start + 10_000.0 {
            eprintln!(
                "sinks: WARNING {label}: {} records dropped, backlog {} → {} (the sink does not keep up)",
                l.dropped_total, l.backlog_start, l.backlog_end
            );
        }
        runs.push((v, l, b, bs));
    }
    for (v, l, b, bs) in &runs {
        let label = v.label();
        out.push(row(
            &format!("MQTT records delivered/s, {label}, {scale}"),
            format!(
                "{} (collected {})",
                fmt_n(l.delivered_per_s),
                fmt_n(l.collected_per_s)
            ),
            format!(
                "bare rumqttc, same count of {:.0} B JSON payloads: {} in the sink's bursts of {BATCH}, {} streamed",
                b.payload_bytes,
                fmt_n(b.per_s),
                fmt_n(bs.per_s)
            ),
            format!(
                "{} of collected; bare bursts {} of collected",
                pct(l.delivered_per_s, l.collected_per_s),
                pct(b.per_s, l.collected_per_s)
            ),
            "= collected, 0 dropped",
        ));
        out.push(row(
            &format!("Mapper CPU-s per million points, {label}"),
            format!("{:.3} ({:.2} cores)", l.cpu_per_mpoints, l.cpu_cores),
            format!(
                "no sinks: {:.3} ({:.2} cores); bare publisher per million publishes: {:.3} bursts, {:.3} streamed",
                none.cpu_per_mpoints, none.cpu_cores, b.cpu_per_m, bs.cpu_per_m
            ),
            format!(
                "{:.1}× no sinks; the sink adds {:.3}, {:.1}× the bare bursts",
                l.cpu_per_mpoints / none.cpu_per_mpoints,
                l.cpu_per_mpoints - none.cpu_per_mpoints,
                (l.cpu_per_mpoints - none.cpu_per_mpoints) / b.cpu_per_m
            ),
            "",
        ));
        out.push(row(
            &format!(
                "Sink drops and failures, {label}, {:.0} s window",
                sc.window.as_secs_f64()
            ),
            health(l),
            String::new(),
            String::new(),
            "0 dropped",
        ));
        out.push(row(
            &format!("mosquitto CPU-s per million messages, {label}"),
            format!("{:.3} (from the mapper)", l.broker_cpu_per_m),
            format!(
                "from the bare publisher: {:.3} bursts, {:.3} streamed",
                b.broker_cpu_per_m, bs.broker_cpu_per_m
            ),
            String::new(),
            "",
        ));
        out.push(row(
            &format!("RSS with pushMethod.mqtt {label}"),
            format!("mapper {:.1} MiB", l.rss_mib),
            format!(
                "no sinks: {:.1} MiB; bare publisher: {:.1} MiB",
                none.rss_mib, b.rss_mib
            ),
            String::new(),
            "",
        ));
    }

    eprintln!(
        "sinks: spool, broker down {:.0} s, then back...",
        sc.outage.as_secs_f64()
    );
    // A failed scenario is a row that says so; the rest of the suite runs.
    let sp = match spool(&sc, &bin).await {
        Ok(sp) => sp,
        Err(e) => {
            eprintln!("sinks: spool scenario failed: {e:#}");
            out.push(row(
                "Spool: broker outage, then recovery (QoS 0)",
                format!("failed: {e}"),
                String::new(),
                String::new(),
                "",
            ));
            return Ok(out);
        }
    };
    // Baselines: the live QoS 0 run (no outage) and the bare publisher's
    // bursts at QoS 0 (what the transport takes).
    let (live0, bare0) = runs
        .iter()
        .find(|(v, ..)| v.qos == 0 && !v.nodelay)
        .map_or((f64::NAN, f64::NAN), |(_, l, b, _)| {
            (l.delivered_per_s, b.per_s)
        });
    let base = format!(
        "live QoS 0 delivery: {}; bare publisher bursts: {}",
        fmt_n(live0),
        fmt_n(bare0)
    );
    out.push(row(
        &format!(
            "Spool write: records/s spooled during a {:.0} s broker outage (QoS 0)",
            sc.outage.as_secs_f64()
        ),
        format!(
            "{} (collected {}); {} dropped, {} failed attempts, {} still in memory",
            fmt_n(sp.spooled_per_s),
            fmt_n(sp.collected_per_s),
            sp.outage_dropped,
            sp.outage_failures,
            sp.queued_end
        ),
        base.clone(),
        format!("{} of collected", pct(sp.spooled_per_s, sp.collected_per_s)),
        "= collected",
    ));
    out.push(row(
        "Spool cost while spooling",
        format!(
            "{:.3} mapper CPU-s per million records; {:.0} B per record on disk ({} records); mapper RSS {:.1} MiB",
            sp.outage_cpu_per_m,
            sp.file_bytes_per_record,
            fmt_n(sp.spooled_at_up),
            sp.rss_outage
        ),
        String::new(),
        String::new(),
        "",
    ));
    out.push(row(
        "Spool replay with collection going on (broker back, QoS 0)",
        format!(
            "{} delivered/s, mapper {:.2} cores; spool {} by {}/s; {}",
            fmt_n(sp.load_delivered_per_s),
            sp.load_cpu_cores,
            if sp.load_net_drain_per_s >= 0.0 {
                "shrinks"
            } else {
                "GROWS"
            },
            fmt_n(sp.load_net_drain_per_s.abs()),
            if sp.load_drained {
                format!("drained in {:.1} s", sp.load_secs)
            } else {
                format!(
                    "NOT drained after {:.0} s ({} left)",
                    sp.load_secs,
                    fmt_n(sp.spooled_after_load)
                )
            }
        ),
        format!("{base}; collecting {}", fmt_n(sp.collected_per_s)),
        format!("{} of live", pct(sp.load_delivered_per_s, live0)),
        "drains",
    ));
    out.push(row(
        "First delivery after the broker is back",
        format!("{:.2} s (retry_max 1 s)", sp.first_delivery_s),
        String::new(),
        String::new(),
        "",
    ));
    if let Some(rp) = sp.replay {
        out.push(row(
            "Spool replay records/s, collection stopped (QoS 0)",
            format!(
                "{} ({} records{}); {:.3} mapper CPU-s per million",
                fmt_n(rp.per_s),
                fmt_n(rp.records),
                if rp.drained {
                    ", drained".to_owned()
                } else {
                    format!(", NOT drained: {} left", fmt_n(rp.left))
                },
                rp.cpu_per_m
            ),
            base.clone(),
            format!(
                "{} of live, {} of bare",
                pct(rp.per_s, live0),
                pct(rp.per_s, bare0)
            ),
            "",
        ));
    }
    let dropped: f64 = sp.dropped.iter().sum();
    if dropped > 0.0 {
        eprintln!("sinks: WARNING the spool run dropped {dropped} records");
    }
    out.push(row(
        "Records dropped in the spool run",
        format!(
            "{dropped} (before the outage window {}, during it {}, draining under load {}, replay {}); mapper RSS at the end {:.1} MiB",
            sp.dropped[0], sp.dropped[1], sp.dropped[2], sp.dropped[3], sp.rss_end
        ),
        String::new(),
        String::new(),
        "0",
    ));
    Ok(out)
}
