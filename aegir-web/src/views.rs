//! The pages of the web UI as askama templates (checked at compile time) and the plain data
//! they show. Values arrive formatted: this module knows no store, model or clock.

use askama::Template;

/// What every page around the content shows: who is logged in, the CSRF token its forms
/// carry, and which section of the menu is current.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    pub user: String,
    pub csrf: String,
    /// One of dashboard, servers, releases, environments, operations, import.
    pub nav: &'static str,
}

/// One operation in a table.
#[derive(Debug, Clone, Default)]
pub struct OpRow {
    pub id: i64,
    pub kind: String,
    /// "environment site1.test", "server web1", ...
    pub target: String,
    /// Link to the target's page, when it has one.
    pub target_href: Option<String>,
    pub status: String,
    pub when: String,
    pub duration: String,
    pub error: String,
}

#[derive(Debug, Clone, Default)]
pub struct EnvRow {
    pub uri: String,
    pub release: String,
    pub server: String,
    pub status: String,
    pub https: String,
    pub last_backup: String,
    /// True when the last good backup is older than two days, or there is none.
    pub backup_stale: bool,
    /// Still managed by Aegir 3 (adopted by an import, not taken over).
    pub aegir3: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Count {
    pub label: String,
    pub n: i64,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub csrf: String,
    pub next: String,
    pub name: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub chrome: Chrome,
    pub running: Vec<OpRow>,
    pub failed: Vec<OpRow>,
    pub by_status: Vec<Count>,
    pub stalest: Vec<EnvRow>,
}

#[derive(Debug, Clone, Default)]
pub struct ServerRow {
    pub name: String,
    pub transport: String,
    pub address: String,
    pub status: String,
    pub services: String,
    pub verified: String,
}

#[derive(Debug, Clone, Default)]
pub struct ClusterRow {
    pub name: String,
    pub api_url: String,
    pub status: String,
}

/// The values a form is shown again with after a refusal, and what was refused.
#[derive(Debug, Clone, Default)]
pub struct FormState {
    pub error: Option<String>,
    /// The field the error is about, to mark it.
    pub field: Option<String>,
    pub values: std::collections::BTreeMap<String, String>,
}

impl FormState {
    pub fn value(&self, key: &str) -> &str {
        self.values.get(key).map_or("", String::as_str)
    }
    pub fn invalid(&self, key: &str) -> bool {
        self.field.as_deref() == Some(key)
    }
}

#[derive(Template)]
#[template(path = "servers.html")]
pub struct ServersPage {
    pub chrome: Chrome,
    pub servers: Vec<ServerRow>,
    pub clusters: Vec<ClusterRow>,
    /// aegird's public SSH key, to authorise on a server before adding it.
    pub public_key: String,
    pub form: FormState,
}

#[derive(Debug, Clone, Default)]
pub struct ProjectRow {
    pub name: String,
    pub source: String,
}

#[derive(Debug, Clone, Default)]
pub struct ReleaseRow {
    pub name: String,
    pub project: String,
    pub server: String,
    pub status: String,
    pub app: String,
    pub locked: bool,
    /// "name version" of each package.
    pub packages: Vec<String>,
}

#[derive(Template)]
#[template(path = "releases.html")]
pub struct ReleasesPage {
    pub chrome: Chrome,
    pub projects: Vec<ProjectRow>,
    pub releases: Vec<ReleaseRow>,
    pub servers: Vec<String>,
    pub project_form: FormState,
    pub release_form: FormState,
}

#[derive(Template)]
#[template(path = "environments.html")]
pub struct EnvironmentsPage {
    pub chrome: Chrome,
    pub q: String,
    pub rows: Vec<EnvRow>,
    pub total: i64,
    /// "1–50 of 10,000"
    pub range: String,
    pub prev: Option<String>,
    pub next: Option<String>,
}

#[derive(Template)]
#[template(path = "environment_new.html")]
pub struct NewEnvironmentPage {
    pub chrome: Chrome,
    pub releases: Vec<String>,
    pub form: FormState,
}

#[derive(Debug, Clone, Default)]
pub struct BackupRow {
    pub id: i64,
    pub created: String,
    pub size: String,
    pub status: String,
    pub reason: String,
    pub format: String,
    pub description: String,
    pub restorable: bool,
}

#[derive(Debug, Clone, Default)]
pub struct EnvDetail {
    pub uri: String,
    pub status: String,
    pub release: String,
    pub server: String,
    pub aliases: Vec<String>,
    pub redirect_aliases: bool,
    pub https: String,
    pub client: String,
    pub managed_by: String,
    pub last_backup: String,
    pub backup_stale: bool,
    pub schedule: String,
    /// Which scheduled backups are kept.
    pub retention: String,
    /// Which actions its status allows.
    pub active: bool,
    pub disabled: bool,
    pub aegir3: bool,
}

#[derive(Template)]
#[template(path = "environment.html")]
pub struct EnvironmentPage {
    pub chrome: Chrome,
    pub env: EnvDetail,
    pub backups: Vec<BackupRow>,
    pub operations: Vec<OpRow>,
    pub releases: Vec<String>,
    pub form: FormState,
}

#[derive(Debug, Clone, Default)]
pub struct StepRow {
    pub seq: i64,
    pub name: String,
    pub status: String,
    pub duration: String,
    pub error: String,
}

#[derive(Debug, Clone, Default)]
pub struct LogRow {
    pub id: i64,
    pub time: String,
    pub level: String,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct OperationView {
    pub row: OpRow,
    pub steps: Vec<StepRow>,
    pub finished: bool,
    pub can_retry: bool,
    pub can_cancel: bool,
    /// A one-time login link the operation produced.
    pub login_url: Option<String>,
    /// Open `login_url` as soon as it is there (the page was opened by "Log in to site").
    pub go: bool,
}

#[derive(Template)]
#[template(path = "operation.html")]
pub struct OperationPage {
    pub chrome: Chrome,
    pub op: OperationView,
    pub log: Vec<LogRow>,
    pub last_log_id: i64,
}

/// The part of the operation page that htmx refreshes while the operation runs.
#[derive(Template)]
#[template(path = "operation_state.html")]
pub struct OperationState {
    pub chrome: Chrome,
    pub op: OperationView,
}

#[derive(Template)]
#[template(path = "operations.html")]
pub struct OperationsPage {
    pub chrome: Chrome,
    pub status: String,
    pub statuses: Vec<&'static str>,
    pub rows: Vec<OpRow>,
    pub range: String,
    pub prev: Option<String>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ImportRow {
    pub kind: String,
    pub aegir3: String,
    pub label: String,
    pub outcome: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct ImportResult {
    pub dry_run: bool,
    pub source: String,
    /// "3 adopted, 1 updated, ..."
    pub summary: String,
    pub notes: Vec<String>,
    pub rows: Vec<ImportRow>,
    pub elapsed: String,
}

#[derive(Template)]
#[template(path = "import.html")]
pub struct ImportPage {
    pub chrome: Chrome,
    pub form: FormState,
    pub result: Option<ImportResult>,
}

#[derive(Template)]
#[template(path = "problem.html")]
pub struct ProblemPage {
    pub chrome: Chrome,
    pub status: u16,
    pub title: String,
    pub message: String,
    pub back: String,
}
