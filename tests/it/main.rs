//! The integration tests, one binary. Two stages (both run by `scripts/test.sh`):
//!
//! - fast: API tests against a node in this process (`TestServer::start`), everything whose
//!   name has no `::process::` and is not in `oracles`;
//! - slow: the tests of the real binary as a process (`mod process` of each file: kill -9 and
//!   resume, SIGTERM, restarts, injected faults, memory, the CLI, the README's quick start) and
//!   the external oracles (`oracles`, Python packages in ./.venv); `multi_node` runs three
//!   nodes on one PostgreSQL database and one Garage bucket.

mod common;

mod console;
mod cti_flow;
mod first_run;
mod foundation;
mod hidden_danger;
mod multi_node;
mod oracles;
mod stix_flow;
mod taxii;
