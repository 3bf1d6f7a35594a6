//! The one `bindgen!` of the crate: host-side bindings of `wit/plugin.wit`.
//!
//! Exports are called asynchronously so that a long-running guest yields to tokio at every
//! epoch tick instead of blocking a runtime thread; the only host import (`log`) is synchronous.

// The generated items mirror the WIT, which documents them.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "wit",
    world: "plugin",
    exports: { default: async },
});

pub use exports::hookyard::plugin::handler;
pub use hookyard::plugin::log;
pub use hookyard::plugin::types;
