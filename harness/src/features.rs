//! Scenario discovery: `.feature` files parsed with gherkin, outlines expanded, and the selection of which
//! scenarios run in which environment.
//!
//! Environment tags: `@env:<name>` limits a scenario (or a whole feature/rule) to the named environments,
//! `@not-env:<name>` excludes one; `<name>` is an environment kind (`native`, `board`) or a full column name
//! (`board:rpi4`). The user's tag expression (`--tags "@hvac and not @slow"`) selects among the rest.
//! A file that does not parse is kept as a [`FeatureFileError`] naming file and line, so the report shows it.
//! What the parser lets through is caught here too, each error naming its line: a scenario with a ragged
//! table row or an outline step naming a column its Examples lack is left out (the rest of its file still
//! runs), and an environment tag naming no environment kind is reported. A byte-order mark is skipped.

use std::path::{Path, PathBuf};

use cucumber::feature::Ext as _;
use cucumber::gherkin::{self, tagexpr::TagOperation, GherkinEnv};
use cucumber::tag::Ext as _;

/// A feature file that could not be read, parsed or expanded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeatureFileError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for FeatureFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

/// Every feature under the given paths.
#[derive(Debug, Default, Clone)]
pub struct FeatureSet {
    pub features: Vec<gherkin::Feature>,
    pub errors: Vec<FeatureFileError>,
}

/// One selectable scenario (an outline contributes one per Examples row).
#[derive(Debug, Clone)]
pub struct ScenarioRef<'a> {
    pub feature: &'a gherkin::Feature,
    pub rule: Option<&'a gherkin::Rule>,
    pub scenario: &'a gherkin::Scenario,
}

impl ScenarioRef<'_> {
    /// Tags of the scenario with those inherited from its rule and feature.
    pub fn tags(&self) -> Vec<String> {
        all_tags(self.feature, self.rule, self.scenario)
    }
}

/// Tags of a scenario including inherited ones, without the leading `@`.
pub fn all_tags(
    feature: &gherkin::Feature,
    rule: Option<&gherkin::Rule>,
    scenario: &gherkin::Scenario,
) -> Vec<String> {
    feature
        .tags
        .iter()
        .chain(rule.iter().flat_map(|r| r.tags.iter()))
        .chain(scenario.tags.iter())
        .map(|t| t.trim_start_matches('@').to_string())
        .collect()
}

impl FeatureSet {
    /// Reads `.feature` files from the given files and directories (recursively), sorted by path.
    pub fn load(paths: &[PathBuf]) -> FeatureSet {
        let mut files = Vec::new();
        for path in paths {
            collect(path, &mut files);
        }
        files.sort();
        files.dedup();
        let mut set = FeatureSet::default();
        for file in files {
            let (feature, errors) = parse_file(&file);
            set.features.extend(feature);
            set.errors.extend(errors);
        }
        set
    }

    /// Every scenario, in file order.
    pub fn scenarios(&self) -> Vec<ScenarioRef<'_>> {
        let mut out = Vec::new();
        for feature in &self.features {
            for scenario in &feature.scenarios {
                out.push(ScenarioRef {
                    feature,
                    rule: None,
                    scenario,
                });
            }
            for rule in &feature.rules {
                for scenario in &rule.scenarios {
                    out.push(ScenarioRef {
                        feature,
                        rule: Some(rule),
                        scenario,
                    });
                }
            }
        }
        out
    }
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                collect(&entry.path(), files);
            }
        }
    } else if path.extension().is_some_and(|e| e == "feature") || (!path.exists()) {
        // A path that does not exist is kept so that reading it reports the error.
        files.push(path.to_path_buf());
    }
}

