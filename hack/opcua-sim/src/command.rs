//! The stdin control commands, one per line, each answered with one line:
//! `OK` (plus the reading for `get`) or `ERR <reason>`.
//!
//! | command | effect |
//! |---|---|
//! | `get <node>` | `OK <status> <value>`, e.g. `OK Good 21.5`, `OK BadSensorFailure null` |
//! | `set <node> <value>` | sets the value (read-only nodes too); the node's pattern stops |
//! | `bad <node> <StatusCodeName>` | reads answer that status (e.g. `BadSensorFailure`) |
//! | `good <node>` | clears `bad` |
//! | `latency <ms>` | delays every later Read and Write response by `ms` (0: off) |
//! | `drop` | closes every connection and session (the server restarts on the same port) |
//! | `help` | the list of commands |

use std::time::Duration;

use crate::{Simulator, value};

const HELP: &str = "get <node> | set <node> <value> | bad <node> <StatusCodeName> | good <node> | latency <ms> | drop | help";

impl Simulator {
    /// Runs one control command and returns its answer line (`OK ...` or
    /// `ERR ...`, no newline): `get <node>` (`OK Good 21.5`,
    /// `OK BadSensorFailure null`), `set <node> <value>`,
    /// `bad <node> <StatusCodeName>`, `good <node>`, `latency <ms>`, `drop`,
    /// `help`. hack/opcua-sim/README.md describes each.
    ///
    /// Cancel safety: as [`Simulator::drop_connections`] for `drop`; the
    /// other commands complete without waiting.
    pub async fn command(&self, line: &str) -> String {
        match self.run_command(line).await {
            Ok(answer) if answer.is_empty() => "OK".to_owned(),
            Ok(answer) => format!("OK {answer}"),
            Err(e) => format!("ERR {e}"),
        }
    }

    async fn run_command(&self, line: &str) -> Result<String, String> {
        let line = line.trim();
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let (node, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let arg = arg.trim();
        let need_node = || {
            if node.is_empty() {
                Err(format!("`{cmd}` needs a node id"))
            } else {
                Ok(node)
            }
        };
        match cmd {
            "get" => {
                let dv = self.get(need_node()?).map_err(|e| e.to_string())?;
                let status = dv.status.unwrap_or_default();
                let shown = dv
                    .value
                    .as_ref()
                    .map_or_else(|| "null".to_owned(), value::to_text);
                Ok(format!("{} {shown}", status.sub_code()))
            }
            "set" => {
                let node = need_node()?;
                if arg.is_empty() {
                    return Err("`set` needs a value".to_owned());
                }
                self.set(node, arg).map_err(|e| e.to_string())?;
                Ok(String::new())
            }
            "bad" => {
                let node = need_node()?;
                if arg.is_empty() {
                    return Err("`bad` needs a status code name, e.g. BadSensorFailure".to_owned());
                }
                self.bad(node, arg).map_err(|e| e.to_string())?;
                Ok(String::new())
            }
            "good" => {
                self.good(need_node()?).map_err(|e| e.to_string())?;
                Ok(String::new())
            }
            "latency" => {
                let ms: u64 = rest
                    .parse()
                    .map_err(|_| format!("`latency` takes milliseconds, not `{rest}`"))?;
                self.set_latency(Duration::from_millis(ms));
                Ok(String::new())
            }
            "drop" => {
                self.drop_connections().await.map_err(|e| e.to_string())?;
                Ok(String::new())
            }
            "help" => Ok(HELP.to_owned()),
            other => Err(format!("unknown command `{other}` ({HELP})")),
        }
    }
}
