//! One ONNX Runtime call through its C API, without the `ort` crate's per-call wrappers.
//!
//! `Session::run` allocates on the Rust heap at every call: the input and output name
//! strings, a wrapper and a shape per input tensor, an `Arc` per output value and the output
//! map (the spine bench's allocation sites: 46% of verdict's allocations while draining, at
//! 64 rows per call). Here the names are made once, the input tensors are created over the
//! rows where they are, only the one output the scorer reads is asked for, and its values
//! are read in place: no Rust allocation per call once the scratch lists have grown (ONNX
//! Runtime's own allocations, made through its arena, are its own). String inputs keep the
//! `ort` path (the scorer falls back to it).

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

use ort::session::Session;
use ort::sys;
use ort::AsPointer;

/// A graph input's data for one call: its values, row-major `[rows, cols]`.
pub(super) enum Input<'a> {
    /// float32 columns.
    F32(&'a [f32]),
    /// int64 columns.
    I64(&'a [i64]),
}

/// Names and scratch lists for calls through the C API (see the module doc).
pub(super) struct RawRun {
    memory: *mut sys::OrtMemoryInfo,
    /// Input names (C strings) in feed order, and pointers to them.
    names: Vec<CString>,
    name_ptrs: Vec<*const c_char>,
    output: CString,
    /// This call's input values (released after the call; the list keeps its capacity).
    values: Vec<Value>,
    value_ptrs: Vec<*const sys::OrtValue>,
}

// SAFETY: the memory info is created once, never changed and released once, on drop; the
// name pointers point into the `CString`s this struct owns; the value lists are empty
// between calls. Nothing is shared with another thread.
unsafe impl Send for RawRun {}

/// An `OrtValue` owned here, released on drop.
struct Value(*mut sys::OrtValue);

impl Drop for Value {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a value ONNX Runtime created for us, released once.
            unsafe { (ort::api().ReleaseValue)(self.0) }
        }
    }
}

/// Tensor shape information owned here, released on drop.
struct ShapeInfo(*mut sys::OrtTensorTypeAndShapeInfo);

impl Drop for ShapeInfo {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by `GetTensorTypeAndShape` for us, released once.
            unsafe { (ort::api().ReleaseTensorTypeAndShapeInfo)(self.0) }
        }
    }
}

/// `Ok` for a null status; otherwise its message as an error (the status is released).
fn check(status: sys::OrtStatusPtr) -> ort::Result<()> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status returned by the C API; its message is a C string that lives
    // until the status is released, which happens after it is copied.
    let message = unsafe { CStr::from_ptr((api.GetErrorMessage)(status.0)) }.to_string_lossy().into_owned();
    // SAFETY: released once.
    unsafe { (api.ReleaseStatus)(status.0) };
    Err(ort::Error::new(message))
}

