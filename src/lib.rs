//! The node as a library: its composition root ([`node`], the one place that names the concrete
//! backends) and the arguments of `serve`, so that tests can run a whole node in-process. The
//! binary (`main.rs`) adds the other commands.

pub mod backend;
pub mod node;
pub mod serve_args;
