//! The Terraform module (`manifests/terraform`) with the real Terraform and the
//! hashicorp/aws provider from the machine image's filesystem mirror — nothing is
//! downloaded: formatting, `init` offline, `validate` of the module and the example;
//! then the example applied against the AWS emulator (moto, through the provider's
//! `endpoints`), `logferry run` configured from its outputs shipping a kubelet
//! simulator's node into what it created, every line read back, and `destroy` leaving
//! nothing behind.
//!
//! Terraform is `$LOGFERRY_TERRAFORM`, else `terraform` on the PATH; the mirror is
//! `$LOGFERRY_TF_MIRROR`, else `/opt/tf-plugins`. Missing, the tests fail saying so.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::aws::{logferry_command, Moto};
use crate::node::{assert_exactly_once, Node, Shipper};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn terraform() -> PathBuf {
    if let Some(path) = std::env::var_os("LOGFERRY_TERRAFORM") {
        return path.into();
    }
    let found = std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("terraform")).find(|p| p.is_file()));
    found.unwrap_or_else(|| panic!("terraform not found on the PATH (nor $LOGFERRY_TERRAFORM): the Terraform tests need Terraform ≥ 1.5, which the machine image ships"))
}

fn mirror() -> PathBuf {
    let dir: PathBuf = std::env::var_os("LOGFERRY_TF_MIRROR").map(PathBuf::from).unwrap_or_else(|| "/opt/tf-plugins".into());
    let provider = dir.join("registry.terraform.io/hashicorp/aws");
    assert!(
        provider.is_dir(),
        "{} not found: the Terraform tests install hashicorp/aws from a local filesystem mirror (no network); point $LOGFERRY_TF_MIRROR at one",
        provider.display()
    );
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        // A developer's local state is not part of the module.
        if name.to_str().is_some_and(|n| n.starts_with(".terraform") || n.ends_with(".tfstate") || n.ends_with(".tfstate.backup")) {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(name));
        } else {
            fs::copy(entry.path(), to.join(name)).unwrap();
        }
    }
}

/// A copy of `manifests/terraform` and `manifests/iam` (the module reads `../iam`), and
/// a CLI configuration that installs providers from the mirror only.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join("manifests/terraform"), &dir.path().join("manifests/terraform"));
        copy_dir(&repo().join("manifests/iam"), &dir.path().join("manifests/iam"));
        let rc = format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{}\"\n    include = [\"registry.terraform.io/hashicorp/aws\"]\n  }}\n  direct {{\n    exclude = [\"registry.terraform.io/*/*\"]\n  }}\n}}\n",
            mirror().display()
        );
        fs::write(dir.path().join("terraformrc"), rc).unwrap();
        Self { dir }
    }

    fn path(&self, at: &str) -> PathBuf {
        self.dir.path().join("manifests/terraform").join(at)
    }

    /// `terraform args` in `at` (relative to the module): no network (mirror only, no
    /// version check), no prompts, no colours.
    fn run(&self, at: &str, args: &[&str]) -> Output {
        Command::new(terraform())
            .args(args)
            .current_dir(self.path(at))
            .env("TF_CLI_CONFIG_FILE", self.dir.path().join("terraformrc"))
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("NO_COLOR", "1")
            .env_remove("TF_PLUGIN_CACHE_DIR")
            .env_remove("AWS_PROFILE")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", terraform().display()))
    }

    fn ok(&self, at: &str, args: &[&str]) -> String {
        let out = self.run(at, args);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "terraform {args:?} in {at:?} failed:\n{text}");
        text
    }

    fn init(&self, at: &str) {
        let text = self.ok(at, &["init", "-no-color", "-input=false"]);
        assert!(text.contains("hashicorp/aws") && text.contains("Terraform has been successfully initialized"), "{text}");
    }
}

