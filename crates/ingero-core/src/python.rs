//! The `ingero._core` Python module: a thin, typed surface over the Rust side.
//! Every call that waits (attaching, starting, stopping, waiting for a child)
//! releases the GIL.

use std::{path::PathBuf, sync::Mutex};

use ingero_common::codes::{OPS, SOURCES};
use pyo3::{create_exception, exceptions::PyException, prelude::*, types::PyDict};

use crate::{
    capture::{launch, programs::Library},
    store::{
        SessionInfo,
        audit::{self, Delivered, ToolCall},
        selective::Policy,
    },
    tracer::{TraceStats, Tracer},
};

create_exception!(_core, IngeroError, PyException, "An error ingero reports to the user as one line.");

fn to_py(err: anyhow::Error) -> PyErr {
    IngeroError::new_err(format!("{err:#}"))
}

/// Source code table: `(id, name, description)` rows.
#[pyfunction]
fn sources() -> Vec<(u8, &'static str, &'static str)> {
    SOURCES.iter().map(|s| (s.id, s.name, s.description)).collect()
}

/// Op code table: `(source, id, name, description, arg0, arg1)` rows.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn ops() -> Vec<(u8, u8, &'static str, &'static str, &'static str, &'static str)> {
    OPS.iter().map(|o| (o.source, o.id, o.name, o.description, o.arg0, o.arg1)).collect()
}

fn stats_dict<'py>(py: Python<'py>, s: &TraceStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("received", s.received)?;
    d.set_item("stored", s.stored)?;
    d.set_item("aggregated", s.aggregated)?;
    d.set_item("dropped", s.dropped)?;
    d.set_item("unpaired", s.unpaired)?;
    d.set_item("sampled_out", s.sampled_out)?;
    d.set_item("malformed", s.malformed)?;
    d.set_item("write_failed", s.write_failed)?;
    d.set_item("write_error", s.write_error.clone())?;
    d.set_item("critical_dropped", s.critical_dropped)?;
    Ok(d)
}

/// A trace run: load with `Tracer()`, `attach()` libraries, enrol targets,
/// `start()` into a database, `stop()` to flush and get the final counts.
#[pyclass(name = "Tracer", module = "ingero._core")]
struct PyTracer {
    inner: Mutex<Tracer>,
}

impl PyTracer {
    fn with<T>(&self, f: impl FnOnce(&mut Tracer) -> anyhow::Result<T>) -> PyResult<T> {
        let mut tracer = self.inner.lock().map_err(|_| IngeroError::new_err("tracer state poisoned"))?;
        f(&mut tracer).map_err(to_py)
    }
}

#[pymethods]
impl PyTracer {
    /// Loads the runtime and driver probe families, and NCCL's if `nccl`.
    #[new]
    /// `layers` names the kernel-event layers to trace ("host", "io", "tcp", "net"): none
    /// unless named (`ingero trace` names all four unless told otherwise).
    #[pyo3(signature = (trace_all = false, ringbuf_bytes = 8 << 20, nccl = false, layers = Vec::new()))]
    fn new(
        py: Python<'_>,
        trace_all: bool,
        ringbuf_bytes: u32,
        nccl: bool,
        layers: Vec<String>,
    ) -> PyResult<Self> {
        let libraries: Vec<Library> =
            Library::ALL.into_iter().filter(|&l| nccl || l != Library::Nccl).collect();
        let layers = crate::live_py::layers(layers).map_err(IngeroError::new_err)?;
        let tracer =
            py.detach(|| Tracer::new(&libraries, trace_all, ringbuf_bytes, &layers)).map_err(to_py)?;
        Ok(Self { inner: Mutex::new(tracer) })
    }

