//! The typed bindings of the `autoglm:edge/edge` world (`wit/autoglm-edge.wit`).

wasmtime::component::bindgen!({
    world: "edge",
    path: "../../wit",
});

pub use exports::autoglm::edge::runtime as wit;
