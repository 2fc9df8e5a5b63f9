//! `janus serve` on a broken model directory: it must exit non-zero within seconds, with one
//! `error:` line naming the file (and the tensor and shapes where they are the problem), and
//! never a panic. The model library's own messages are tested in `model/tests/loading.rs`; this
//! checks they reach the operator through the real binary.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

fn tiny_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny").join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A copy of the sharded tiny model in a temporary directory.
fn sharded_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir("janus-pro-tiny-sharded"), tmp.path());
    tmp
}

const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";

/// Tensors the model loads (others, such as the VQ encoder, are ignored by the loader).
fn is_loaded(name: &str) -> bool {
    ["language_model.", "gen_head.", "gen_embed.", "gen_aligner.", "gen_vision_model.decoder."]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Rewrites `shard` with `edit` applied to its (name → (dtype, shape, bytes)) map.
fn edit_shard(shard: &Path, edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(shard).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut ts: Vec<_> =
        st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    ts.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut ts);
    let views: Vec<(String, TensorView)> =
        ts.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(shard, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Runs `janus serve` on `dir` and returns its stderr, asserting a quick, non-zero, one-error-line
/// exit without a panic.
fn serve_fails(dir: &Path) -> String {
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["serve", "--device", "cpu", "--host", "127.0.0.1", "--port", "0", "--model"])
        .arg(dir)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("JANUS_MODEL")
        .env_remove("JANUS_LOG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run janus serve");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("janus serve on {} did not exit within 30 s", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!status.success(), "janus serve should fail on {}; stderr:\n{stderr}", dir.display());
    assert!(!stderr.contains("panicked") && !stderr.contains("stack backtrace"), "a panic reached stderr:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected exactly one `error:` line:\n{stderr}");
    assert!(errors[0].contains("failed to load"), "{stderr}");
    errors[0].to_string()
}

#[test]
fn a_missing_shard_is_named() {
    let tmp = sharded_copy();
    std::fs::remove_file(tmp.path().join(SHARD2)).unwrap();
    let e = serve_fails(tmp.path());
    assert!(e.contains(SHARD2), "{e}");
}

#[test]
fn a_truncated_file_is_named() {
    let tmp = sharded_copy();
    let shard = tmp.path().join(SHARD2);
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&shard).unwrap().set_len(len / 2).unwrap();
    let e = serve_fails(tmp.path());
    assert!(e.contains(SHARD2), "{e}");

    // A truncated PyTorch checkpoint too.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir("janus-pro-tiny"), tmp.path());
    let bin = tmp.path().join("pytorch_model.bin");
    let len = std::fs::metadata(&bin).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&bin).unwrap().set_len(len / 2).unwrap();
    let e = serve_fails(tmp.path());
    assert!(e.contains("pytorch_model.bin"), "{e}");
}

#[test]
fn a_wrong_shape_names_file_tensor_and_shapes() {
    let tmp = sharded_copy();
    let mut name = String::new();
    edit_shard(&tmp.path().join(SHARD1), |ts| {
        let t = ts.iter_mut().find(|(n, d, s, _)| is_loaded(n) && *d == Dtype::F32 && s.len() == 2).unwrap();
        name = t.0.clone();
        t.2 = vec![3, 5];
        t.3 = vec![0u8; 3 * 5 * 4];
    });
    let e = serve_fails(tmp.path());
    assert!(e.contains(&name) && e.contains("[3, 5]") && e.contains("model-00001-of-00002"), "{e}");
}

#[test]
fn a_missing_tensor_is_named() {
    let tmp = sharded_copy();
    let mut name = String::new();
    edit_shard(&tmp.path().join(SHARD1), |ts| {
        let i = ts.iter().position(|(n, ..)| is_loaded(n)).unwrap();
        name = ts.remove(i).0;
    });
    let e = serve_fails(tmp.path());
    assert!(e.contains(&name) && e.contains("missing"), "{e}");
}

#[test]
fn a_directory_without_weights_is_named() {
    let tmp = sharded_copy();
    for f in [SHARD1, SHARD2, "model.safetensors.index.json"] {
        std::fs::remove_file(tmp.path().join(f)).unwrap();
    }
    let e = serve_fails(tmp.path());
    assert!(e.contains("no weights"), "{e}");
}