/// Parses and expands one feature file: what of it can run, and every error found in it. A file that cannot
/// be read or parsed gives no feature; a scenario that cannot be used (a ragged table row, an outline step
/// naming a column its Examples lack) is left out with an error while the rest of the file still runs.
pub fn parse_file(path: &Path) -> (Option<gherkin::Feature>, Vec<FeatureFileError>) {
    let error = |line: usize, message: String| FeatureFileError {
        path: path.to_path_buf(),
        line,
        message,
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return (None, vec![error(0, format!("cannot read: {e}"))]),
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let (line, col) = line_col(e.as_bytes(), e.utf8_error().valid_up_to());
            return (
                None,
                vec![error(
                    line,
                    format!(
                        "cannot read: not valid UTF-8 (bad bytes at column {col}); save the file as UTF-8"
                    ),
                )],
            );
        }
    };
    // A byte-order mark (Windows editors write one) is valid UTF-8 but no Gherkin.
    let unmarked = text.strip_prefix('\u{feff}');
    let bom = unmarked.is_some();
    let text = unmarked.unwrap_or(&text);
    if text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    }) {
        return (
            None,
            vec![error(1, "empty feature file: no `Feature:` in it".to_string())],
        );
    }
    let scan = scan(text);
    let mut errors: Vec<FeatureFileError> = scan
        .env_tags
        .iter()
        .map(|(line, tag, name)| error(*line, unknown_env_message(tag, name)))
        .collect();
    // Ragged rows are made whole for the parser; the scenarios holding them are left out below.
    let repaired;
    let text = if scan.ragged.is_empty() {
        text
    } else {
        repaired = repair_rows(text, &scan.ragged);
        repaired.as_str()
    };
    let mut feature = match gherkin::Feature::parse(text, GherkinEnv::default()) {
        Ok(feature) => feature,
        Err(parse_error) => {
            // Only `parse_path` keeps the parser's own reason (an unknown keyword): ask it when the file is
            // what was parsed.
            let reparsed = if bom || !scan.ragged.is_empty() {
                None
            } else {
                gherkin::Feature::parse_path(path, GherkinEnv::default()).err()
            };
            let reason = match reparsed {
                Some(gherkin::ParseFileError::Parsing { error, source, .. }) => (error, source.to_string()),
                _ => (None, parse_error.to_string()),
            };
            errors.insert(0, parse_failure(path, text, reason.0, &reason.1));
            return (None, errors);
        }
    };
    feature.path = Some(path.to_path_buf());
    if !scan.ragged.is_empty() {
        let starts = line_starts(text);
        let offsets: Vec<usize> = scan
            .ragged
            .iter()
            .map(|row| starts.get(row.line - 1).copied().unwrap_or(usize::MAX))
            .collect();
        let holds = |s: &gherkin::Scenario, offset: usize| s.span.start <= offset && offset < s.span.end;
        let mut whole_file = false;
        for (row, offset) in scan.ragged.iter().zip(&offsets) {
            let scenario = feature
                .scenarios
                .iter()
                .chain(feature.rules.iter().flat_map(|r| r.scenarios.iter()))
                .find(|s| holds(s, *offset));
            let what = match scenario {
                Some(s) => format!("scenario `{}` is not run", s.name),
                None => {
                    whole_file = true;
                    "no scenario of this file runs".to_string()
                }
            };
            errors.push(error(
                row.line,
                format!(
                    "ragged data table row: {} cells where its header (line {}) has {}; {what}",
                    row.cells, row.header_line, row.header_cells
                ),
            ));
        }
        if whole_file {
            return (None, errors);
        }
        let keep = |s: &gherkin::Scenario| !offsets.iter().any(|o| holds(s, *o));
        feature.scenarios.retain(keep);
        for rule in &mut feature.rules {
            rule.scenarios.retain(keep);
        }
    }
    let feature = expand_outlines(feature, &mut |line, message| errors.push(error(line, message)));
    (Some(feature), errors)
}

/// The 1-based line and column of byte `at`.
fn line_col(bytes: &[u8], at: usize) -> (usize, usize) {
    let before = &bytes[..at.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = before.len() - before.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1) + 1;
    (line, col)
}

