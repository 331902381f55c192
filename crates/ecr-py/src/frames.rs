//! The `0x2f6e` serial frame layer (D1) for Python: `decode_frames`, the
//! streaming `Decoder` and `build_frames`.
//!
//! The decoder is `ecr_proto::stream::StreamDecoder` itself: frames are found by
//! their length fields, bytes that are not a frame are reported as `Skipped` runs,
//! frame-shaped units with a bad field as `Rejected`, so every byte fed is
//! accounted for exactly as the analyzer accounts for it. Timestamps are integer
//! nanoseconds since the epoch (`time.time_ns()`), the unit of the capture clock.

use ecr_proto::frame::{split_message, FrameType, Header, MAX_FRAGMENT_DATA, OVERHEAD};
use ecr_proto::stream::{SkipCause, StreamDecoder, StreamEvent};
use ecr_proto::Timestamp;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::convert::BytesIn;
use crate::errors::FrameBuildError;

/// A valid frame, with where and when it was seen in the stream.
#[pyclass(frozen, module = "ecr_sniff", get_all)]
pub struct Frame {
    /// Version byte (always 1 for a valid frame).
    version: u8,
    /// Type byte: 0x10 request, 0x20 ack, 0x30..0x35 error.
    #[pyo3(name = "type")]
    frame_type: u8,
    /// Ref number (0x01..0x7f per the spec; other values are flagged, not refused).
    #[pyo3(name = "ref")]
    ref_num: u8,
    /// Total length field: this frame's size in bytes.
    total_len: u16,
    /// Data length field: the whole message's data length (larger than the data
    /// carried when the frame is a fragment of a split message).
    data_len: u16,
    /// The data this frame carries.
    data: Py<PyBytes>,
    /// The whole frame, markers included.
    raw: Py<PyBytes>,
    /// Stream offset of its first byte.
    offset: u64,
    /// Capture time of its first byte (ns).
    first_ts: i64,
    /// Capture time of its last byte (ns).
    last_ts: i64,
}

#[pymethods]
impl Frame {
    /// "request", "ack", "error" or "unknown".
    #[getter]
    fn type_name(&self) -> &'static str {
        FrameType(self.frame_type).name()
    }

    /// The type spelled out, e.g. "error 0x33 (decryption error)".
    #[getter]
    fn description(&self) -> String {
        FrameType(self.frame_type).to_string()
    }

    /// Whether this frame is one fragment of a split message (D1).
    #[getter]
    fn is_fragment(&self) -> bool {
        usize::from(self.data_len) > usize::from(self.total_len).saturating_sub(OVERHEAD)
    }

    /// Whether it carries more than the 1024 data bytes the spec recommends.
    #[getter]
    fn is_oversize(&self) -> bool {
        usize::from(self.total_len).saturating_sub(OVERHEAD) > MAX_FRAGMENT_DATA
    }

    fn __bytes__(&self, py: Python<'_>) -> Py<PyBytes> {
        self.raw.clone_ref(py)
    }

    fn __len__(&self) -> usize {
        usize::from(self.total_len)
    }

    fn __repr__(&self) -> String {
        format!(
            "Frame(type=0x{:02x} {}, ref={}, total_len={}, data_len={}, offset={})",
            self.frame_type,
            FrameType(self.frame_type),
            self.ref_num,
            self.total_len,
            self.data_len,
            self.offset
        )
    }
}

/// A frame-shaped unit (markers where its length says) with a field the spec does
/// not allow: bad version, unknown type or inconsistent lengths.
#[pyclass(frozen, module = "ecr_sniff", get_all)]
pub struct Rejected {
    /// Version byte as read.
    version: u8,
    /// Type byte as read.
    #[pyo3(name = "type")]
    frame_type: u8,
    /// Ref number as read.
    #[pyo3(name = "ref")]
    ref_num: u8,
    /// Total length field as read.
    total_len: u16,
    /// Data length field as read.
    data_len: u16,
    /// What is wrong with it.
    error: String,
    /// All of its bytes.
    raw: Py<PyBytes>,
    /// Stream offset of its first byte.
    offset: u64,
    /// Capture time of its first byte (ns).
    first_ts: i64,
    /// Capture time of its last byte (ns).
    last_ts: i64,
}

