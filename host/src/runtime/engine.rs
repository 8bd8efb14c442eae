//! The wasmtime engine and the clock that bounds every plugin call.

use std::time::Duration;

use anyhow::Context;
use wasmtime::{Config, Engine};

/// Granularity of call deadlines: the epoch advances this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

pub fn new_engine() -> anyhow::Result<Engine> {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    // Deadlines by epoch interruption: cheap checks in loops and calls,
    // advanced by a ticker thread.
    cfg.epoch_interruption(true);
    // Concurrent component-model calls cost 3-4x per call and we never use
    // them: one instance runs one call at a time by design.
    cfg.concurrency_support(false);
    cfg.cranelift_opt_level(wasmtime::OptLevel::Speed);
    Engine::new(&cfg)
        .map_err(anyhow::Error::from)
        .context("create the WebAssembly engine")
}

/// Advances the engine's epoch every [`EPOCH_TICK`] for as long as the
/// engine lives (the thread holds only a weak reference).
pub fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn the epoch ticker thread");
}

/// Ticks for a call budget, rounded up, plus one for the tick in progress.
pub fn ticks_for(budget: Duration) -> u64 {
    (budget.as_nanos() / EPOCH_TICK.as_nanos()) as u64 + 2
}