/// The byte offset where each line starts.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// A file that gherkin did not parse, at the line it names (or the line of the unknown keyword it met).
fn parse_failure(
    path: &Path,
    text: &str,
    error: Option<gherkin::EnvError>,
    reason: &str,
) -> FeatureFileError {
    let mut line: usize = regex::Regex::new(r"at (\d+):(\d+)")
        .ok()
        .and_then(|re| re.captures(reason)?.get(1)?.as_str().parse().ok())
        .unwrap_or(0);
    let lines: Vec<&str> = text.lines().collect();
    // The parser may point one line past the end of the file (it adds a newline).
    line = line.min(lines.len().max(1));
    let shown = |line: usize| {
        lines
            .get(line.wrapping_sub(1))
            .map(|l| l.trim().to_string())
            .unwrap_or_default()
    };
    let message = match error {
        Some(gherkin::EnvError::UnknownKeyword(kw)) => {
            // The parser notices an unknown keyword a line late: point at the line that has it.
            if let Some(l) = (1..=line.min(lines.len()))
                .rev()
                .find(|l| lines[l - 1].trim_start().starts_with(kw.as_str()))
            {
                line = l;
            }
            format!("malformed feature file: unknown keyword in `{}`", shown(line))
        }
        Some(other) => format!("malformed feature file: {other}"),
        None => format!("malformed feature file: unexpected `{}` ({reason})", shown(line)),
    };
    FeatureFileError {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// A data-table row whose cell count differs from its table's first row.
#[derive(Debug, Clone, Copy)]
struct RaggedRow {
    line: usize,
    cells: usize,
    header_line: usize,
    header_cells: usize,
}

/// What a line-by-line look at a feature file finds that the parser lets through.
#[derive(Debug, Default)]
struct Scan {
    ragged: Vec<RaggedRow>,
    /// `(line, tag, environment)` of each `@env:`/`@not-env:` tag naming no environment kind.
    env_tags: Vec<(usize, String, String)>,
}

fn scan(text: &str) -> Scan {
    let mut out = Scan::default();
    let mut docstring: Option<&str> = None;
    // The current table's first row: (line, cells).
    let mut header: Option<(usize, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if let Some(delimiter) = docstring {
            if l.starts_with(delimiter) {
                docstring = None;
            }
            continue;
        }
        if let Some(delimiter) = ["\"\"\"", "```"].into_iter().find(|d| l.starts_with(d)) {
            docstring = Some(delimiter);
            header = None;
            continue;
        }
        if l.is_empty() || l.starts_with('#') {
            // Blank and comment lines do not end a table.
            continue;
        }
        if l.starts_with('|') {
            if let Some(cells) = row_cells(l) {
                match header {
                    None => header = Some((line, cells)),
                    Some((header_line, header_cells)) if cells != header_cells => {
                        out.ragged.push(RaggedRow {
                            line,
                            cells,
                            header_line,
                            header_cells,
                        })
                    }
                    Some(_) => {}
                }
            }
            continue;
        }
        header = None;
        if l.starts_with('@') {
            for token in l.split_whitespace().take_while(|t| !t.starts_with('#')) {
                let name = token
                    .strip_prefix("@env:")
                    .or_else(|| token.strip_prefix("@not-env:"));
                if let Some(name) = name {
                    if crate::env::find_kind(name).is_none() {
                        out.env_tags.push((line, token.to_string(), name.to_string()));
                    }
                }
            }
        }
    }
    out
}

/// The cells of a table row (`| a | b |`: 2), or `None` when it does not end with `|` (the parser judges it).
fn row_cells(row: &str) -> Option<usize> {
    let mut pipes = 0;
    let mut escaped = false;
    let mut closed = false;
    for c in row.chars() {
        closed = false;
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '|' => {
                pipes += 1;
                closed = true;
            }
            _ => {}
        }
    }
    (closed && pipes >= 2).then(|| pipes - 1)
}

/// `text` with each ragged row replaced by a row of its header's width, line numbers unchanged.
fn repair_rows(text: &str, ragged: &[RaggedRow]) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        match ragged.iter().find(|r| r.line == i + 1) {
            Some(row) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                out.push_str(indent);
                out.push('|');
                out.push_str(&" - |".repeat(row.header_cells));
                out.push_str(if line.ends_with("\r\n") {
                    "\r\n"
                } else if line.ends_with('\n') {
                    "\n"
                } else {
                    ""
                });
            }
            None => out.push_str(line),
        }
    }
    out
}