#[pymethods]
impl Rejected {
    fn __bytes__(&self, py: Python<'_>) -> Py<PyBytes> {
        self.raw.clone_ref(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "Rejected(type=0x{:02x}, ref={}, offset={}, error={:?})",
            self.frame_type, self.ref_num, self.offset, self.error
        )
    }
}

/// A run of bytes that belong to no frame.
#[pyclass(frozen, module = "ecr_sniff", get_all)]
pub struct Skipped {
    /// Stream offset of the first skipped byte.
    offset: u64,
    /// How many bytes.
    length: u64,
    /// Capture time of the first skipped byte (ns).
    first_ts: i64,
    /// Capture time of the last skipped byte (ns).
    last_ts: i64,
    /// "not-a-frame" (garbage), "invalid" (a frame start that proved invalid) or
    /// "truncated" (a frame cut off by the end of the stream or a gap).
    cause: &'static str,
    /// For "invalid": what was wrong with the frame.
    detail: Option<String>,
    /// The ref number of the invalid frame the run began with, if any.
    #[pyo3(name = "ref")]
    ref_num: Option<u8>,
}

#[pymethods]
impl Skipped {
    fn __len__(&self) -> usize {
        usize::try_from(self.length).unwrap_or(usize::MAX)
    }

    fn __repr__(&self) -> String {
        format!(
            "Skipped(offset={}, length={}, cause={:?})",
            self.offset, self.length, self.cause
        )
    }
}

/// Converts one decoder event to its Python object.
fn event_to_py(py: Python<'_>, ev: StreamEvent<'_>) -> PyResult<PyObject> {
    Ok(match ev {
        StreamEvent::Frame(f) => {
            let h = f.frame.header();
            Py::new(
                py,
                Frame {
                    version: h.version,
                    frame_type: h.frame_type.0,
                    ref_num: h.ref_num,
                    total_len: h.total_len,
                    data_len: h.data_len,
                    data: PyBytes::new(py, f.frame.data()).unbind(),
                    raw: PyBytes::new(py, f.frame.as_bytes()).unbind(),
                    offset: f.offset,
                    first_ts: f.first_ts.as_nanos(),
                    last_ts: f.last_ts.as_nanos(),
                },
            )?
            .into_any()
        }
        StreamEvent::Rejected(r) => {
            let Header {
                version,
                frame_type,
                ref_num,
                total_len,
                data_len,
            } = r.header;
            Py::new(
                py,
                Rejected {
                    version,
                    frame_type: frame_type.0,
                    ref_num,
                    total_len,
                    data_len,
                    error: r.error.to_string(),
                    raw: PyBytes::new(py, r.bytes).unbind(),
                    offset: r.offset,
                    first_ts: r.first_ts.as_nanos(),
                    last_ts: r.last_ts.as_nanos(),
                },
            )?
            .into_any()
        }
        StreamEvent::Skipped(s) => {
            let (cause, detail) = match s.cause {
                SkipCause::NotAFrame => ("not-a-frame", None),
                SkipCause::Invalid(e) => ("invalid", Some(e.to_string())),
                SkipCause::Truncated => ("truncated", None),
            };
            Py::new(
                py,
                Skipped {
                    offset: s.offset,
                    length: s.len,
                    first_ts: s.first_ts.as_nanos(),
                    last_ts: s.last_ts.as_nanos(),
                    cause,
                    detail,
                    ref_num: s.header.map(|h| h.ref_num),
                },
            )?
            .into_any()
        }
    })
}

/// Collects the events a decoder call emits, stopping at the first conversion
/// error (which can only be a failed allocation on the Python side).
struct Collector<'py> {
    py: Python<'py>,
    out: Vec<PyObject>,
    error: Option<PyErr>,
    frames_only: bool,
}

impl<'py> Collector<'py> {
    fn new(py: Python<'py>, frames_only: bool) -> Self {
        Collector {
            py,
            out: vec![],
            error: None,
            frames_only,
        }
    }

    fn push(&mut self, ev: StreamEvent<'_>) {
        if self.error.is_some() || (self.frames_only && !matches!(ev, StreamEvent::Frame(_))) {
            return;
        }
        match event_to_py(self.py, ev) {
            Ok(obj) => self.out.push(obj),
            Err(e) => self.error = Some(e),
        }
    }

