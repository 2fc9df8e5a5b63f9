//! Device and dtype selection, done once at load time.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// Parses a dtype name as given on the command line.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(Error::InvalidInput(format!("unknown dtype {other:?}; expected f32, bf16 or f16"))),
    }
}

/// The name [`parse_dtype`] reads for a dtype.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        DType::F32 => "f32",
        _ => dtype.as_str(),
    }
}

/// `cpu` or `cuda:N`, as `--device` takes it.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
        candle_core::DeviceLocation::Cpu => "cpu".into(),
    }
}

/// `auto` (CUDA when this build has it and a GPU answers, else CPU), `cpu`, `cuda` or `cuda:N`.
pub fn select_device(s: &str) -> Result<Device> {
    let s = s.to_ascii_lowercase();
    match s.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            let (device, warning) = auto_choice(cfg!(feature = "cuda"), || cuda(0));
            if let Some(w) = warning {
                tracing::warn!("{w}");
            }
            Ok(device)
        }
        _ => {
            let ordinal = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest.strip_prefix(':').and_then(|n| n.parse().ok()).ok_or_else(|| {
                    Error::InvalidInput(format!("unknown device {s:?}; expected auto, cpu, cuda or cuda:N"))
                })?,
                None => {
                    return Err(Error::InvalidInput(format!(
                        "unknown device {s:?}; expected auto, cpu, cuda or cuda:N"
                    )))
                }
            };
            cuda(ordinal)
        }
    }
}

/// `--device auto`: the first GPU when this build has CUDA and it starts, else the CPU; the
/// warning to log when a CUDA build falls back (it names the error, so that a broken driver is
/// not mistaken for a machine without a GPU).
fn auto_choice(cuda_built: bool, first_gpu: impl FnOnce() -> Result<Device>) -> (Device, Option<String>) {
    if !cuda_built {
        return (Device::Cpu, None);
    }
    match first_gpu() {
        Ok(d) => (d, None),
        Err(e) => (Device::Cpu, Some(format!("--device auto: CUDA did not start ({e}); running on the CPU"))),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| Error::InvalidInput(format!("CUDA device {ordinal} is not usable: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> Result<Device> {
    Err(Error::InvalidInput(
        "this build has no CUDA support; rebuild with `--features cuda` or use --device cpu".into(),
    ))
}

/// Memory free for new tensors on `device`, in bytes: the driver's free count on CUDA, the
/// kernel's `MemAvailable` on the CPU; `None` where it cannot be read.
pub fn memory_available(device: &Device) -> Option<u64> {
    if device.is_cuda() {
        return cuda_free_memory(device);
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(feature = "cuda")]
fn cuda_free_memory(device: &Device) -> Option<u64> {
    device.synchronize().ok()?;
    let (free, _total) = candle_core::cuda_backend::cudarc::driver::result::mem_get_info().ok()?;
    Some(free as u64)
}

#[cfg(not(feature = "cuda"))]
fn cuda_free_memory(_device: &Device) -> Option<u64> {
    None
}

/// Device memory in use on CUDA, in bytes (the driver's count, all processes); `None` on other
/// devices or where it cannot be read (host memory: `janus bench` samples `RssAnon`).
pub fn memory_in_use(device: &Device) -> Option<u64> {
    if device.is_cuda() {
        return cuda_used_memory(device);
    }
    None
}

#[cfg(feature = "cuda")]
fn cuda_used_memory(device: &Device) -> Option<u64> {
    device.synchronize().ok()?;
    let (free, total) = candle_core::cuda_backend::cudarc::driver::result::mem_get_info().ok()?;
    Some((total - free) as u64)
}

#[cfg(not(feature = "cuda"))]
fn cuda_used_memory(_device: &Device) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(parse_dtype("BF16").unwrap(), DType::BF16);
        assert!(parse_dtype("f64").is_err());
        assert!(select_device("cpu").unwrap().is_cpu());
        assert!(select_device("tpu").is_err());
        assert!(select_device("auto").is_ok());
    }

    #[test]
    fn auto_falls_back_to_the_cpu_naming_the_cuda_error() {
        let failed = || Err(Error::InvalidInput("CUDA_ERROR_NO_DEVICE".into()));
        let (d, warning) = auto_choice(true, failed);
        assert!(d.is_cpu());
        let w = warning.expect("a CUDA build that falls back says why");
        assert!(w.contains("CUDA_ERROR_NO_DEVICE") && w.contains("CPU"), "{w}");
        let (d, warning) = auto_choice(false, || panic!("a CPU-only build does not try CUDA"));
        assert!(d.is_cpu() && warning.is_none());
    }
}
