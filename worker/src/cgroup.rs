//! A CPU cgroup that holds every shell run of this worker, so that the runs
//! together weigh as much as `weight` ordinary processes on a busy machine.
//!
//! A nice level alone does not protect the worker: the scheduler weighs each
//! process on its own, so a thousand runs at nice 10 still outweigh the
//! worker (and an etcd on the same machine) a hundredfold, and the worker
//! loses its lease to its own runs. In one cgroup they weigh as one.
//!
//! `GDTS_JOB_CGROUP=auto` (the default) makes `gdts-jobs-{worker id}-{pid}` next to
//! the worker in the cgroup v1 `cpu` hierarchy, or below the worker's cgroup
//! in cgroup v2 when that cgroup can delegate the `cpu` controller. Where
//! neither works (a read-only `/sys/fs/cgroup` in a container, say) the worker
//! says so once and runs go on with their nice level only.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `GDTS_JOB_CGROUP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSetting {
    Auto,
    Off,
    /// A cgroup directory to use (made if absent).
    Dir(PathBuf),
}

impl CgroupSetting {
    pub fn parse(raw: &str) -> Result<CgroupSetting, String> {
        match raw.trim() {
            "" | "auto" => Ok(CgroupSetting::Auto),
            "off" => Ok(CgroupSetting::Off),
            p if p.starts_with('/') => Ok(CgroupSetting::Dir(PathBuf::from(p))),
            other => Err(format!(
                "GDTS_JOB_CGROUP: {other:?} is neither auto, off nor an absolute path"
            )),
        }
    }
}

/// Which cgroup version a directory belongs to: where the weight goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

#[derive(Debug)]
pub struct JobCgroup {
    dir: PathBuf,
    procs: std::fs::File,
    /// Made by this worker (so removed by it), not given.
    made: bool,
}

impl JobCgroup {
    /// Sets up the cgroup for `setting`. `weight` is in cgroup v2 units
    /// (100 = one ordinary process). `Ok(None)` when off.
    pub fn open(
        setting: &CgroupSetting,
        worker_id: &str,
        weight: u32,
    ) -> Result<Option<JobCgroup>, String> {
        let name = format!("gdts-jobs-{worker_id}-{}", std::process::id());
        let (dir, version) = match setting {
            CgroupSetting::Off => return Ok(None),
            CgroupSetting::Dir(dir) => {
                // Only v2 directories have `cgroup.controllers`.
                let v2 = dir
                    .parent()
                    .is_some_and(|p| p.join("cgroup.controllers").exists());
                (dir.clone(), if v2 { Version::V2 } else { Version::V1 })
            }
            CgroupSetting::Auto => {
                let (dir, version) = auto_dir(&name)?;
                remove_stale(&dir, worker_id);
                (dir, version)
            }
        };
        let made = match std::fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(format!("could not make {}: {e}", dir.display())),
        };
        let weight_file = match version {
            Version::V1 => ("cpu.shares", (weight as u64 * 1024 / 100).max(2)),
            Version::V2 => ("cpu.weight", weight.clamp(1, 10_000) as u64),
        };
        let set = std::fs::write(dir.join(weight_file.0), weight_file.1.to_string());
        let procs = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("cgroup.procs"));
        match (set, procs) {
            (Ok(()), Ok(procs)) => Ok(Some(JobCgroup { dir, procs, made })),
            (Err(e), _) | (_, Err(e)) => {
                if made {
                    let _ = std::fs::remove_dir(&dir);
                }
                Err(format!("could not set up {}: {e}", dir.display()))
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves a process (a run just started) into the cgroup.
    pub fn add(&self, pid: u32) -> std::io::Result<()> {
        (&self.procs).write_all(pid.to_string().as_bytes())
    }

    /// Removes the cgroup if this worker made it; call once every run has
    /// ended (a cgroup is removable only when empty).
    pub fn remove(&self) {
        if self.made {
            if let Err(e) = std::fs::remove_dir(&self.dir) {
                tracing::debug!(error = %e, dir = %self.dir.display(), "job cgroup left behind");
            }
        }
    }
}

/// Removes what earlier lives of this worker id left (killed before they
/// could remove their cgroup). Only empty cgroups can be removed, so one in
/// use (a second worker with the same id) stays.
fn remove_stale(dir: &Path, worker_id: &str) {
    let (Some(parent), prefix) = (dir.parent(), format!("gdts-jobs-{worker_id}-")) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let pid = name.strip_prefix(&prefix);
        if pid.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Where `auto` puts the cgroup: beside the worker in the v1 `cpu`
/// hierarchy, else below it in v2.
fn auto_dir(name: &str) -> Result<(PathBuf, Version), String> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("could not read /proc/self/cgroup: {e}"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("could not read /proc/self/mountinfo: {e}"))?;
    if let Some(path) = v1_cpu_path(&own) {
        if let Some(mount) = mount_point(&mounts, |fs, options| {
            fs == "cgroup" && options.split(',').any(|o| o == "cpu")
        }) {
            return Ok((join(&mount, path).join(name), Version::V1));
        }
    }
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("no cgroup v1 cpu controller nor cgroup v2 here")?;
    let mount = mount_point(&mounts, |fs, _| fs == "cgroup2").ok_or("no cgroup2 mount")?;
    let parent = join(&mount, path);
    // The cpu controller must reach the new cgroup: delegate it from the
    // worker's cgroup. The kernel refuses while that cgroup holds processes
    // other than the root's (the no-internal-processes rule).
    std::fs::write(parent.join("cgroup.subtree_control"), "+cpu").map_err(|e| {
        format!(
            "cgroup v2: cannot delegate cpu below {}: {e}",
            parent.display()
        )
    })?;
    Ok((parent.join(name), Version::V2))
}

/// The worker's path in the v1 hierarchy that has the `cpu` controller.
fn v1_cpu_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == "cpu").then_some(path)
    })
}

