//! Backends run a package's ONNX graph on one padded batch: the trait, what a backend reads
//! from the graph, and the names of the engines and devices. The engines themselves are
//! [`crate::tract`] (built in) and `crate::ort` (feature `ort`).

use crate::batch::Batch;
use crate::error::Result;

/// Runs the graph: int64 `[batch, sequence]` inputs in, `[batch, width]` floats out (row-major).
pub trait Backend: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    /// What runs, for logs and benchmarks (engine, device, threads).
    fn describe(&self) -> String {
        self.name().to_string()
    }
    fn run(&self, batch: &Batch) -> Result<Vec<f32>>;
    /// What the backend read from the graph, for checking the manifest against it at load;
    /// a backend that cannot tell leaves fields `None` (the model then probes the output width
    /// with one tiny batch).
    fn facts(&self) -> GraphFacts {
        GraphFacts::default()
    }
}

/// Facts about a loaded graph that the manifest must agree with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphFacts {
    /// Input names, in the order the backend feeds ids, mask and token types.
    pub inputs: Option<Vec<String>>,
    /// The name of the output the backend returns (the first).
    pub output: Option<String>,
    /// That output's rank and, when the graph fixes it, its last dimension.
    pub output_rank: Option<usize>,
    pub output_width: Option<usize>,
    /// Rows of the position-embedding table, when the graph has one we recognize (a constant
    /// named `*position_embeddings*`, as our exporter writes).
    pub positions: Option<usize>,
}

/// Which engine runs the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// tract: pure Rust, always compiled in.
    #[default]
    Tract,
    /// ONNX Runtime, loaded from a shared library at run time (cargo feature `ort`).
    Ort,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::Ort => "ort",
        }
    }

    /// The backends this build can run, tract first.
    pub fn compiled() -> Vec<BackendKind> {
        let mut all = vec![BackendKind::Tract];
        if cfg!(feature = "ort") {
            all.push(BackendKind::Ort);
        }
        all
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tract" => Ok(BackendKind::Tract),
            "ort" | "onnxruntime" => Ok(BackendKind::Ort),
            _ => Err(format!("`{s}`: expected tract or ort")),
        }
    }
}

/// Where the graph runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// The first visible NVIDIA GPU (`CUDA_VISIBLE_DEVICES` picks which), through ONNX Runtime's
    /// CUDA execution provider.
    Cuda,
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            _ => Err(format!("`{s}`: expected cpu or cuda")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LoadOptions;

    // Choosing the backend (`crate::open_backend`): tools/test.sh runs these in the build
    // without the `ort` feature too.
    fn err(options: &LoadOptions) -> String {
        crate::open_backend(
            crate::FileStream::of_bytes("g", b"not parsed".to_vec()),
            1,
            options,
        )
        .expect_err("must refuse")
        .to_string()
    }

    #[test]
    fn tract_refuses_cuda() {
        let options = LoadOptions {
            device: Device::Cuda,
            ..LoadOptions::default()
        };
        assert!(err(&options).contains("CPU only"), "{}", err(&options));
    }

    // The build without the feature must say how to get it, not fall back to tract.
    #[cfg(not(feature = "ort"))]
    #[test]
    fn ort_without_the_feature_says_how_to_get_it() {
        let options = LoadOptions {
            backend: BackendKind::Ort,
            ..LoadOptions::default()
        };
        let e = err(&options);
        assert!(
            e.contains("not compiled with ort: rebuild with --features ort"),
            "{e}"
        );
        assert_eq!(BackendKind::compiled(), vec![BackendKind::Tract]);
    }

    #[test]
    fn names_parse() {
        assert_eq!("ort".parse::<BackendKind>(), Ok(BackendKind::Ort));
        assert_eq!("tract".parse::<BackendKind>(), Ok(BackendKind::Tract));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda));
        assert!("tpu".parse::<Device>().is_err());
    }
}
