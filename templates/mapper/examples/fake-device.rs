//! The tests' fake `{{protocol}}` device as a program, to try the mapper by
//! hand (README.md, "Run it against edgecore-dmi"):
//!
//! ```sh
//! cargo run --example fake-device              # listens on 127.0.0.1:5020
//! cargo run --example fake-device -- 0.0.0.0:6000
//! ```
//!
//! The temperature moves between 60 and 70 (a new value every second), so
//! the twin changes; writes are logged.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5020".to_owned());
    let device = common::FakeDevice::bind(
        addr.as_str(),
        &[
            ("temperature", "65"),
            ("setpoint", "20"),
{%- if push %}
            ("pressure", "1.8"),
{%- endif %}
        ],
    )
    .await?;
    eprintln!("fake {{protocol}} device on {}; Ctrl-C stops it", device.addr());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seen_writes = 0;
    for step in 0u32.. {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        let phase = f64::from(step % 20) / 20.0 * std::f64::consts::TAU;
        device.set("temperature", &format!("{:.1}", 65.0 + 5.0 * phase.sin()));
{%- if push %}
        if step % 5 == 0 {
            device.set("pressure", &format!("{:.2}", 1.8 + 0.1 * phase.cos()));
        }
{%- endif %}
        let writes = device.writes();
        for (register, value) in &writes[seen_writes..] {
            eprintln!("written: {register} = {value}");
        }
        seen_writes = writes.len();
    }
    Ok(())
}
