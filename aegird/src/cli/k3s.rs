//! `aegir cluster bootstrap-k3s`: installs the bundled k3s profile on this host, locally.
//!
//! The profile (`k3s/` in the repository, `/usr/share/aegir/k3s` once packaged) holds a k3s
//! config drop-in and auto-deploy manifests. They are copied into k3s's own directories, each
//! file written atomically and left alone when it is already as it should be, so the command
//! can be run again at any time. Without k3s on the host nothing is written: the report says
//! how to install k3s first.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::aegir::exit;

/// Where the packages install the profile.
pub const DEFAULT_PROFILE_DIR: &str = "/usr/share/aegir/k3s";

/// The ACME account email in the profile's ClusterIssuers, replaced by `--email`. `.invalid`
/// never resolves, so an issuer that somehow kept it fails loudly instead of mailing a stranger.
pub const EMAIL_PLACEHOLDER: &str = "hostmaster@example.invalid";

/// k3s merges every `*.yaml` here into its configuration when it starts.
const CONFIG_DIR: &str = "etc/rancher/k3s/config.yaml.d";
/// k3s applies every manifest here (and re-applies it when it changes) while it runs.
const MANIFESTS_DIR: &str = "var/lib/rancher/k3s/server/manifests";
/// Installed manifests are named `aegir-<profile name>`: they sit beside k3s's own
/// (coredns.yaml, traefik.yaml...) and must neither clash with them nor be mistaken for them.
const MANIFEST_PREFIX: &str = "aegir-";

/// The drop-in holds no secret and k3s's config directory is world-readable.
const CONFIG_MODE: u32 = 0o644;
/// As k3s writes its own manifests: they may one day carry secrets, and only root applies them.
const MANIFEST_MODE: u32 = 0o600;
/// How many of the last directories of a destination are root-only when this command has to
/// create them (before k3s first ran): k3s keeps `server/` 0700, so `server/manifests` must not
/// be more open than k3s would have made it. Everything above (and the config dir) is 0755.
const CONFIG_PRIVATE_DIRS: usize = 0;
const MANIFESTS_PRIVATE_DIRS: usize = 2;

/// Where k3s's install script puts the binary; also checked when PATH is minimal (sudo, cron).
const K3S_INSTALL_PATH: &str = "/usr/local/bin/k3s";

#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {
    /// The profile to install (the aegir package ships it here).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PROFILE_DIR)]
    pub profile_dir: PathBuf,
    /// Install under this directory instead of / (to prepare an image, or for tests).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The ACME account email written into the Let's Encrypt ClusterIssuers; Let's Encrypt
    /// writes there about expiring certificates.
    #[arg(long, value_name = "ADDRESS")]
    pub email: String,
    /// Print what would be written, and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Why the profile could not be installed. Nothing is written for any of them but `Write`.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("--email {email:?} is not usable: {why}")]
    BadEmail { email: String, why: &'static str },
    #[error(
        "no k3s profile at {0}: install the aegir package, which ships it at \
         {DEFAULT_PROFILE_DIR}, or point --profile-dir at the repository's k3s/ directory"
    )]
    NoProfile(PathBuf),
    #[error("the k3s profile at {dir} is incomplete: {what}")]
    BadProfile { dir: PathBuf, what: String },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}{}", root_hint(.source))]
    Write { path: PathBuf, source: io::Error },
}

fn root_hint(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::PermissionDenied {
        " (k3s's directories belong to root: run it with sudo)"
    } else {
        ""
    }
}

impl BootstrapError {
    /// Bad input is a usage error; failing to read or write files is a failed operation.
    pub fn exit_code(&self) -> u8 {
        match self {
            BootstrapError::BadEmail { .. }
            | BootstrapError::NoProfile(_)
            | BootstrapError::BadProfile { .. } => exit::USAGE,
            BootstrapError::Read { .. } | BootstrapError::Write { .. } => exit::OPERATION_FAILED,
        }
    }
}

