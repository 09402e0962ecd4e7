//! `mapper-opcua`: the OPC-UA mapper binary, and `mapper-opcua browse`, which
//! lists a server's variables or writes a DeviceModel and Device for them.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mapper_opcua::browse::{self, Options, YamlOptions};
use mapper_opcua::{OpcuaConfig, OpcuaDriver};
use mapper_sdk::MapperConfig;

fn main() -> ExitCode {
    // `browse` is this mapper's own subcommand; everything else is the SDK's.
    if std::env::args_os().nth(1).is_some_and(|a| a == "browse") {
        let args = Browse::parse_from(std::env::args_os().skip(1));
        return browse_command(args);
    }
    mapper_sdk::main_with("opcua", |cfg| OpcuaDriver::new(cfg.state_dir().join("pki")))
}

/// Output format of `browse`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    /// NodeId, browse path, DataType, access level.
    Table,
    /// A KubeEdge DeviceModel and Device (devices.kubeedge.io/v1beta1).
    Yaml,
}

/// Walks an OPC-UA server's address space and prints its variables (NodeId,
/// browse path, DataType, access level), or a ready-to-apply KubeEdge
/// DeviceModel and Device for them with `-o yaml`.
#[derive(Debug, Parser)]
#[command(name = "mapper-opcua browse", bin_name = "mapper-opcua browse")]
struct Browse {
    /// Endpoint URL, `opc.tcp://host:port/path`.
    #[arg(long)]
    url: String,
    /// Node to start at (default: the Objects folder), e.g. `ns=2;s=Plant`.
    #[arg(long)]
    node: Option<String>,
    /// Levels below the start node.
    #[arg(long, default_value_t = 5)]
    depth: usize,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
    /// Security policy (None, Basic256Sha256, ...).
    #[arg(long)]
    security_policy: Option<String>,
    /// Security mode (None, Sign, SignAndEncrypt).
    #[arg(long)]
    security_mode: Option<String>,
    /// User name.
    #[arg(long)]
    user_name: Option<String>,
    /// File holding the password.
    #[arg(long)]
    password: Option<PathBuf>,
    /// The mapper's certificate (default: the one in the PKI directory).
    #[arg(long)]
    certificate: Option<PathBuf>,
    /// The mapper's private key.
    #[arg(long)]
    private_key: Option<PathBuf>,
    /// The server certificate to trust.
    #[arg(long)]
    remote_certificate: Option<PathBuf>,
    /// X.509 user identity certificate.
    #[arg(long)]
    user_certificate: Option<PathBuf>,
    /// X.509 user identity private key.
    #[arg(long)]
    user_private_key: Option<PathBuf>,
    /// Request timeout, ms.
    #[arg(long, default_value_t = 5000)]
    timeout: u64,
    /// State directory (the PKI directory is `<state dir>/pki`, as for the
    /// mapper); default as the mapper's.
    #[arg(long, env = "MAPPER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// `-o yaml`: the Device's name (the model is `<name>-model`).
    #[arg(long, default_value = "opcua-device")]
    name: String,
    /// `-o yaml`: the namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// `-o yaml`: every property's collect cycle, ms.
    #[arg(long, default_value_t = 1000)]
    collect_cycle: u64,
    /// `-o yaml`: the Device's `nodeName`.
    #[arg(long)]
    node_name: Option<String>,
    /// Log filter.
    #[arg(long, env = "MAPPER_LOG", default_value = "warn")]
    log: String,
}

fn path_text(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.to_string_lossy().into_owned())
}

impl Browse {
    fn config(&self) -> OpcuaConfig {
        OpcuaConfig {
            url: self.url.clone(),
            security_policy: self.security_policy.clone(),
            security_mode: self.security_mode.clone(),
            user_name: self.user_name.clone(),
            password: path_text(&self.password),
            certificate: path_text(&self.certificate),
            private_key: path_text(&self.private_key),
            remote_certificate: path_text(&self.remote_certificate),
            user_certificate: path_text(&self.user_certificate),
            user_private_key: path_text(&self.user_private_key),
            timeout: Some(self.timeout),
            ..OpcuaConfig::default()
        }
    }

    fn pki_dir(&self) -> PathBuf {
        let mut mapper = MapperConfig::for_protocol("opcua");
        mapper.data.state_dir = self.state_dir.clone();
        mapper.state_dir().join("pki")
    }
}

fn browse_command(args: Browse) -> ExitCode {
    mapper_sdk::init_tracing(&args.log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&args)) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "mapper-opcua browse: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Browse) -> Result<String, String> {
    let cfg = args.config();
    let endpoint = cfg.endpoint().map_err(|e| e.to_string())?;
    let driver = OpcuaDriver::new(args.pki_dir());
    // Opening takes a few requests; give it a few timeouts.
    let deadline = Duration::from_millis(args.timeout.saturating_mul(4));
    let (_slot, conn) = tokio::time::timeout(deadline, driver.pool().open(&endpoint))
        .await
        .map_err(|_| format!("no session with {} within {deadline:?}", args.url))?
        .map_err(|e| e.to_string())?;
    let mut opts = Options {
        depth: args.depth,
        ..Options::default()
    };
    if let Some(n) = &args.node {
        opts.start = browse::start_node(&conn, n).map_err(|e| e.to_string())?;
    }
    let vars = browse::browse(&conn, &opts)
        .await
        .map_err(|e| e.to_string())?;
    Ok(match args.output {
        Output::Table => browse::table(&vars),
        Output::Yaml => browse::yaml(
            &vars,
            &cfg,
            &YamlOptions {
                name: args.name.clone(),
                namespace: args.namespace.clone(),
                collect_cycle_ms: args.collect_cycle,
                node_name: args.node_name.clone(),
            },
        ),
    })
}
