// Entry point of upstream tansu 0.6.0 (`src/bin/tansu.rs`), reduced to what
// the broker needs: initialise tansu's tracing, then run its CLI. The only
// reason this crate exists is its Cargo.toml (rsasl with the "plain" feature).

use tansu_broker::{otel, TracingFormat};
use tansu_cli::{Cli, Result};
use tansu_sans_io::ErrorCode;

#[tokio::main]
async fn main() -> Result<ErrorCode> {
    let _guard = otel::init(TracingFormat::Text)?;
    Cli::main().await
}