/// One profile file as it is to be installed.
#[derive(Debug, Clone)]
pub struct ProfileFile {
    pub dest: PathBuf,
    pub mode: u32,
    pub content: String,
    /// A config drop-in, which k3s reads only when it starts.
    pub is_config: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileStatus {
    /// Written (new, or its content or mode differed).
    Installed,
    /// Already there with the same content and mode; not touched.
    Unchanged,
    /// `--dry-run`: would have been written.
    WouldInstall,
}

impl FileStatus {
    fn as_str(self) -> &'static str {
        match self {
            FileStatus::Installed => "installed",
            FileStatus::Unchanged => "unchanged",
            FileStatus::WouldInstall => "would install",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    /// Octal, as `chmod` takes it.
    pub mode: String,
    pub status: FileStatus,
    /// With `--dry-run`, what would be written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// What the command did, or would do.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The k3s binary found; `None` when k3s is not installed (then nothing was written).
    pub k3s: Option<PathBuf>,
    pub dry_run: bool,
    pub files: Vec<FileReport>,
    /// What happens next and what to run, or, without k3s, how to install it first.
    pub next_steps: Vec<String>,
}

impl Report {
    pub fn exit_code(&self) -> u8 {
        if self.k3s.is_some() {
            exit::OK
        } else {
            exit::MISSING_PREREQUISITE
        }
    }
}

/// The command line's entry point: runs the bootstrap against this host and prints the report
/// (JSON on stdout with `--json`); gives the exit code.
pub fn run(args: &BootstrapArgs, json: bool) -> u8 {
    match bootstrap(args, find_k3s) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print_human(&report);
            }
            report.exit_code()
        }
        Err(e) => {
            eprintln!("aegir: {e}");
            e.exit_code()
        }
    }
}

fn print_human(report: &Report) {
    if report.k3s.is_none() {
        // A failure: the instructions go where errors go, stdout stays empty for scripts.
        for line in &report.next_steps {
            eprintln!("{line}");
        }
        return;
    }
    for f in &report.files {
        println!(
            "{:<13} {} (mode {})",
            f.status.as_str(),
            f.path.display(),
            f.mode
        );
        if let Some(content) = &f.content {
            for line in content.lines() {
                println!("    | {line}");
            }
        }
    }
    println!();
    for line in &report.next_steps {
        println!("{line}");
    }
}

/// Installs the profile under `args.root` if `find_k3s` finds k3s. Input is checked first, so
/// a bad email or profile writes nothing whether or not k3s is there.
pub fn bootstrap(
    args: &BootstrapArgs,
    find_k3s: impl FnOnce() -> Option<PathBuf>,
) -> Result<Report, BootstrapError> {
    let files = plan(&args.profile_dir, &args.root, &args.email)?;
    let Some(k3s) = find_k3s() else {
        return Ok(Report {
            k3s: None,
            dry_run: args.dry_run,
            files: Vec::new(),
            next_steps: install_k3s_first(args),
        });
    };
    let mut reports = Vec::with_capacity(files.len());
    let mut config_installed = false;
    for file in &files {
        let status = install(file, args.dry_run)?;
        config_installed |= file.is_config && status != FileStatus::Unchanged;
        reports.push(FileReport {
            path: file.dest.clone(),
            mode: format!("{:04o}", file.mode),
            status,
            content: (args.dry_run && status == FileStatus::WouldInstall)
                .then(|| file.content.clone()),
        });
    }
    Ok(Report {
        k3s: Some(k3s),
        dry_run: args.dry_run,
        files: reports,
        next_steps: next_steps(args, config_installed),
    })
}

