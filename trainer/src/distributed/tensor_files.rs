//! Safetensors files read and written piecewise, so no rank ever holds a whole model:
//! a rank reads the element ranges of its shards straight from the checkpoint's files
//! (single or sharded with an index), and the consolidated checkpoint is written one
//! tensor at a time behind a header that lists them all.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

fn invalid(path: &Path, why: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {why}", path.display()))
}

/// Element types: the float ones are read (converted to f32); others (buffers such as
/// `position_ids`) are listed but not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    F32,
    F16,
    BF16,
    F64,
    /// Any other type, with its element size.
    Other(usize),
}

impl Dtype {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "F64" => Dtype::F64,
            "I64" | "U64" => Dtype::Other(8),
            "I32" | "U32" => Dtype::Other(4),
            "I16" | "U16" => Dtype::Other(2),
            "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => Dtype::Other(1),
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::Other(size) => size,
        }
    }
}

struct Entry {
    file: Arc<File>,
    path: Arc<PathBuf>,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte offset of the first element.
    start: u64,
}

/// Every tensor of a set of safetensors files, by name; data read on demand.
pub struct TensorFiles {
    entries: HashMap<String, Entry>,
}

impl TensorFiles {
    /// Reads the headers of `paths` (no tensor data).
    pub fn open(paths: &[PathBuf]) -> std::io::Result<Self> {
        let mut entries = HashMap::new();
        for path in paths {
            let mut file = File::open(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let mut len = [0u8; 8];
            file.read_exact(&mut len)?;
            let len = u64::from_le_bytes(len);
            if len > 100 << 20 {
                return Err(invalid(path, format!("a header of {len} bytes")));
            }
            let mut header = vec![0u8; len as usize];
            file.read_exact(&mut header)?;
            let header: BTreeMap<String, Value> = serde_json::from_slice(&header).map_err(|e| invalid(path, e))?;
            let (file, shared_path) = (Arc::new(file), Arc::new(path.clone()));
            for (name, info) in header {
                if name == "__metadata__" {
                    continue;
                }
                let dtype = info["dtype"].as_str().ok_or_else(|| invalid(path, format!("{name}: no dtype")))?;
                let dtype = Dtype::parse(dtype).ok_or_else(|| invalid(path, format!("{name}: unknown dtype {dtype}")))?;
                let shape: Vec<usize> = serde_json::from_value(info["shape"].clone()).map_err(|e| invalid(path, format!("{name}: {e}")))?;
                let offsets: [u64; 2] = serde_json::from_value(info["data_offsets"].clone()).map_err(|e| invalid(path, format!("{name}: {e}")))?;
                let numel: usize = shape.iter().product();
                if offsets[1] - offsets[0] != (numel * dtype.size()) as u64 {
                    return Err(invalid(path, format!("{name}: data offsets do not match its shape")));
                }
                entries.insert(name, Entry { file: file.clone(), path: shared_path.clone(), dtype, shape, start: 8 + len + offsets[0] });
            }
        }
        Ok(Self { entries })
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Elements `from .. from + out.len()` of tensor `name` (row-major) into `out`, as f32.
    pub fn read_f32(&self, name: &str, from: usize, out: &mut [f32]) -> std::io::Result<()> {
        let e = self.entries.get(name).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no tensor {name}")))?;
        let numel: usize = e.shape.iter().product();
        if from + out.len() > numel {
            return Err(invalid(&e.path, format!("{name}: elements {from}..{} of {numel}", from + out.len())));
        }
        if let Dtype::Other(_) = e.dtype {
            return Err(invalid(&e.path, format!("{name} is not a float tensor")));
        }
        let size = e.dtype.size();
        // In pieces of at most 16 MiB, so reading a large tensor's range needs no copy of it.
        const CHUNK: usize = 4 << 20;
        let mut bytes = vec![0u8; out.len().min(CHUNK) * size];
        for (i, chunk) in out.chunks_mut(CHUNK).enumerate() {
            let buf = &mut bytes[..chunk.len() * size];
            e.file.read_exact_at(buf, e.start + ((from + i * CHUNK) * size) as u64)?;
            decode(e.dtype, buf, chunk);
        }
        Ok(())
    }
}

fn decode(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => out.iter_mut().zip(bytes.chunks_exact(4)).for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        Dtype::F64 => out.iter_mut().zip(bytes.chunks_exact(8)).for_each(|(o, b)| *o = f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
        Dtype::BF16 => out.iter_mut().zip(bytes.chunks_exact(2)).for_each(|(o, b)| *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)),
        Dtype::F16 => out.iter_mut().zip(bytes.chunks_exact(2)).for_each(|(o, b)| *o = f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
        Dtype::Other(_) => unreachable!("only float tensors are read"),
    }
}

/// IEEE half to single precision, exactly (subnormals, infinities and NaN included).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise the fraction.
            let shift = frac.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | ((frac << shift) & 0x3ff) << 13
        }
        (0x1f, _) => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// A safetensors file of f32 tensors written one tensor at a time, in the order its
/// header lists them (the header is written first, from the names and shapes).
pub struct SafetensorsWriter {
    out: BufWriter<File>,
    path: PathBuf,
    order: Vec<(String, Vec<usize>)>,
    next: usize,
    /// Elements of the next tensor written so far (it may come in parts).
    written: usize,
}

impl SafetensorsWriter {
    /// `tensors` (name, shape) in the order they will be written; `metadata` as
    /// safetensors' `__metadata__` (transformers wants `format: pt`).
    pub fn create(path: &Path, tensors: Vec<(String, Vec<usize>)>, metadata: &BTreeMap<String, String>) -> std::io::Result<Self> {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), json!(metadata));
        let mut offset = 0u64;
        for (name, shape) in &tensors {
            let bytes = 4 * shape.iter().product::<usize>() as u64;
            header.insert(name.clone(), json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes] }));
            offset += bytes;
        }
        let mut text = serde_json::to_vec(&Value::Object(header)).expect("JSON values serialise");
        // The data starts 8-byte aligned, as safetensors writes it.
        while !(8 + text.len()).is_multiple_of(8) {
            text.push(b' ');
        }
        let file = File::create(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut out = BufWriter::with_capacity(8 << 20, file);
        out.write_all(&(text.len() as u64).to_le_bytes())?;
        out.write_all(&text)?;
        Ok(Self { out, path: path.to_path_buf(), order: tensors, next: 0, written: 0 })
    }

    /// Writes the next tensor of the header's order whole (any device and float kind).
    pub fn write(&mut self, name: &str, t: &Tensor) -> std::io::Result<()> {
        let before = self.next;
        self.write_part(name, t)?;
        if self.next == before {
            return Err(invalid(&self.path, format!("{name}: {} elements written of more", t.numel())));
        }
        Ok(())
    }

    /// Writes the next elements (row-major) of the header's next tensor: a large
    /// tensor may come in parts, each copied out in pieces of 16 MiB.
    pub fn write_part(&mut self, name: &str, part: &Tensor) -> std::io::Result<()> {
        let Some((want, shape)) = self.order.get(self.next) else {
            return Err(invalid(&self.path, format!("{name}: more tensors than the header lists")));
        };
        let numel: usize = shape.iter().product();
        if want != name || self.written + part.numel() > numel {
            return Err(invalid(
                &self.path,
                format!("{name} ({} more elements) written where the header has {want} ({} of {numel} written)", part.numel(), self.written),
            ));
        }
        let flat = part.detach().reshape([-1]);
        const CHUNK: i64 = 4 << 20;
        let mut bytes = Vec::new();
        let mut at = 0;
        while at < flat.numel() as i64 {
            let len = CHUNK.min(flat.numel() as i64 - at);
            let chunk = flat.narrow(0, at, len).to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            bytes.resize(len as usize * 4, 0);
            chunk.f_copy_data_u8(&mut bytes, len as usize).map_err(|e| invalid(&self.path, e))?;
            self.out.write_all(&bytes)?;
            at += len;
        }
        self.written += part.numel();
        if self.written == numel {
            self.next += 1;
            self.written = 0;
        }
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        if self.next != self.order.len() || self.written != 0 {
            return Err(invalid(&self.path, format!("{} of {} tensors written", self.next, self.order.len())));
        }
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_decodes_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0200), 2f32.powi(-15));
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn a_streamed_file_reads_back_by_range_and_in_libtorch() {
        let dir = std::env::temp_dir().join(format!("absa-tensor-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let a = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([3, 4]);
        let b = Tensor::from_slice(&[0.5f32, -1.5]);
        let mut w =
            SafetensorsWriter::create(&path, vec![("b".into(), vec![2]), ("a".into(), vec![3, 4])], &BTreeMap::from([("format".into(), "pt".into())])).unwrap();
        assert!(w.write("a", &a).is_err(), "out of the header's order");
        w.write("b", &b).unwrap();
        w.write_part("a", &a.narrow(0, 0, 1)).unwrap();
        w.write_part("a", &a.narrow(0, 1, 2)).unwrap();
        w.finish().unwrap();
        let files = TensorFiles::open(std::slice::from_ref(&path)).unwrap();
        let mut out = [0f32; 5];
        files.read_f32("a", 6, &mut out).unwrap();
        assert_eq!(out, [6.0, 7.0, 8.0, 9.0, 10.0]);
        assert!(files.read_f32("a", 10, &mut out).is_err(), "past the end");
        let read: BTreeMap<String, Tensor> = Tensor::read_safetensors(&path).unwrap().into_iter().collect();
        assert!(read["a"].equal(&a) && read["b"].equal(&b));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
