//! What an ONNX file says about itself, read straight from its protobuf without a runtime: graph inputs and
//! outputs (name, element type, dimensions), `metadata_props`, opset and operator counts.
//!
//! The decoders are chosen from this before a runtime is loaded, and `reflex model inspect` prints it, so a
//! model can be inspected on a machine without ONNX Runtime. Only the few fields needed are decoded; the
//! weights (initializers) are skipped by length.

use std::collections::BTreeMap;
use std::fmt;

/// Element type of a tensor, as ONNX numbers them (`TensorProto.DataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    /// 32-bit float (1).
    F32,
    /// Unsigned byte (2).
    U8,
    /// 64-bit integer (7).
    I64,
    /// Boolean (9).
    Bool,
    /// Any other type, with its ONNX number.
    Other(i32),
}

impl ElemType {
    fn from_onnx(v: i32) -> Self {
        match v {
            1 => Self::F32,
            2 => Self::U8,
            7 => Self::I64,
            9 => Self::Bool,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::F32 => f.write_str("float32"),
            Self::U8 => f.write_str("uint8"),
            Self::I64 => f.write_str("int64"),
            Self::Bool => f.write_str("bool"),
            Self::Other(10) => f.write_str("float16"),
            Self::Other(11) => f.write_str("float64"),
            Self::Other(6) => f.write_str("int32"),
            Self::Other(n) => write!(f, "onnx type {n}"),
        }
    }
}

/// One dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A size decided at run time (`batch`, `height`, … or unnamed).
    Dynamic(String),
}

impl Dim {
    /// The fixed size, if there is one.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Self::Fixed(n) => Some(*n),
            Self::Dynamic(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Dynamic(s) if s.is_empty() => f.write_str("?"),
            Self::Dynamic(s) => f.write_str(s),
        }
    }
}

/// A graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name in the graph.
    pub name: String,
    /// Element type.
    pub elem: ElemType,
    /// Dimensions (empty when the file does not say).
    pub dims: Vec<Dim>,
}

impl TensorInfo {
    /// The dimensions as `[1, 3, height, width]`.
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(Dim::to_string).collect();
        format!("[{}]", dims.join(", "))
    }
}

impl fmt::Display for TensorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {} {}", self.name, self.elem, self.shape_string())
    }
}

/// The interface and metadata of an ONNX model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OnnxInfo {
    /// Graph inputs that are not weights, in order.
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs, in order.
    pub outputs: Vec<TensorInfo>,
    /// `metadata_props` (key → value).
    pub metadata: BTreeMap<String, String>,
    /// Default-domain opset version.
    pub opset: Option<i64>,
    /// Operator type → node count.
    pub ops: BTreeMap<String, usize>,
}

/// A malformed ONNX file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a readable ONNX model: {0}")]
pub struct OnnxParseError(pub String);

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, OnnxParseError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| OnnxParseError("truncated varint".into()))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(OnnxParseError("varint too long".into()))
    }

    /// The next (field number, value), or None at the end.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, OnnxParseError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (field, wire) = (key >> 3, key & 7);
        let value = match wire {
            0 => Field::Varint(self.varint()?),
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if self.pos + n > self.buf.len() {
                    return Err(OnnxParseError("truncated fixed field".into()));
                }
                self.pos += n;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| OnnxParseError("field too long".into()))?;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|&e| e <= self.buf.len())
                    .ok_or_else(|| {
                        OnnxParseError(format!("field {field} runs past the end of the file"))
                    })?;
                let bytes = &self.buf[self.pos..end];
                self.pos = end;
                Field::Bytes(bytes)
            }
            other => return Err(OnnxParseError(format!("unknown wire type {other}"))),
        };
        Ok(Some((field, value)))
    }
}