/// Reads the profile and fills in the email: every file with its destination under `root`.
pub fn plan(
    profile_dir: &Path,
    root: &Path,
    email: &str,
) -> Result<Vec<ProfileFile>, BootstrapError> {
    check_email(email).map_err(|why| BootstrapError::BadEmail {
        email: email.to_string(),
        why,
    })?;
    if !profile_dir.is_dir() {
        return Err(BootstrapError::NoProfile(profile_dir.to_path_buf()));
    }
    let incomplete = |what: String| BootstrapError::BadProfile {
        dir: profile_dir.to_path_buf(),
        what,
    };
    let mut files = Vec::new();
    for (sub, dest_dir, prefix, mode, is_config) in [
        ("config.yaml.d", CONFIG_DIR, "", CONFIG_MODE, true),
        (
            "manifests",
            MANIFESTS_DIR,
            MANIFEST_PREFIX,
            MANIFEST_MODE,
            false,
        ),
    ] {
        let names = yaml_files(&profile_dir.join(sub))?;
        if names.is_empty() {
            return Err(incomplete(format!("no *.yaml file in {sub}/")));
        }
        for name in names {
            let source = profile_dir.join(sub).join(&name);
            let content =
                fs::read_to_string(&source).map_err(|source_err| BootstrapError::Read {
                    path: source.clone(),
                    source: source_err,
                })?;
            files.push(ProfileFile {
                dest: root.join(dest_dir).join(format!("{prefix}{name}")),
                mode,
                content,
                is_config,
            });
        }
    }
    // A profile without the placeholder would install issuers with some other address and
    // silently ignore --email.
    if !files.iter().any(|f| f.content.contains(EMAIL_PLACEHOLDER)) {
        return Err(incomplete(format!(
            "no file holds the ACME email placeholder {EMAIL_PLACEHOLDER}"
        )));
    }
    for f in &mut files {
        f.content = f.content.replace(EMAIL_PLACEHOLDER, email);
    }
    Ok(files)
}

/// The `*.yaml` file names in `dir`, sorted so that output and install order are stable.
fn yaml_files(dir: &Path) -> Result<Vec<String>, BootstrapError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(BootstrapError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| BootstrapError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !name.starts_with('.') && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A rough check, enough to catch a typo or a missing value before it reaches Let's Encrypt:
/// one `@`, a plausible local part and a dotted host name. The characters allowed also keep
/// the address a plain string inside the issuers' double-quoted YAML value.
pub fn check_email(email: &str) -> Result<(), &'static str> {
    if email.len() > 254 {
        return Err("longer than an email address can be");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("it has no @");
    };
    if domain.contains('@') {
        return Err("it has more than one @");
    }
    const LOCAL_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
    if local.is_empty()
        || local.len() > 64
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c))
    {
        return Err("the part before @ is not a mailbox name");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels.iter().any(|l| {
            l.is_empty()
                || l.len() > 63
                || l.starts_with('-')
                || l.ends_with('-')
                || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        || labels[labels.len() - 1].chars().all(|c| c.is_ascii_digit())
    {
        return Err("the part after @ is not a host name with a dot, such as example.org");
    }
    let domain = domain.to_ascii_lowercase();
    let tld = domain.rsplit('.').next().unwrap_or_default();
    if ["invalid", "test", "example", "localhost"].contains(&tld)
        || ["example.com", "example.net", "example.org"].contains(&domain.as_str())
    {
        return Err("its domain is reserved for examples and Let's Encrypt refuses it");
    }
    Ok(())
}

/// The k3s binary: `k3s` in PATH, or where its install script puts it.
pub fn find_k3s() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("k3s"))
        .chain([PathBuf::from(K3S_INSTALL_PATH)])
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Writes `file` unless it is already in place; says which.
fn install(file: &ProfileFile, dry_run: bool) -> Result<FileStatus, BootstrapError> {
    if is_current(&file.dest, file.content.as_bytes(), file.mode) {
        return Ok(FileStatus::Unchanged);
    }
    if dry_run {
        return Ok(FileStatus::WouldInstall);
    }
    let private_dirs = if file.is_config {
        CONFIG_PRIVATE_DIRS
    } else {
        MANIFESTS_PRIVATE_DIRS
    };
    write_atomic(&file.dest, file.content.as_bytes(), file.mode, private_dirs).map_err(
        |source| BootstrapError::Write {
            path: file.dest.clone(),
            source,
        },
    )?;
    Ok(FileStatus::Installed)
}

/// Same bytes and same permission bits: rewriting it would only make k3s re-apply it.
fn is_current(path: &Path, content: &[u8], mode: u32) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o7777 == mode => {
            fs::read(path).is_ok_and(|existing| existing == content)
        }
        _ => false,
    }
}

/// Temp file beside the destination, then rename: k3s watches these directories and must
/// never apply (or start with) half a file.
fn write_atomic(dest: &Path, content: &[u8], mode: u32, private_dirs: usize) -> io::Result<()> {
    let dir = dest
        .parent()
        .ok_or_else(|| io::Error::other("destination has no directory"))?;
    let public = dir.ancestors().nth(private_dirs).unwrap_or(dir);
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(public)?;
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::other("destination has no file name"))?
        .to_string_lossy();
    // Hidden and not ending in .yaml, so k3s ignores it while it exists.
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp); // left over by a run that died with this pid
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
        // The mode given at creation is masked by the umask; this one is exact.
        f.set_permissions(Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, dest)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// This command again, as the user would type it, for the instructions.
