//! The Python side of the live view and of the kernel-event layer names
//! (kept out of python.rs so the module definition stays small).

use pyo3::{prelude::*, types::PyDict};

use crate::{capture::host::Layer, tracer::LiveView};

/// The layers named; an unknown name is an error message.
pub fn layers(names: Vec<String>) -> Result<Vec<Layer>, String> {
    names
        .iter()
        .map(|n| {
            Layer::ALL
                .into_iter()
                .find(|l| l.name() == n)
                .ok_or_else(|| format!("unknown kernel-event layer {n:?}"))
        })
        .collect()
}

pub fn view_dict<'py>(py: Python<'py>, view: &LiveView) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let system = view
        .system
        .map(|s| {
            let sys = PyDict::new(py);
            sys.set_item("timestamp", s.timestamp_ns)?;
            sys.set_item("cpu_pct", s.cpu_pct)?;
            sys.set_item("mem_pct", s.mem_pct)?;
            sys.set_item("mem_avail_mb", s.mem_avail_mb)?;
            sys.set_item("swap_mb", s.swap_mb)?;
            sys.set_item("load_avg", s.load_avg)?;
            Ok::<_, PyErr>(sys)
        })
        .transpose()?;
    d.set_item("system", system)?;
    let layers: Vec<(&str, u64, u64, u64)> =
        view.layers.iter().map(|l| (l.name, l.received, l.stored, l.dropped)).collect();
    d.set_item("layers", layers)?;
    // (source, op, count, p50, p95, p99, max, spikes)
    type OpRow = (u8, u8, u64, u64, u64, u64, u64, u64);
    let ops: Vec<OpRow> =
        view.ops.iter().map(|o| (o.source, o.op, o.count, o.p50, o.p95, o.p99, o.max, o.spikes)).collect();
    d.set_item("ops", ops)?;
    d.set_item("critical_dropped", view.critical_dropped)?;
    Ok(d)
}
