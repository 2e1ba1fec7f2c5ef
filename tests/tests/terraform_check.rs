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