#[test]
fn the_module_is_formatted_and_it_and_its_example_validate_offline() {
    let out = Command::new(terraform()).args(["fmt", "-check", "-recursive", "-diff", "-no-color"]).current_dir(repo().join("manifests/terraform")).output().unwrap();
    assert!(out.status.success(), "terraform fmt -check: not formatted (run `terraform fmt -recursive manifests/terraform`):\n{}", String::from_utf8_lossy(&out.stdout));
    let ws = Workspace::new();
    for at in [".", "examples/eks-stack"] {
        ws.init(at);
        let text = ws.ok(at, &["validate", "-no-color"]);
        assert!(text.contains("The configuration is valid"), "{at}: {text}");
    }
    let versions = fs::read_to_string(repo().join("manifests/terraform/versions.tf")).unwrap();
    assert!(versions.contains("required_version = \">= 1.5\"") && versions.contains("version = \">= 5.0\""), "{versions}");
}

/// The provider pointed at moto: an override file beside the example's provider block.
fn point_at(ws: &Workspace, endpoint: &str) {
    let services = ["s3", "iam", "sts", "firehose", "logs", "eks"].map(|s| format!("    {s} = \"{endpoint}\"\n")).concat();
    let text = format!(
        "provider \"aws\" {{\n  region                      = \"us-east-1\"\n  access_key                  = \"testing\"\n  secret_key                  = \"testing\"\n  skip_credentials_validation = true\n  skip_metadata_api_check     = true\n  s3_use_path_style           = true\n  endpoints {{\n{services}  }}\n}}\n"
    );
    fs::write(ws.path("examples/eks-stack/moto_override.tf"), text).unwrap();
}

const IRSA: &[&str] = &["-var", "trust=irsa", "-var", "oidc_provider_arn=arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/TESTCLUSTER"];

