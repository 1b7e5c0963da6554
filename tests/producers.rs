//! Runs each producer example of `docs/producers.md` (Python pika, Node
//! amqplib, curl through `POST /v1/jobs`) against a running keyrelay. The code
//! is extracted from the document, so what is documented is what is tested.
//! An example whose runtime or packages cannot be had is skipped, saying why on
//! the terminal.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{ADMIN_TOKEN, TestEnv, TestKey, TestPool};
use serde_json::Value;

const DOC: &str = include_str!("../docs/producers.md");

/// Say something on the real terminal, past the test harness's capture.
fn announce(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// The fenced block after `<!-- example: NAME -->`.
fn example(name: &str) -> String {
    let marker = format!("<!-- example: {name} -->");
    let start = DOC
        .find(&marker)
        .expect("example marker in docs/producers.md");
    let rest = &DOC[start + marker.len()..];
    let open = rest.find("```").expect("code fence");
    let body = &rest[open..];
    let first_line = body.find('\n').expect("fence line");
    let close = body[first_line..].find("\n```").expect("closing fence");
    body[first_line + 1..first_line + close + 1].to_string()
}

/// Packages for the examples live under the target directory and are reused.
fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("producers")
}

async fn run(
    program: &Path,
    args: &[&str],
    dir: &Path,
    envs: &[(&str, String)],
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .map_err(|_| format!("{} timed out", program.display()))?
        .map_err(|e| format!("{} cannot run: {e}", program.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A venv with pika, under the target directory; `Err` says why not.
async fn python_with_pika() -> Result<PathBuf, String> {
    let python = on_path("python3").ok_or("python3 is not installed")?;
    let venv = cache_dir().join("venv");
    let bin = venv.join("bin").join("python");
    std::fs::create_dir_all(cache_dir()).map_err(|e| e.to_string())?;
    if !bin.is_file() {
        run(
            &python,
            &["-m", "venv", &venv.display().to_string()],
            &cache_dir(),
            &[],
        )
        .await?;
    }
    if run(&bin, &["-c", "import pika"], &cache_dir(), &[])
        .await
        .is_err()
    {
        run(
            &bin,
            &["-m", "pip", "install", "-q", "pika"],
            &cache_dir(),
            &[],
        )
        .await?;
    }
    Ok(bin)
}

/// A directory with amqplib installed; `Err` says why not.
async fn node_with_amqplib() -> Result<(PathBuf, PathBuf), String> {
    let node = on_path("node").ok_or("node is not installed")?;
    let npm = on_path("npm").ok_or("npm is not installed")?;
    let dir = cache_dir().join("node");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    if !dir.join("node_modules/amqplib").is_dir() {
        run(
            &npm,
            &["install", "--silent", "--no-audit", "--no-fund", "amqplib"],
            &dir,
            &[],
        )
        .await?;
    }
    Ok((node, dir))
}

fn assert_succeeded(output: &str, id: &str) -> Value {
    let line = output
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    let result: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {output}"));
    assert_eq!(result["id"], id, "{output}");
    assert_eq!(result["status"], "succeeded", "{output}");
    result
}

/// `program` with its job line (the line starting `job_line`) replaced by
/// the snippet `NAME-KIND-job` of the document.
fn with_job(program: &str, job_line: &str, snippet: &str) -> String {
    let snippet = example(snippet);
    let mut replaced = false;
    let lines: Vec<String> = program
        .lines()
        .map(|line| {
            if !replaced && line.starts_with(job_line) {
                replaced = true;
                snippet.trim_end().to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(replaced, "no line starting {job_line:?}");
    lines.join("\n") + "\n"
}

/// The variants each example is run in: its own job, then the schema job
/// and the image job of the document, each checked for what it asks.
const VARIANTS: [&str; 3] = ["", "schema", "image"];

fn check_variant(result: &Value, variant: &str) {
    match variant {
        "schema" => {
            let json = &result["json"];
            assert!(
                json["name"].is_string() && json["hex"].is_string(),
                "{result}"
            );
        }
        "image" => {
            let text = result["text"].as_str().unwrap_or_default();
            assert!(text.contains("[saw 1 image(s)"), "{result}");
        }
        _ => {}
    }
}

/// A 1×1 PNG for the image examples.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0xfc, 0xcf, 0xc0, 0x50,
    0x0f, 0x00, 0x04, 0x85, 0x01, 0x80, 0x84, 0xa9, 0x8c, 0x21, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

#[actix::test]
async fn producer_examples_run_against_keyrelay() {
    let env = TestEnv::start_admin(vec![TestPool {
        name: "g",
        provider: "gemini",
        keys: vec![TestKey::new("k1", 1)],
    }])
    .await;
    let work = tempfile::tempdir().unwrap();
    let photo = work.path().join("photo.png");
    std::fs::write(&photo, PNG).unwrap();
    let base = vec![
        ("IMAGE", photo.display().to_string()),
        ("AMQP_URL", env.config.broker.url.clone()),
        ("KEYRELAY_QUEUE", env.queue("g")),
        ("KEYRELAY_URL", env.http_url()),
        ("KEYRELAY_POOL", "g".to_string()),
        ("KEYRELAY_ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
    ];
    let with_id = |id: &str| {
        let mut envs = base.clone();
        envs.push(("JOB_ID", id.to_string()));
        envs
    };
    let mut ran = Vec::new();

    match python_with_pika().await {
        Ok(python) => {
            let run = Variants {
                lang: "python",
                job_line: "job = {",
                script: "producer.py",
                id: "py-1",
            };
            run.all(&python, work.path(), &with_id).await;
            ran.push("python");
        }
        Err(why) => announce(&format!(
            "SKIPPED the Python (pika) producer example: {why}"
        )),
    }
    match node_with_amqplib().await {
        Ok((node, dir)) => {
            let run = Variants {
                lang: "node",
                job_line: "  const job = {",
                script: "producer.js",
                id: "node-1",
            };
            run.all(&node, &dir, &with_id).await;
            ran.push("node");
        }
        Err(why) => announce(&format!(
            "SKIPPED the Node (amqplib) producer example: {why}"
        )),
    }
    match (on_path("sh"), on_path("curl")) {
        (Some(sh), Some(_)) => {
            let run = Variants {
                lang: "curl",
                job_line: "  -d ",
                script: "submit.sh",
                id: "curl-1",
            };
            run.all(&sh, work.path(), &with_id).await;
            ran.push("curl");
        }
        _ => announce("SKIPPED the curl producer example: sh or curl is not installed"),
    }
    announce(&format!("producer examples run: {ran:?}"));
    env.finish().await;
}

/// One language's example, run as written and with each job snippet of the
/// document in place of its job line.
struct Variants {
    /// The example's name in the document (`python`, `node`, `curl`).
    lang: &'static str,
    /// How the example's job line starts.
    job_line: &'static str,
    /// The file the program is written to.
    script: &'static str,
    /// The job id of the plain run; each variant appends its name.
    id: &'static str,
}

impl Variants {
    async fn all(
        &self,
        interpreter: &Path,
        dir: &Path,
        with_id: &impl Fn(&str) -> Vec<(&'static str, String)>,
    ) {
        for variant in VARIANTS {
            let program = match variant {
                "" => example(self.lang),
                v => with_job(
                    &example(self.lang),
                    self.job_line,
                    &format!("{}-{v}-job", self.lang),
                ),
            };
            let script = dir.join(self.script);
            std::fs::write(&script, program).unwrap();
            let id = format!("{}{variant}", self.id);
            let out = run(
                interpreter,
                &[&script.display().to_string()],
                dir,
                &with_id(&id),
            )
            .await;
            let result = assert_succeeded(&out.unwrap_or_else(|e| panic!("{e}")), &id);
            check_variant(&result, variant);
        }
    }
}
