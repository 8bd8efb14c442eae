//! Host bindings generated from the WIT the SDK ships (`plugins/sdk/wit/`),
//! the one module both the plugin runtime and the capabilities use (it
//! imports nothing of the crate). Each capability links its own interface
//! from here (see `capabilities::Capability::link`); the runtime links the
//! contract's own imports (`log`, `types`) and calls the backend's exports.
//!
//! Two versions of the backend contract are generated: the current one at the
//! root of this module, and the frozen 0.1.0 in [`contract_0_1`], so that a
//! plugin built for either loads (`runtime::contract` picks per plugin).

wasmtime::component::bindgen!({
    path: "../plugins/sdk/wit",
    world: "ha:sdk/capabilities",
    // Every import async, so a capability's interface needs no line here.
    imports: { default: async },
    exports: { default: async },
});

/// Contract 0.1.0 (`plugins/sdk/wit-0.1.0/`), in which the capability
/// interfaces were part of `ha:sidecar`. Its `types` are the current ones
/// (the records and variants did not change, and the component model checks
/// them by shape, not by name), so its backend calls take and return the
/// same Rust values; its `log` and capability interfaces are their own Rust
/// types, forwarded to the current implementations by small adapters
/// (`runtime::contract`, `capabilities::*::contract_0_1`).
pub mod contract_0_1 {
    wasmtime::component::bindgen!({
        path: "../plugins/sdk/wit-0.1.0",
        world: "ha:sidecar/capabilities@0.1.0",
        imports: { default: async },
        exports: { default: async },
        with: {
            "ha:sidecar/types": crate::bindings::ha::sidecar::types,
        },
    });
}

/// The optional `ha:membership/roster` export (members and a handover to a
/// chosen one), looked up in a plugin that has it (`runtime::contract`). Its
/// `types` are the contract's, as in `contract_0_1`.
pub mod roster {
    wasmtime::component::bindgen!({
        path: "../plugins/sdk/wit",
        world: "ha:sdk/roster",
        exports: { default: async },
        with: {
            "ha:sidecar/types": crate::bindings::ha::sidecar::types,
        },
    });
}