/// The mount point of the first mount whose file system type and super
/// options satisfy `wanted` (from /proc/self/mountinfo).
fn mount_point(mountinfo: &str, wanted: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount = left.split(' ').nth(4)?;
        let mut right = right.split(' ');
        let (fs, _source, options) = (right.next()?, right.next()?, right.next()?);
        wanted(fs, options).then(|| PathBuf::from(mount))
    })
}

fn join(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        assert_eq!(CgroupSetting::parse("auto"), Ok(CgroupSetting::Auto));
        assert_eq!(CgroupSetting::parse(""), Ok(CgroupSetting::Auto));
        assert_eq!(CgroupSetting::parse("off"), Ok(CgroupSetting::Off));
        assert_eq!(
            CgroupSetting::parse("/sys/fs/cgroup/cpu/jobs"),
            Ok(CgroupSetting::Dir("/sys/fs/cgroup/cpu/jobs".into()))
        );
        assert!(CgroupSetting::parse("jobs").is_err());
    }

    #[test]
    fn finds_the_v1_cpu_hierarchy() {
        let own = "4:memory:/m\n2:cpu,cpuacct:/user.slice\n0::/\n";
        assert_eq!(v1_cpu_path(own), Some("/user.slice"));
        assert_eq!(v1_cpu_path("0::/system.slice/x.service\n"), None);
        let mounts = "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                      32 25 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let cpu = mount_point(mounts, |fs, o| {
            fs == "cgroup" && o.split(',').any(|x| x == "cpu")
        });
        assert_eq!(cpu, Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")));
        let v2 = mount_point(mounts, |fs, _| fs == "cgroup2");
        assert_eq!(v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(
            join(Path::new("/sys/fs/cgroup/cpu"), "/user.slice"),
            PathBuf::from("/sys/fs/cgroup/cpu/user.slice")
        );
    }
}