fn string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn value_info(buf: &[u8]) -> Result<TensorInfo, OnnxParseError> {
    let mut info = TensorInfo {
        name: String::new(),
        elem: ElemType::Other(0),
        dims: Vec::new(),
    };
    let mut r = Reader::new(buf);
    while let Some((field, value)) = r.next()? {
        match (field, value) {
            (1, Field::Bytes(b)) => info.name = string(b),
            // TypeProto → tensor_type (1) → elem_type (1), shape (2) → dim (1) → dim_value (1) | dim_param (2)
            (2, Field::Bytes(ty)) => {
                let mut r = Reader::new(ty);
                while let Some((field, value)) = r.next()? {
                    let (1, Field::Bytes(tensor)) = (field, value) else {
                        continue;
                    };
                    let mut r = Reader::new(tensor);
                    while let Some((field, value)) = r.next()? {
                        match (field, value) {
                            (1, Field::Varint(v)) => info.elem = ElemType::from_onnx(v as i32),
                            (2, Field::Bytes(shape)) => {
                                let mut r = Reader::new(shape);
                                while let Some((field, value)) = r.next()? {
                                    let (1, Field::Bytes(dim)) = (field, value) else {
                                        continue;
                                    };
                                    let mut d = Dim::Dynamic(String::new());
                                    let mut r = Reader::new(dim);
                                    while let Some((field, value)) = r.next()? {
                                        match (field, value) {
                                            (1, Field::Varint(v)) => d = Dim::Fixed(v as usize),
                                            (2, Field::Bytes(p)) => d = Dim::Dynamic(string(p)),
                                            _ => {}
                                        }
                                    }
                                    info.dims.push(d);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

impl OnnxInfo {
    /// Read the interface and metadata of the ONNX model in `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, OnnxParseError> {
        let mut info = OnnxInfo::default();
        let mut graph = None;
        let mut r = Reader::new(bytes);
        while let Some((field, value)) = r.next()? {
            match (field, value) {
                (7, Field::Bytes(g)) => graph = Some(g),
                (8, Field::Bytes(opset)) => {
                    let (mut domain, mut version) = (String::new(), None);
                    let mut r = Reader::new(opset);
                    while let Some((field, value)) = r.next()? {
                        match (field, value) {
                            (1, Field::Bytes(d)) => domain = string(d),
                            (2, Field::Varint(v)) => version = Some(v as i64),
                            _ => {}
                        }
                    }
                    if domain.is_empty() || domain == "ai.onnx" {
                        info.opset = version;
                    }
                }
                (14, Field::Bytes(prop)) => {
                    let (mut key, mut val) = (String::new(), String::new());
                    let mut r = Reader::new(prop);
                    while let Some((field, value)) = r.next()? {
                        match (field, value) {
                            (1, Field::Bytes(k)) => key = string(k),
                            (2, Field::Bytes(v)) => val = string(v),
                            _ => {}
                        }
                    }
                    info.metadata.insert(key, val);
                }
                _ => {}
            }
        }
        let graph = graph.ok_or_else(|| OnnxParseError("no graph".into()))?;
        let mut weights = std::collections::HashSet::new();
        let mut inputs = Vec::new();
        let mut r = Reader::new(graph);
        while let Some((field, value)) = r.next()? {
            let Field::Bytes(b) = value else { continue };
            match field {
                1 => {
                    let mut r = Reader::new(b);
                    while let Some((field, value)) = r.next()? {
                        if let (4, Field::Bytes(op)) = (field, value) {
                            *info.ops.entry(string(op)).or_default() += 1;
                        }
                    }
                }
                5 => {
                    let mut r = Reader::new(b);
                    while let Some((field, value)) = r.next()? {
                        if let (8, Field::Bytes(name)) = (field, value) {
                            weights.insert(string(name));
                        }
                    }
                }
                11 => inputs.push(value_info(b)?),
                12 => info.outputs.push(value_info(b)?),
                _ => {}
            }
        }
        info.inputs = inputs
            .into_iter()
            .filter(|i| !weights.contains(&i.name))
            .collect();
        if info.inputs.is_empty() {
            return Err(OnnxParseError("the graph has no input".into()));
        }
        if info.outputs.is_empty() {
            return Err(OnnxParseError("the graph has no output".into()));
        }
        Ok(info)
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&TensorInfo> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// Output names, comma-separated, for messages.
    pub fn output_names(&self) -> String {
        let names: Vec<String> = self.outputs.iter().map(|o| o.to_string()).collect();
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_bundled_model_interface() {
        let info = OnnxInfo::parse(super::super::BUILTIN_MODEL_ONNX).unwrap();
        assert_eq!(info.inputs.len(), 1);
        assert_eq!(info.inputs[0].name, "Placeholder");
        assert_eq!(info.inputs[0].elem, ElemType::F32);
        assert_eq!(info.inputs[0].shape_string(), "[1, 480, 640, 3]");
        let names: Vec<&str> = info.outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["Sigmoid", "pose/locref_pred/block4/BiasAdd"]);
        assert_eq!(info.outputs[0].shape_string(), "[1, 60, 80, 4]");
        assert_eq!(info.opset, Some(17));
        assert!(info.ops.contains_key("Conv"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\xff\xff\xff", b"\x3a\x10abc", b"hello world"] {
            assert!(OnnxInfo::parse(bytes).is_err());
        }
    }
}