/// The message for an `@env:`/`@not-env:` tag naming no environment, with the known ones and a guess.
fn unknown_env_message(tag: &str, name: &str) -> String {
    let known = crate::env::known_columns(crate::env::Setup::default());
    let guess = known
        .iter()
        .filter(|k| !k.contains(':'))
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default();
    format!(
        "unknown environment `{name}` in tag `{tag}` (known: {}){guess}",
        known.join(", ")
    )
}

/// Levenshtein distance (names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The first `<placeholder>` of an outline (steps first, then its name) that a table of its Examples lacks:
/// its line, its name and that table's columns.
fn missing_placeholder(scenario: &gherkin::Scenario) -> Option<(usize, String, Vec<String>)> {
    // The placeholder syntax cucumber expands.
    static PLACEHOLDER: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"<([^>\s](?:[^>\s]?|[^>\t\n\r\v\f]*[^>\s]))>").ok());
    let re = PLACEHOLDER.as_ref()?;
    let mut texts: Vec<(usize, &str)> = Vec::new();
    for step in &scenario.steps {
        texts.push((step.position.line, &step.value));
        texts.extend(step.docstring.iter().map(|d| (step.position.line, d.as_str())));
        for row in step.table.iter().flat_map(|t| t.rows.iter()) {
            texts.extend(row.iter().map(|c| (step.position.line, c.as_str())));
        }
    }
    texts.push((scenario.position.line, &scenario.name));
    for header in scenario
        .examples
        .iter()
        .filter_map(|ex| ex.table.as_ref()?.rows.first())
    {
        for (line, text) in &texts {
            for cap in re.captures_iter(text) {
                let Some(name) = cap.get(1) else { continue };
                if !header.iter().any(|h| h == name.as_str()) {
                    return Some((*line, name.as_str().to_string(), header.clone()));
                }
            }
        }
    }
    None
}

/// Expands every outline on its own: one whose steps name a column its Examples lack is left out with an
/// error (`report(line, message)`), the other scenarios still expand.
fn expand_outlines(mut feature: gherkin::Feature, report: &mut dyn FnMut(usize, String)) -> gherkin::Feature {
    let path = feature.path.clone();
    let (span, position) = (feature.span, feature.position);
    let mut expand = |scenarios: Vec<gherkin::Scenario>| -> Vec<gherkin::Scenario> {
        let mut out = Vec::with_capacity(scenarios.len());
        for scenario in scenarios {
            if scenario.examples.is_empty() {
                out.push(scenario);
                continue;
            }
            let name = scenario.name.clone();
            let line = scenario.position.line;
            let mut columns: Vec<String> = Vec::new();
            for ex in &scenario.examples {
                for c in ex.table.iter().flat_map(|t| t.rows.first()).flatten() {
                    if !columns.contains(c) {
                        columns.push(c.clone());
                    }
                }
            }
            if let Some((at, placeholder, header)) = missing_placeholder(&scenario) {
                report(
                    at,
                    format!(
                        "Scenario Outline `{name}` (line {line}) is not run: placeholder <{placeholder}> is not a column of its Examples (columns: {})",
                        header.join(", ")
                    ),
                );
                continue;
            }
            let one = gherkin::Feature {
                keyword: String::new(),
                name: String::new(),
                description: None,
                background: None,
                scenarios: vec![scenario],
                rules: Vec::new(),
                tags: Vec::new(),
                span,
                position,
                path: path.clone(),
            };
            match one.expand_examples() {
                Ok(expanded) => out.extend(expanded.scenarios),
                Err(e) => report(
                    e.pos.line,
                    format!(
                        "Scenario Outline `{name}` (line {line}) is not run: placeholder <{}> is not a column of its Examples (columns: {})",
                        e.name,
                        columns.join(", ")
                    ),
                ),
            }
        }
        out
    };
    for rule in &mut feature.rules {
        rule.scenarios = expand(std::mem::take(&mut rule.scenarios));
    }
    feature.scenarios = expand(std::mem::take(&mut feature.scenarios));
    feature
}

