//! Host bindings generated from `wit/`, the one module both the plugin
//! runtime and the capabilities use (it imports nothing of the crate).
//! Each capability links its own interface from here (see
//! `capabilities::Capability::link`); the runtime links the contract's own
//! imports (`log`, `types`) and calls the backend's exports.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "capabilities",
    // Every import async, so a capability's interface needs no line here.
    imports: { default: async },
    exports: { default: async },
});
