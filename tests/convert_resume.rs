//! Kill + resume through the binary: SIGKILL at pseudo-random moments, then `--resume` until
//! done must give the uninterrupted run's bytes exactly; a corrupted finished tensor in the
//! `.part` must be caught by the journal's verification; SIGINT stops cleanly and resumes; the
//! wrong use of `--resume` is a clear error.

#[path = "convert_support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    out: PathBuf,
    reference: Vec<u8>,
    /// Wall time of the uninterrupted conversion.
    full: Duration,
}

fn setup() -> Setup {
    let cfg = grok1_quant::checkpoint::preset("small").expect("small preset");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ck");
    support::synth(&root, &cfg, 3);
    let reference_path = dir.path().join("ref.gguf");
    let t = Instant::now();
    let o = cmd(&root, &reference_path, &[]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let full = t.elapsed();
    let reference = std::fs::read(&reference_path).unwrap();
    Setup {
        out: dir.path().join("out.gguf"),
        _dir: dir,
        root,
        reference,
        full,
    }
}

fn cmd(root: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_grok1-quant"));
    c.arg("convert")
        .arg(root)
        .arg("-o")
        .arg(out)
        .args(["--type", "q8_0", "-q", "--config"])
        .arg(root.join("config.json"))
        .args(extra)
        // A pause per band, so runs are reliably killed mid-way however fast the machine is.
        .env("GROK1_QUANT_THROTTLE_MS", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn with_ext(p: &Path, ext: &str) -> PathBuf {
    PathBuf::from(format!("{}{ext}", p.display()))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn wait_for(p: &Path, child: &mut Child) {
    let t = Instant::now();
    while !p.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "converter exited before creating {}",
            p.display()
        );
        assert!(t.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Wait until the journal records a finished tensor (or the converter has exited).
fn wait_for_journaled_tensor(journal: &Path, child: &mut Child) {
    let t = Instant::now();
    while !std::fs::read_to_string(journal).is_ok_and(|j| j.contains("done ")) {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `--resume` (or a fresh run when no `.part` exists) until the final file appears.
fn finish(s: &Setup) -> String {
    let mut last = String::new();
    for _ in 0..5 {
        let extra: &[&str] = if with_ext(&s.out, ".part").exists() {
            &["--resume"]
        } else {
            &[]
        };
        let o = cmd(&s.root, &s.out, extra).output().unwrap();
        last = stderr_of(&o);
        if o.status.success() {
            return last;
        }
    }
    panic!("resume never succeeded: {last}");
}

fn assert_identical(s: &Setup) {
    let got = std::fs::read(&s.out).unwrap();
    assert!(
        got == s.reference,
        "resumed output differs from the reference"
    );
    assert!(!with_ext(&s.out, ".part").exists());
    assert!(!with_ext(&s.out, ".journal").exists());
}

/// SIGKILL at ≥ 20 pseudo-random moments in all. The kills form chains: each chain starts a
/// fresh conversion, is killed and resumed (killed again, …) until a run gets through, and its
/// result must be the uninterrupted run's bytes; then the next chain starts from nothing.
#[test]
fn sigkill_at_random_moments_then_resume_is_byte_identical() {
    const KILLS: usize = 20;
    const PER_CHAIN: usize = 5;
    let s = setup();
    let mut rng = Rng(0x5eed_1234);
    // Short delays so that most runs die mid-way even as the remaining work shrinks.
    let span = (s.full.as_millis() as u64 / 4).max(50);
    let mut kills = 0;
    let mut chains = 0;
    let mut chain_start = 0;
    let mut journals_with_work = 0;
    for round in 0..120 {
        if kills >= KILLS {
            break;
        }
        let extra: &[&str] = if with_ext(&s.out, ".part").exists() {
            &["--resume"]
        } else {
            &[]
        };
        let mut child = cmd(&s.root, &s.out, extra).spawn().unwrap();
        // Kills after the .part exists, after a tensor is journaled (however long the first,
        // large tensor takes on a loaded machine), or at any moment from the start.
        match round % 3 {
            0 => wait_for(&with_ext(&s.out, ".part"), &mut child),
            1 => wait_for_journaled_tensor(&with_ext(&s.out, ".journal"), &mut child),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(rng.next() % span));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap_or(()); // SIGKILL
        let status = child.wait().unwrap();
        let killed = !finished && !status.success();
        if killed {
            kills += 1;
            let j = with_ext(&s.out, ".journal");
            if std::fs::read_to_string(&j).is_ok_and(|t| t.contains("done ")) {
                journals_with_work += 1;
            }
        }
        // End the chain when a run got through or after enough kills: resume to the end,
        // compare, and start the next chain from an empty directory.
        let chain_kills = kills - chain_start;
        if s.out.exists() || chain_kills >= PER_CHAIN || kills >= KILLS {
            if !s.out.exists() {
                let msg = finish(&s);
                assert!(!msg.contains("panicked"), "{msg}");
            }
            assert_identical(&s);
            std::fs::remove_file(&s.out).unwrap();
            chains += 1;
            chain_start = kills;
        }
    }
    eprintln!("{kills} SIGKILLs in {chains} chains; {journals_with_work} left finished tensors");
    assert!(kills >= KILLS, "only {kills} runs were killed mid-way");
    assert!(chains >= 4, "only {chains} kill/resume chains");
    assert!(
        journals_with_work >= 4,
        "only {journals_with_work} kills left finished tensors behind"
    );
}

#[test]
fn corrupted_finished_tensor_is_redone() {
    let s = setup();
    // Interrupt with SIGINT once some tensors are finished.
    let j = with_ext(&s.out, ".journal");
    let part = with_ext(&s.out, ".part");
    let mut child = cmd(&s.root, &s.out, &[]).spawn().unwrap();
    let t = Instant::now();
    while !std::fs::read_to_string(&j).is_ok_and(|t| t.matches("done ").count() >= 3) {
        assert!(child.try_wait().unwrap().is_none(), "finished too early");
        assert!(t.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let o = child.wait_with_output().unwrap();
    let msg = stderr_of(&o);
    assert!(!o.status.success(), "SIGINT run succeeded: {msg}");
    assert!(
        msg.contains("interrupted") && msg.contains("--resume"),
        "SIGINT message: {msg}"
    );
    assert!(!s.out.exists());
    assert!(part.exists());
    // Flip a byte in the middle of every tensor the journal says is finished.
    let done: Vec<usize> = std::fs::read_to_string(&j)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("done "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(!done.is_empty());
    let f = grok1_quant::gguf::GgufFile::open(&part).unwrap();
    let offsets: Vec<u64> = done
        .iter()
        .map(|&t| f.tensors()[t].offset + f.tensors()[t].size / 2)
        .collect();
    drop(f);
    let mut bytes = std::fs::read(&part).unwrap();
    for at in offsets {
        bytes[at as usize] ^= 0x40;
    }
    std::fs::write(&part, bytes).unwrap();
    let o = cmd(&s.root, &s.out, &["--resume"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_identical(&s);
}

#[test]
fn resume_misuse_is_a_clear_error() {
    let s = setup();
    // Nothing to resume.
    let o = cmd(&s.root, &s.out, &["--resume"]).output().unwrap();
    let msg = stderr_of(&o);
    assert!(!o.status.success());
    assert!(msg.contains("nothing to resume"), "{msg}");
    assert!(!s.out.exists());
    // A .part without --resume: refused, suggesting --resume.
    let mut child = cmd(&s.root, &s.out, &[]).spawn().unwrap();
    wait_for(&with_ext(&s.out, ".part"), &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let before = std::fs::read(with_ext(&s.out, ".part")).unwrap();
    let o = cmd(&s.root, &s.out, &[]).output().unwrap();
    let msg = stderr_of(&o);
    assert!(!o.status.success());
    assert!(msg.contains("--resume") && msg.contains(".part"), "{msg}");
    assert_eq!(std::fs::read(with_ext(&s.out, ".part")).unwrap(), before);
    // The journal of another plan (other type) is refused rather than mixed in.
    let o = cmd(&s.root, &s.out, &["--resume", "--name", "other"])
        .output()
        .unwrap();
    let msg = stderr_of(&o);
    assert!(!o.status.success(), "resumed another plan: {msg}");
    assert!(msg.contains("different conversion"), "{msg}");
    // The real resume still completes identically.
    let o = cmd(&s.root, &s.out, &["--resume"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_identical(&s);
}