/// The example applied against the emulator with IRSA trust (moto has no Pod Identity
/// API: that variant is planned), logferry configured from its outputs ships a node
/// into the stream, the bucket and the log group, every line is read back; destroy
/// leaves nothing.
#[test]
fn the_example_applies_logferry_ships_into_what_it_created_and_destroy_removes_it() {
    let moto = Moto::start();
    let ws = Workspace::new();
    let stack = "examples/eks-stack";
    point_at(&ws, &moto.endpoint);
    ws.init(stack);

    // Bad input is refused with the variable's own message.
    let out = ws.run(stack, &["plan", "-no-color", "-var", "trust=iam"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("trust: \"pod_identity\" or \"irsa\""), "{text}");
    // Pod Identity (the default): the association is planned.
    let plan = ws.ok(stack, &["plan", "-no-color", "-var", "cloudwatch=true"]);
    assert!(plan.contains("module.logferry.aws_eks_pod_identity_association.logferry[0] will be created"), "{plan}");
    assert!(plan.contains("\"pods.eks.amazonaws.com\""), "the Pod Identity trust policy: {plan}");

    let vars: Vec<&str> = [IRSA, &["-var", "cloudwatch=true", "-var", "bucket_force_destroy=true"][..]].concat();
    ws.ok(stack, &[&["apply", "-no-color", "-auto-approve"][..], &vars[..]].concat());
    let outputs: Value = serde_json::from_str(&ws.ok(stack, &["output", "-json"])).unwrap();
    let out = |name: &str| outputs[name]["value"].as_str().unwrap_or_else(|| panic!("output {name}: {outputs}")).to_string();
    let (bucket, stream, group, role) = (out("bucket"), out("firehose_stream_name"), out("log_group"), out("role_arn"));
    assert_eq!((bucket.as_str(), stream.as_str(), group.as_str()), ("my-cluster-logs-example", "logferry-prod-logs", "/eks/my-cluster/containers"));

    check_role_policies(&moto, role.rsplit('/').next().unwrap());

    // The rendered [sinks…], pointed at the emulator, run on a simulated node.
    let node = Node::new();
    let mut sinks = out("sinks_toml");
    for (kind, quick) in [("firehose", "linger = \"200ms\""), ("s3", "object_max_age = \"1s\""), ("cloudwatch", "linger = \"200ms\"")] {
        let head = format!("type = \"{kind}\"\n");
        assert!(sinks.contains(&head), "no {kind} sink in:\n{sinks}");
        sinks = sinks.replace(&head, &format!("{head}endpoint = \"{}\"\n{quick}\n", moto.endpoint));
    }
    let config = node.sinks_config("", &sinks);
    let check = logferry_command().env("NODE_NAME", "n1").args(["check", "--config", config.to_str().unwrap()]).output().unwrap();
    assert!(check.status.success(), "logferry check of the module's sinks:\n{}\n{sinks}", String::from_utf8_lossy(&check.stderr));
    let mut cmd = logferry_command();
    cmd.env("NODE_NAME", "n1");
    let mut shipper = Shipper::start(cmd, &config, node.root().join("shipper.jsonl"));
    let written = crate::kubelet::run_cri(
        node.root(),
        &["--pods", "3", "--containers-per-pod", "2", "--rate", "300", "--duration", "4", "--seed", "20", "--max-files", "5", "--long-every", "50"],
    );
    let (s3, firehose, cloudwatch) = wait_for_three(&moto, &bucket, &group, written.len());
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    assert_exactly_once(s3, &written);
    assert_exactly_once(firehose, &written);
    assert_exactly_once(cloudwatch, &written);

    ws.ok(stack, &[&["destroy", "-no-color", "-auto-approve"][..], &vars[..]].concat());
    let left: Value = serde_json::from_slice(&moto.helper(&["inventory", &moto.endpoint])).unwrap();
    for kind in ["buckets", "streams", "roles", "log_groups"] {
        assert_eq!(left[kind], serde_json::json!([]), "destroy left {kind}: {left}");
    }
}

/// The messages in the bucket under the s3 sink's prefix, under Firehose's, and in the
/// log group, once each holds `n` (or a minute passed).
fn wait_for_three(moto: &Moto, bucket: &str, group: &str, n: usize) -> (Vec<String>, Vec<String>, Vec<String>) {
    let message = |line: &str| serde_json::from_str::<Value>(line).unwrap()["message"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let objects: Value = serde_json::from_slice(&moto.helper(&["s3-objects", &moto.endpoint, bucket])).unwrap();
        let (mut s3, mut firehose) = (Vec::new(), Vec::new());
        for o in objects.as_array().unwrap() {
            let into = if o["key"].as_str().unwrap().starts_with("logs/") { &mut s3 } else { &mut firehose };
            into.extend(o["lines"].as_array().unwrap().iter().map(|l| message(l.as_str().unwrap())));
        }
        let logs: Value = serde_json::from_slice(&moto.helper(&["logs-read", &moto.endpoint, group])).unwrap();
        let cloudwatch: Vec<String> = logs["streams"].as_object().map(|s| s.values().flat_map(|v| v.as_array().unwrap().iter().map(|l| message(l.as_str().unwrap()))).collect()).unwrap_or_default();
        if (s3.len() >= n && firehose.len() >= n && cloudwatch.len() >= n) || Instant::now() > deadline {
            return (s3, firehose, cloudwatch);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The role's policies are manifests/iam/*.json with the example names replaced by
/// what was created (the module reads the files), and its trust is the IRSA file's.
fn check_role_policies(moto: &Moto, role: &str) {
    let got: Value = serde_json::from_slice(&moto.helper(&["role-policies", &moto.endpoint, role])).unwrap();
    let file = |name: &str, replace: &[(&str, &str)]| -> Value {
        let mut text = fs::read_to_string(repo().join("manifests/iam").join(name)).unwrap();
        for (from, to) in replace {
            assert!(text.contains(from), "{name} no longer names {from}");
            text = text.replace(from, to);
        }
        serde_json::from_str(&text).unwrap()
    };
    let account = [("111122223333", "123456789012")];
    assert_eq!(got["logferry-prod-firehose"], file("firehose-policy.json", &[("deliverystream/logferry", "deliverystream/logferry-prod-logs"), account[0]]));
    assert_eq!(got["logferry-prod-s3"], file("s3-policy.json", &[("my-logs/", "my-cluster-logs-example/")]));
    assert_eq!(got["logferry-prod-cloudwatch"], file("cloudwatch-logs-policy.json", &account));
    let issuer = "oidc.eks.us-east-1.amazonaws.com/id/TESTCLUSTER";
    let trust = file("irsa-trust-policy.json", &[("oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE", issuer), account[0]]);
    assert_eq!(got["trust"], trust);
}