impl RawRun {
    /// For a session whose inputs are `inputs` (in the order calls give them) and whose
    /// output `output` is read.
    pub(super) fn new<'a>(inputs: impl Iterator<Item = &'a str>, output: &str) -> ort::Result<Self> {
        let cstring = |s: &str| CString::new(s).map_err(|_| ort::Error::new(format!("name '{s}' has a NUL byte")));
        let names = inputs.map(cstring).collect::<ort::Result<Vec<_>>>()?;
        let mut memory = ptr::null_mut();
        let api = ort::api();
        // SAFETY: an out pointer the call fills on success.
        check(unsafe {
            (api.CreateCpuMemoryInfo)(
                sys::OrtAllocatorType::OrtArenaAllocator,
                sys::OrtMemType::OrtMemTypeDefault,
                &mut memory,
            )
        })?;
        Ok(Self {
            memory,
            name_ptrs: names.iter().map(|n| n.as_ptr()).collect(),
            values: Vec::with_capacity(names.len()),
            value_ptrs: Vec::with_capacity(names.len()),
            names,
            output: cstring(output)?,
        })
    }

    /// Runs `session` on `inputs` (one per input name, each `[rows, cols]`), then hands the
    /// output's shape and float32 values to `read`.
    pub(super) fn run<R>(
        &mut self,
        session: &mut Session,
        inputs: &[(Input<'_>, [i64; 2])],
        read: impl FnOnce(&[i64], &[f32]) -> ort::Result<R>,
    ) -> ort::Result<R> {
        if inputs.len() != self.names.len() {
            return Err(ort::Error::new(format!("{} inputs for {} names", inputs.len(), self.names.len())));
        }
        let api = ort::api();
        self.values.clear();
        self.value_ptrs.clear();
        for (input, shape) in inputs {
            let (data, len, size, ty) = match input {
                Input::F32(v) => (
                    v.as_ptr().cast::<c_void>(),
                    v.len(),
                    4,
                    sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                ),
                Input::I64(v) => (
                    v.as_ptr().cast::<c_void>(),
                    v.len(),
                    8,
                    sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64,
                ),
            };
            if shape[0].checked_mul(shape[1]) != Some(len as i64) {
                return Err(ort::Error::new(format!("input of {len} values does not have shape {shape:?}")));
            }
            let bytes = len * size;
            let mut value = ptr::null_mut();
            // SAFETY: `data` is valid for `bytes` bytes for the whole call (borrowed from the
            // caller until this function returns, and the value is released before that);
            // ONNX Runtime only reads an input tensor created over caller memory.
            check(unsafe {
                (api.CreateTensorWithDataAsOrtValue)(
                    self.memory,
                    data.cast_mut(),
                    bytes,
                    shape.as_ptr(),
                    2,
                    ty,
                    &mut value,
                )
            })?;
            self.values.push(Value(value));
            self.value_ptrs.push(value);
        }
        let mut out = Value(ptr::null_mut());
        let output = self.output.as_ptr();
        // SAFETY: the session is held mutably (ONNX Runtime's Run is not to be called
        // concurrently on one session); the name and value arrays have `inputs.len()` valid
        // entries; one output name and one out slot, which Run fills on success.
        check(unsafe {
            (api.Run)(
                session.ptr().cast_mut(),
                ptr::null(),
                self.name_ptrs.as_ptr(),
                self.value_ptrs.as_ptr(),
                self.value_ptrs.len(),
                &output,
                1,
                &mut out.0,
            )
        })?;
        let result = read_output(&out, read);
        self.values.clear();
        self.value_ptrs.clear();
        result
    }
}

/// The output's shape and float32 values, handed to `read`.
fn read_output<R>(out: &Value, read: impl FnOnce(&[i64], &[f32]) -> ort::Result<R>) -> ort::Result<R> {
    if out.0.is_null() {
        return Err(ort::Error::new("ONNX Runtime returned no output value"));
    }
    let api = ort::api();
    let mut info = ShapeInfo(ptr::null_mut());
    let (mut ty, mut rank, mut count) =
        (sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED, 0usize, 0usize);
    let mut dims = [0i64; 8];
    // SAFETY: `out` is a live value; each call fills its out pointer; `dims` has room for
    // `rank` entries (checked first).
    unsafe {
        check((api.GetTensorTypeAndShape)(out.0, &mut info.0))?;
        check((api.GetTensorElementType)(info.0, &mut ty))?;
        check((api.GetDimensionsCount)(info.0, &mut rank))?;
        if rank > dims.len() {
            return Err(ort::Error::new(format!("output of rank {rank}")));
        }
        check((api.GetDimensions)(info.0, dims.as_mut_ptr(), rank))?;
        check((api.GetTensorShapeElementCount)(info.0, &mut count))?;
    }
    if ty != sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT {
        return Err(ort::Error::new(format!("output is a tensor of {ty:?}, not float32")));
    }
    let mut data = ptr::null_mut();
    // SAFETY: a live float32 tensor value: its data pointer is valid for `count` floats
    // until the value is released, after `read` returns.
    check(unsafe { (api.GetTensorMutableData)(out.0, &mut data) })?;
    let values = if count == 0 || data.is_null() {
        &[][..]
    } else {
        // SAFETY: as above: `count` floats at `data`, alive while `out` is.
        unsafe { std::slice::from_raw_parts(data.cast::<f32>(), count) }
    };
    read(&dims[..rank], values)
}

impl Drop for RawRun {
    fn drop(&mut self) {
        self.values.clear();
        if !self.memory.is_null() {
            // SAFETY: created in `new`, released once.
            unsafe { (ort::api().ReleaseMemoryInfo)(self.memory) }
        }
    }
}