    fn done(self) -> PyResult<Vec<PyObject>> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

/// Decodes every complete frame in `data` (one direction of a serial link).
///
/// Bytes that are not a frame, frames with a bad field and a frame cut off at
/// the end are left out; use `Decoder` to see them.
#[pyfunction]
pub fn decode_frames(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Vec<PyObject>> {
    let input = BytesIn::extract(data, false, "data")?;
    let mut dec = StreamDecoder::new();
    let mut c = Collector::new(py, true);
    dec.feed(input.as_slice(), Timestamp::default(), |ev| c.push(ev));
    dec.finish(|ev| c.push(ev));
    c.done()
}

/// Builds the frames of one message: a single frame, or fragments of at most
/// `max_fragment` data bytes that all carry the whole message's data length (D1).
#[pyfunction]
#[pyo3(signature = (data, r#ref, r#type = 0x10, max_fragment = MAX_FRAGMENT_DATA))]
pub fn build_frames<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    r#ref: u8,
    r#type: u8,
    max_fragment: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let input = BytesIn::extract(data, false, "data")?;
    let bytes = split_message(FrameType(r#type), r#ref, input.as_slice(), max_fragment)
        .map_err(|e| FrameBuildError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &bytes))
}

/// A streaming frame decoder for one direction of a link. Feed it chunks as they
/// arrive, with their capture time; each call returns the frames and events the
/// chunk completes (`Frame`, `Rejected`, `Skipped`).
#[pyclass(module = "ecr_sniff")]
pub struct Decoder {
    inner: StreamDecoder,
}

#[pymethods]
impl Decoder {
    #[new]
    fn new() -> Self {
        Decoder {
            inner: StreamDecoder::new(),
        }
    }

    /// Feeds the next chunk, seen at `ts` (ns since the epoch).
    #[pyo3(signature = (data, ts = 0))]
    fn feed(
        &mut self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        ts: i64,
    ) -> PyResult<Vec<PyObject>> {
        let input = BytesIn::extract(data, false, "data")?;
        let mut c = Collector::new(py, false);
        self.inner
            .feed(input.as_slice(), Timestamp(ts), |ev| c.push(ev));
        c.done()
    }

    /// Says that `missing` bytes of the stream were lost: a frame in progress is
    /// reported as truncated and decoding resynchronises.
    fn gap(&mut self, py: Python<'_>, missing: u64) -> PyResult<Vec<PyObject>> {
        let mut c = Collector::new(py, false);
        self.inner.gap(missing, |ev| c.push(ev));
        c.done()
    }

    /// Reports a pending run of skipped bytes now, instead of at the next frame.
    fn flush(&mut self, py: Python<'_>) -> PyResult<Vec<PyObject>> {
        let mut c = Collector::new(py, false);
        self.inner.flush(|ev| c.push(ev));
        c.done()
    }

    /// Ends the stream: an incomplete frame is reported as truncated.
    fn finish(&mut self, py: Python<'_>) -> PyResult<Vec<PyObject>> {
        let mut c = Collector::new(py, false);
        self.inner.finish(|ev| c.push(ev));
        c.done()
    }

    /// Stream offset of the next byte to be fed.
    #[getter]
    fn offset(&self) -> u64 {
        self.inner.offset()
    }

    /// Bytes held back waiting for the rest of a frame.
    #[getter]
    fn buffered(&self) -> usize {
        self.inner.buffered()
    }

    /// Counters: bytes fed, frames, rejected frames, skipped bytes.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("bytes", s.bytes)?;
        d.set_item("frames", s.frames)?;
        d.set_item("rejected", s.rejected)?;
        d.set_item("skipped_bytes", s.skipped_bytes)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Decoder(offset={}, buffered={})",
            self.inner.offset(),
            self.inner.buffered()
        )
    }
}

/// Adds the frame functions and classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Frame>()?;
    m.add_class::<Rejected>()?;
    m.add_class::<Skipped>()?;
    m.add_class::<Decoder>()?;
    m.add_function(wrap_pyfunction!(decode_frames, m)?)?;
    m.add_function(wrap_pyfunction!(build_frames, m)?)?;
    Ok(())
}
