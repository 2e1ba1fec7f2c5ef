//! `scripts/tf-check.sh` (behind `make tf-check`) bites: a copy of
//! terraform/ with bad formatting fails it, and so does a copy with a
//! firewall rule open to the world. (`make test` runs it on the real tree.)

use std::path::Path;
use std::process::Command;

use gdts_tests::workspace_root;

fn copy_of_terraform() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("gdts-tf-").tempdir()?;
    let status = Command::new("cp")
        .arg("-r")
        .arg(workspace_root().join("terraform/."))
        .arg(dir.path())
        .status()?;
    anyhow::ensure!(status.success(), "copying terraform/ failed");
    Ok(dir)
}

fn tf_check(dir: &Path) -> anyhow::Result<(bool, String)> {
    let out = Command::new(workspace_root().join("scripts/tf-check.sh"))
        .arg(dir)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[test]
fn badly_formatted_terraform_fails_the_check() -> anyhow::Result<()> {
    let dir = copy_of_terraform()?;
    let variables = dir.path().join("variables.tf");
    let text = std::fs::read_to_string(&variables)?;
    let broken = text.replacen("  type        = string", "  type = string", 1);
    assert_ne!(broken, text, "the edit must change the file");
    std::fs::write(&variables, broken)?;
    let (passed, output) = tf_check(dir.path())?;
    assert!(
        !passed,
        "tf-check passed on a badly formatted tree:\n{output}"
    );
    assert!(
        output.contains("variables.tf"),
        "the failure should name the file:\n{output}"
    );
    Ok(())
}

#[test]
fn a_firewall_open_to_the_world_fails_the_check() -> anyhow::Result<()> {
    let dir = copy_of_terraform()?;
    let open_rule = r#"resource "google_compute_firewall" "ssh_from_anywhere" {
  project       = var.project_id
  name          = "${var.name}-ssh-anywhere"
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  source_ranges = ["0.0.0.0/0"]
  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
}
"#;
    std::fs::write(dir.path().join("modules/network/open.tf"), open_rule)?;
    let (passed, output) = tf_check(dir.path())?;
    assert!(
        !passed,
        "tf-check passed with SSH open to the world:\n{output}"
    );
    assert!(
        output.contains("ssh_from_anywhere"),
        "checkov should name the rule:\n{output}"
    );
    assert!(
        output.contains("tf-check: checkov"),
        "it should fail in checkov, after fmt and validate:\n{output}"
    );
    Ok(())
}

/// The plan step of tf-check (scripts/tfplan) evaluates the configuration
/// against the providers' real schemas: each deliberately broken copy of
/// terraform/ (an unknown argument or block, a missing required argument,
/// wrong types, an undefined variable or module input, a for_each over a
/// sensitive value) fails the plan with Terraform's own message, and the
/// unbroken tree plans (scripts/tfplan/test_plan_check.py).
#[test]
fn the_offline_plan_refuses_broken_copies() -> anyhow::Result<()> {
    let root = workspace_root();
    // tf-check installs the tools (make test runs it before the tests).
    let python = root.join(".venv-tf/bin/python");
    anyhow::ensure!(
        python.exists(),
        "{} is missing: run scripts/tf-check.sh first",
        python.display()
    );
    let out = Command::new(python)
        .arg(root.join("scripts/tfplan/test_plan_check.py"))
        .arg(root.join("terraform"))
        .arg(root.join("terraform/terraform.tfvars.example"))
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "broken copies passed the plan:\n{text}"
    );
    assert!(text.contains("9 of 9 checks as expected"), "{text}");
    Ok(())
}