/// Whether a scenario with these tags runs in environment `env` (`native`, `board:rpi4`, ...).
pub fn runs_in(tags: &[String], env: &str) -> bool {
    let kind = env.split(':').next().unwrap_or(env);
    let named = |t: &str| t == env || t == kind;
    let only: Vec<&str> = tags.iter().filter_map(|t| t.strip_prefix("env:")).collect();
    if !only.is_empty() && !only.iter().any(|t| named(t)) {
        return false;
    }
    !tags.iter().filter_map(|t| t.strip_prefix("not-env:")).any(named)
}

/// A parsed `--tags` expression.
pub fn parse_tag_expression(text: &str) -> Result<TagOperation, TagExpressionError> {
    text.parse::<TagOperation>().map_err(|e| TagExpressionError {
        text: text.to_string(),
        reason: e.to_string(),
    })
}

/// A `--tags` expression that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid tag expression `{text}`: {reason}")]
pub struct TagExpressionError {
    pub text: String,
    pub reason: String,
}

/// Whether the user's tag expression (if any) selects these tags (given without `@`).
pub fn selected(expr: Option<&TagOperation>, tags: &[String]) -> bool {
    expr.is_none_or(|op| op.eval(tags.iter()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn outlines_expand_and_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.feature",
            "@hvac\nFeature: A\n  Scenario Outline: fan <level>\n    When x <level>\n\n    Examples:\n      | level |\n      | 1 |\n      | 2 |\n",
        );
        write(
            dir.path(),
            "b.feature",
            "Feature: B\n  Scenario: s\n    Given ok\n  Scenarioo: broken\n",
        );
        write(dir.path(), "ignored.txt", "not a feature");
        let set = FeatureSet::load(&[dir.path().to_path_buf()]);
        let scenarios = set.scenarios();
        assert_eq!(scenarios.len(), 2);
        assert_eq!(scenarios[0].scenario.name, "fan 1");
        assert_eq!(scenarios[0].scenario.steps[0].value, "x 1");
        assert_ne!(
            scenarios[0].scenario.position.line,
            scenarios[1].scenario.position.line
        );
        assert_eq!(scenarios[0].tags(), vec!["hvac".to_string()]);
        assert_eq!(set.errors.len(), 1);
        let e = set.errors[0].to_string();
        assert!(e.contains("b.feature:4: malformed feature file"), "{e}");
    }

    #[test]
    fn rows_docstrings_and_tags_are_scanned() {
        assert_eq!(row_cells("| a | b |"), Some(2));
        assert_eq!(row_cells(r"| a \| b | c |"), Some(2));
        assert_eq!(row_cells("| a | b"), None);
        let found = scan("@env:nativ @slow\nFeature: f\n  Scenario: s\n    Given x\n      \"\"\"\n      | a |\n      | a | b |\n      \"\"\"\n    And y\n      | a |\n\n      # note\n      | a | b |\n");
        assert_eq!(found.env_tags.len(), 1);
        assert_eq!(found.env_tags[0].0, 1);
        assert_eq!(found.ragged.len(), 1, "{:?}", found.ragged);
        assert_eq!((found.ragged[0].line, found.ragged[0].header_line), (13, 10));
        assert_eq!(edit_distance("nativ", "native"), 1);
    }

    #[test]
    fn missing_path_is_an_error() {
        let set = FeatureSet::load(&[PathBuf::from("/nonexistent/x.feature")]);
        assert!(set.errors[0].message.contains("cannot read"));
    }

    #[test]
    fn environment_tags() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(runs_in(&t(&[]), "native"));
        assert!(runs_in(&t(&["env:native"]), "native"));
        assert!(!runs_in(&t(&["env:vm"]), "native"));
        assert!(runs_in(&t(&["env:board"]), "board:rpi4"));
        assert!(!runs_in(&t(&["not-env:board:rpi4"]), "board:rpi4"));
        assert!(runs_in(&t(&["not-env:board:rpi4"]), "board:imx8"));
        assert!(!runs_in(&t(&["not-env:native"]), "native"));
    }

    #[test]
    fn tag_expressions() {
        let op = parse_tag_expression("@hvac and not @slow").unwrap();
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(selected(Some(&op), &t(&["hvac"])));
        assert!(!selected(Some(&op), &t(&["hvac", "slow"])));
        assert!(selected(None, &t(&[])));
        assert!(parse_tag_expression("@a and and").is_err());
    }
}
