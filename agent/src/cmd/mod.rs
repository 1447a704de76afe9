//! One module per subcommand: argument parsing and printing only; the work lives in the crates.

pub mod decrypt;
pub mod gen_secrets;
pub mod lab;
pub mod render;
pub mod validate;
