//! The graph outputs of a package for given token ids, on tract's own plan of the ONNX graph
//! ("tract") and on our patched plan ("ours": fused int8 linear layers on the integer kernel of
//! `AUTOGLM_INT8_KERNEL`, or the best this CPU has), one text at a time, as JSON on stdout.
//! `tools/bench/int8_reference.py` compares them with ONNX Runtime and with an exact integer
//! evaluation of the same int8 graph.
//!
//! cargo run --release -p autoglm-runtime --example int8_outputs -- PKG IDS.json
//! (IDS.json: a JSON array of token-id arrays)

use autoglm_package::Package;
use autoglm_runtime::{batch, Backend, Encoded, TractBackend};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [package, ids] = &args[..] else {
        return Err("usage: int8_outputs PKG IDS.json".into());
    };
    let pkg = Package::open(package)?;
    let onnx = pkg.file(&pkg.manifest().graph.file)?;
    let multiple = pkg.manifest().graph.sequence_multiple;
    let texts: Vec<Vec<i64>> = serde_json::from_slice(&std::fs::read(ids)?)?;
    let tract = TractBackend::plain(onnx, 1, multiple)?;
    let ours = TractBackend::new(onnx, 1, multiple)?;
    let tier = autoglm_runtime::ops::qgemm::Tier::chosen();
    let mut outputs = serde_json::Map::new();
    for (name, backend) in [("tract", &tract), ("ours", &ours)] {
        let mut rows = Vec::new();
        for ids in &texts {
            let text = Encoded {
                ids: ids.clone(),
                type_ids: vec![0; ids.len()],
            };
            let plan = batch::plan(std::slice::from_ref(&text), 1, 0, multiple);
            rows.push(backend.run(&plan[0])?);
        }
        outputs.insert(name.into(), serde_json::to_value(rows)?);
    }
    outputs.insert("kernel".into(), tier.name().into());
    outputs.insert("linear_ops".into(), ours.op_count("AutoglmLinearI8").into());
    println!("{}", serde_json::Value::Object(outputs));
    Ok(())
}