    /// Attaches the probes of `kind` ("runtime" for libcudart, "driver" for
    /// libcuda) to one library file; returns `{"library", "kind", "symbols", "missing"}`.
    #[pyo3(signature = (library, kind = "runtime"))]
    fn attach<'py>(&self, py: Python<'py>, library: PathBuf, kind: &str) -> PyResult<Bound<'py, PyDict>> {
        let family = Library::ALL
            .into_iter()
            .find(|l| l.name() == kind)
            .ok_or_else(|| IngeroError::new_err(format!("unknown library kind {kind:?}")))?;
        let a = py.detach(|| self.with(|t| t.attach(&library, family)))?;
        let d = PyDict::new(py);
        d.set_item("library", a.library)?;
        d.set_item("kind", a.kind.name())?;
        d.set_item("symbols", a.symbols)?;
        d.set_item("missing", a.missing)?;
        Ok(d)
    }

    /// Records the calls of process `pid` (a tgid).
    fn add_target(&self, pid: u32) -> PyResult<()> {
        self.with(|t| t.add_target(pid))
    }

    #[pyo3(signature = (db_path, node, pid_filter = String::new(), flags = String::new(), python_ver = String::new(), ingero_ver = String::new(), record_all = false, stack_samples = 100, max_db_bytes = 0, rollover_bytes = 0, rollover_keep = 6, gpu_model = String::new(), gpu_driver = String::new(), cuda_ver = String::new()))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        py: Python<'_>,
        db_path: PathBuf,
        node: String,
        pid_filter: String,
        flags: String,
        python_ver: String,
        ingero_ver: String,
        record_all: bool,
        stack_samples: u32,
        max_db_bytes: u64,
        rollover_bytes: u64,
        rollover_keep: u32,
        gpu_model: String,
        gpu_driver: String,
        cuda_ver: String,
    ) -> PyResult<()> {
        let session = SessionInfo {
            started_at_ns: crate::clock::wall_now_ns(),
            node,
            pid_filter,
            flags,
            python_ver,
            ingero_ver,
            policy: Policy { record_all, stack_samples },
            max_db_bytes,
            rollover_bytes,
            rollover_keep,
            gpu_model,
            gpu_driver,
            cuda_ver,
        };
        py.detach(|| self.with(|t| t.start(&db_path, &session)))
    }

    /// Starts `argv` as a child that is a target from its first instruction;
    /// returns its pid.
    fn launch(&self, py: Python<'_>, argv: Vec<String>) -> PyResult<u32> {
        py.detach(|| {
            self.with(|t| {
                let child = launch::spawn_gated(&argv)?;
                if let Err(err) = t.add_target(child.pid) {
                    drop(child); // closing the gate makes the child exit unrun
                    return Err(err);
                }
                child.release()
            })
        })
    }

    /// Captures (or not) the caller's user stack at every traced call.
    fn set_capture_stacks(&self, on: bool) -> PyResult<()> {
        self.with(|t| t.set_capture_stacks(on))
    }

    /// Records 1 call in `rate` of the runtime and driver APIs (1: all).
    fn set_sampling_rate(&self, rate: u32) -> PyResult<()> {
        self.with(|t| t.set_sampling_rate(rate))
    }

    /// What does not work in this trace, one line each.
    fn warnings(&self) -> PyResult<Vec<String>> {
        self.with(|t| Ok(t.warnings()))
    }

    /// Drops targets that exited (and threads the fork probe enrolled); returns
    /// how many remain.
    fn prune_targets(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| self.with(|t| Ok(t.prune_targets())))
    }

    /// Writes every event as one JSON line on stdout once started (`--json`).
    fn set_json(&self, on: bool) -> PyResult<()> {
        self.with(|t| {
            t.set_json(on);
            Ok(())
        })
    }

    /// The live view: `{"system", "layers", "ops", "critical_dropped"}`.
    fn live<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let view = self.with(|t| Ok(t.live()))?;
        crate::live_py::view_dict(py, &view)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(|t| Ok(t.stats()))?;
        stats_dict(py, &s)
    }

    /// Detaches, drains and stores everything, closes the database.
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.with(Tracer::stop))?;
        stats_dict(py, &s)
    }
}

/// Waits up to `timeout_ms` (None: forever) for child `pid`; returns its exit
/// code (128 + signal if killed) or None while it runs.
#[pyfunction]
#[pyo3(signature = (pid, timeout_ms = None))]
fn wait_child(py: Python<'_>, pid: u32, timeout_ms: Option<u64>) -> PyResult<Option<i32>> {
    py.detach(|| launch::wait(pid, timeout_ms)).map_err(to_py)
}

/// Records one MCP request as a trace event of source MCP: into the running
/// `ingero trace` that writes `db` when there is one, else appended to `db`
/// (created if needed). Returns `"trace"` or the database's path.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (db, node, tool, arguments, status, error, rows, bytes, started_ns, duration_ns, transport, principal))]
fn record_tool_call(
    py: Python<'_>,
    db: PathBuf,
    node: &str,
    tool: &str,
    arguments: &str,
    status: &str,
    error: &str,
    rows: u64,
    bytes: u64,
    started_ns: i64,
    duration_ns: i64,
    transport: &str,
    principal: &str,
) -> PyResult<String> {
    let call = ToolCall {
        started_ns,
        duration_ns,
        pid: std::process::id(),
        // SAFETY: gettid has no preconditions.
        tid: unsafe { libc::gettid() } as u32,
        tool: tool.to_owned(),
        arguments: arguments.to_owned(),
        status: status.to_owned(),
        error: error.to_owned(),
        rows,
        bytes,
        transport: transport.to_owned(),
        principal: principal.to_owned(),
    };
    match py.detach(|| audit::record(&db, node, &call)).map_err(to_py)? {
        Delivered::Trace => Ok("trace".to_owned()),
        Delivered::Database(path) => Ok(path.display().to_string()),
    }
}

/// Rolled-over files of the database at `db` (`NAME.<unix ns>.db`), oldest first.
#[pyfunction]
fn rolled_siblings(db: PathBuf) -> Vec<PathBuf> {
    let mut files = crate::store::rollover::rolled_siblings(&db);
    files.sort();
    files
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("IngeroError", m.py().get_type::<IngeroError>())?;
    m.add_class::<PyTracer>()?;
    m.add_function(wrap_pyfunction!(sources, m)?)?;
    m.add_function(wrap_pyfunction!(ops, m)?)?;
    m.add_function(wrap_pyfunction!(wait_child, m)?)?;
    m.add_function(wrap_pyfunction!(record_tool_call, m)?)?;
    m.add_function(wrap_pyfunction!(rolled_siblings, m)?)?;
    Ok(())
}