fn command_line(args: &BootstrapArgs) -> String {
    let mut cmd = String::from("sudo aegir cluster bootstrap-k3s");
    // Absolute, so the line works from any directory (after cd-ing to install k3s, say).
    let path = |p: &Path| {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        shell_quote(&p.to_string_lossy())
    };
    if args.profile_dir != Path::new(DEFAULT_PROFILE_DIR) {
        cmd += &format!(" --profile-dir {}", path(&args.profile_dir));
    }
    if args.root != Path::new("/") {
        cmd += &format!(" --root {}", path(&args.root));
    }
    cmd += &format!(" --email {}", shell_quote(&args.email));
    cmd
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn install_k3s_first(args: &BootstrapArgs) -> Vec<String> {
    let again = command_line(args);
    vec![
        format!(
            "k3s is not installed on this host (no k3s in PATH nor at {K3S_INSTALL_PATH}); \
             nothing was written."
        ),
        "Install k3s, run this command again, then restart k3s so it reads the config drop-in:"
            .into(),
        "    curl -sfL https://get.k3s.io | sh -".into(),
        format!("    {again}"),
        "    sudo systemctl restart k3s".into(),
        "Or install k3s without starting it, so that its first start already has the profile:"
            .into(),
        "    curl -sfL https://get.k3s.io | INSTALL_K3S_SKIP_START=true sh -".into(),
        format!("    {again}"),
        "    sudo systemctl start k3s".into(),
    ]
}

fn next_steps(args: &BootstrapArgs, config_installed: bool) -> Vec<String> {
    let manifests = args.root.join(MANIFESTS_DIR);
    let mut steps = Vec::new();
    if args.dry_run {
        steps.push("Nothing was written (--dry-run). Once installed:".to_string());
    }
    steps.push(format!(
        "- k3s applies the manifests in {} within a minute: cert-manager first, then the \
         Let's Encrypt ClusterIssuers once its CRDs exist (check: sudo k3s kubectl get clusterissuers).",
        manifests.display()
    ));
    steps.push(if config_installed {
        "- Restart k3s so it reads the config drop-in: sudo systemctl restart k3s".to_string()
    } else {
        "- The config drop-in was already in place: restart k3s only if it has not restarted \
         since it was installed (sudo systemctl restart k3s)."
            .to_string()
    });
    steps.push(
        "- After that restart /etc/rancher/k3s/k3s.yaml is mode 0640, group aegir, so aegird \
         can read it."
            .to_string(),
    );
    steps.push(
        "- Then record the cluster: aegir cluster add k3s --api-url https://127.0.0.1:6443"
            .to_string(),
    );
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMAIL: &str = "hostmaster@aegir-hosting.org";

    fn repo_profile() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../k3s")
    }

    fn args(profile_dir: PathBuf, root: &Path) -> BootstrapArgs {
        BootstrapArgs {
            profile_dir,
            root: root.to_path_buf(),
            email: EMAIL.into(),
            dry_run: false,
        }
    }

    fn with_k3s() -> Option<PathBuf> {
        Some(PathBuf::from("/usr/local/bin/k3s"))
    }

    /// Every file under `dir`, relative to it, sorted; temp files would show up here too.
    fn tree(dir: &Path) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(base, &path, out);
                } else {
                    out.push(path.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn installs_every_file_with_its_mode_and_the_email() {
        let root = tempfile::tempdir().unwrap();
        let report = bootstrap(&args(repo_profile(), root.path()), with_k3s).unwrap();

        assert_eq!(report.exit_code(), exit::OK);
        assert_eq!(
            tree(root.path()),
            [
                "etc/rancher/k3s/config.yaml.d/aegir.yaml",
                "var/lib/rancher/k3s/server/manifests/aegir-aegir.yaml",
                "var/lib/rancher/k3s/server/manifests/aegir-cert-manager.yaml",
                "var/lib/rancher/k3s/server/manifests/aegir-letsencrypt.yaml",
            ]
        );
        assert!(report
            .files
            .iter()
            .all(|f| f.status == FileStatus::Installed && f.content.is_none()));

        let config = root.path().join(CONFIG_DIR).join("aegir.yaml");
        assert_eq!(mode(&config), 0o644);
        let config_text = fs::read_to_string(&config).unwrap();
        assert!(config_text.contains("write-kubeconfig-mode: \"0640\""));
        assert!(config_text.contains("write-kubeconfig-group: \"aegir\""));

        let manifests = root.path().join(MANIFESTS_DIR);
        // server/manifests root-only as k3s makes them; /var/lib/rancher/k3s not.
        assert_eq!(mode(&manifests), 0o700);
        assert_eq!(mode(manifests.parent().unwrap()), 0o700);
        assert_eq!(mode(&root.path().join("var/lib/rancher/k3s")), 0o755);
        assert_eq!(mode(config.parent().unwrap()), 0o755);
        for name in [
            "aegir-aegir.yaml",
            "aegir-cert-manager.yaml",
            "aegir-letsencrypt.yaml",
        ] {
            let path = manifests.join(name);
            assert_eq!(mode(&path), 0o600, "{name}");
            // Copied as they are, but for the email.
            let source = repo_profile()
                .join("manifests")
                .join(name.trim_start_matches(MANIFEST_PREFIX));
            assert_eq!(
                fs::read_to_string(&path).unwrap(),
                fs::read_to_string(source)
                    .unwrap()
                    .replace(EMAIL_PLACEHOLDER, EMAIL),
                "{name}"
            );
        }
        let issuers = fs::read_to_string(manifests.join("aegir-letsencrypt.yaml")).unwrap();
        assert_eq!(issuers.matches(&format!("email: \"{EMAIL}\"")).count(), 2);
        assert!(!issuers.contains(EMAIL_PLACEHOLDER));

        let steps = report.next_steps.join("\n");
        assert!(steps.contains("systemctl restart k3s"), "{steps}");
        assert!(
            steps.contains("aegir cluster add k3s --api-url https://127.0.0.1:6443"),
            "{steps}"
        );
    }

    #[test]
    fn a_second_run_leaves_everything_unchanged() {
        let root = tempfile::tempdir().unwrap();
        let a = args(repo_profile(), root.path());
        bootstrap(&a, with_k3s).unwrap();
        let manifest = root
            .path()
            .join(MANIFESTS_DIR)
            .join("aegir-letsencrypt.yaml");
        let before = fs::metadata(&manifest).unwrap().modified().unwrap();

        let again = bootstrap(&a, with_k3s).unwrap();
        assert!(again
            .files
            .iter()
            .all(|f| f.status == FileStatus::Unchanged));
        assert_eq!(fs::metadata(&manifest).unwrap().modified().unwrap(), before);
        assert!(again.next_steps.join("\n").contains("already in place"));

        // A file edited by hand, or with the wrong mode, is put back; the others are not.
        fs::write(&manifest, "edited").unwrap();
        let config = root.path().join(CONFIG_DIR).join("aegir.yaml");
        fs::set_permissions(&config, Permissions::from_mode(0o666)).unwrap();
        let repaired = bootstrap(&a, with_k3s).unwrap();
        let changed: Vec<_> = repaired
            .files
            .iter()
            .filter(|f| f.status == FileStatus::Installed)
            .map(|f| f.path.clone())
            .collect();
        assert_eq!(changed, [config.clone(), manifest.clone()]);
        assert_eq!(mode(&config), 0o644);
        assert!(fs::read_to_string(&manifest).unwrap().contains(EMAIL));
        assert_eq!(tree(root.path()).len(), 4, "no temp file left behind");
    }

    #[test]
    fn without_k3s_nothing_is_written_and_the_report_says_how_to_install_it() {
        let root = tempfile::tempdir().unwrap();
        let report = bootstrap(&args(repo_profile(), root.path()), || None).unwrap();

        assert_eq!(report.exit_code(), exit::MISSING_PREREQUISITE);
        assert_ne!(report.exit_code(), exit::USAGE);
        assert!(report.files.is_empty());
        assert!(tree(root.path()).is_empty());
        let text = report.next_steps.join("\n");
        assert!(text.contains("nothing was written"), "{text}");
        assert!(
            text.contains("curl -sfL https://get.k3s.io | sh -"),
            "{text}"
        );
        assert!(text.contains("INSTALL_K3S_SKIP_START=true"), "{text}");
        // The command to run again is complete, with this run's options.
        let root_arg = root.path().display().to_string();
        assert!(
            text.contains(&format!(
                "sudo aegir cluster bootstrap-k3s --profile-dir {} --root {root_arg} --email {EMAIL}",
                repo_profile().display()
            )),
            "{text}"
        );
    }

    #[test]
    fn a_missing_profile_dir_is_an_error_and_nothing_is_written() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("no-such-profile");
        let install_root = root.path().join("root");
        fs::create_dir(&install_root).unwrap();

        let err = bootstrap(&args(missing.clone(), &install_root), with_k3s).unwrap_err();
        assert!(matches!(&err, BootstrapError::NoProfile(p) if *p == missing));
        assert_eq!(err.exit_code(), exit::USAGE);
        assert!(err.to_string().contains("--profile-dir"), "{err}");
        assert!(tree(&install_root).is_empty());
    }

    #[test]
    fn an_incomplete_profile_is_an_error_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        fs::create_dir_all(profile.join("config.yaml.d")).unwrap();
        fs::write(profile.join("config.yaml.d/aegir.yaml"), "a: b\n").unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();

        let err = bootstrap(&args(profile.clone(), &root), with_k3s).unwrap_err();
        assert!(err.to_string().contains("manifests/"), "{err}");

        // Manifests, but none with the email placeholder: --email would be ignored.
        fs::create_dir(profile.join("manifests")).unwrap();
        fs::write(profile.join("manifests/x.yaml"), "kind: Namespace\n").unwrap();
        let err = bootstrap(&args(profile, &root), with_k3s).unwrap_err();
        assert!(err.to_string().contains(EMAIL_PLACEHOLDER), "{err}");
        assert_eq!(err.exit_code(), exit::USAGE);
        assert!(tree(&root).is_empty());
    }

    #[test]
    fn a_bad_email_is_refused_before_looking_for_k3s() {
        let root = tempfile::tempdir().unwrap();
        let mut a = args(repo_profile(), root.path());
        a.email = "hostmaster".into();
        let err = bootstrap(&a, || panic!("k3s looked for despite bad input")).unwrap_err();
        assert!(matches!(err, BootstrapError::BadEmail { .. }));
        assert_eq!(err.exit_code(), exit::USAGE);
        assert!(tree(root.path()).is_empty());
    }

    #[test]
    fn dry_run_shows_the_files_and_writes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let mut a = args(repo_profile(), root.path());
        a.dry_run = true;
        let report = bootstrap(&a, with_k3s).unwrap();
        assert_eq!(report.files.len(), 4);
        assert!(report
            .files
            .iter()
            .all(|f| f.status == FileStatus::WouldInstall));
        let issuers = report
            .files
            .iter()
            .find(|f| f.path.ends_with("aegir-letsencrypt.yaml"))
            .and_then(|f| f.content.as_deref())
            .unwrap();
        assert!(issuers.contains(EMAIL));
        assert!(report.next_steps[0].contains("Nothing was written"));
        assert!(tree(root.path()).is_empty());
    }

    #[test]
    fn emails_are_checked_roughly() {
        for ok in [
            "hostmaster@aegir-hosting.org",
            "a.b+certs@mail.example.co.uk",
            "o'brien@host.ie",
        ] {
            assert_eq!(check_email(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "hostmaster",
            "@example.org",
            "a@b@c.org",
            "a b@c.org",
            "a\"b@c.org",
            "a@localhost",
            "a@c..org",
            "a@-c.org",
            "a@10.0.0.1",
            EMAIL_PLACEHOLDER,
            "a@example.com",
            "a@host.test",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn shell_quoting_keeps_odd_values_one_word() {
        assert_eq!(shell_quote("a@b.org"), "a@b.org");
        assert_eq!(shell_quote("o'brien@b.ie"), r"'o'\''brien@b.ie'");
        assert_eq!(shell_quote("/tmp/a dir"), "'/tmp/a dir'");
    }
}
