//! Scenario discovery: `.feature` files parsed with gherkin, outlines expanded, and the selection of which
//! scenarios run in which environment.
//!
//! Environment tags: `@env:<name>` limits a scenario (or a whole feature/rule) to the named environments,
//! `@not-env:<name>` excludes one; `<name>` is an environment kind (`native`, `board`) or a full column name
//! (`board:rpi4`). The user's tag expression (`--tags "@hvac and not @slow"`) selects among the rest.
//! A file that does not parse is kept as a [`FeatureFileError`] naming file and line, so the report shows it.

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
            match parse_file(&file) {
                Ok(feature) => set.features.push(feature),
                Err(e) => set.errors.push(e),
            }
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

/// Parses and expands one feature file.
pub fn parse_file(path: &Path) -> Result<gherkin::Feature, FeatureFileError> {
    let feature = gherkin::Feature::parse_path(path, GherkinEnv::default()).map_err(|e| match e {
        gherkin::ParseFileError::Reading { source, .. } => FeatureFileError {
            path: path.to_path_buf(),
            line: 0,
            message: format!("cannot read: {source}"),
        },
        gherkin::ParseFileError::Parsing { error, source, .. } => {
            let text = source.to_string();
            let mut line: usize = regex::Regex::new(r"at (\d+):(\d+)")
                .ok()
                .and_then(|re| re.captures(&text)?.get(1)?.as_str().parse().ok())
                .unwrap_or(0);
            let content = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let message = match error {
                Some(gherkin::EnvError::UnknownKeyword(kw)) => {
                    // The parser notices an unknown keyword a line late: point at the line that has it.
                    if let Some(l) = (1..=line.min(lines.len()))
                        .rev()
                        .find(|l| lines[l - 1].trim_start().starts_with(kw.as_str()))
                    {
                        line = l;
                    }
                    let shown = lines
                        .get(line.wrapping_sub(1))
                        .map(|l| l.trim())
                        .unwrap_or_default();
                    format!("malformed feature file: unknown keyword in `{shown}`")
                }
                Some(other) => format!("malformed feature file: {other}"),
                None => {
                    let shown = lines
                        .get(line.wrapping_sub(1))
                        .map(|l| l.trim())
                        .unwrap_or_default();
                    format!("malformed feature file: unexpected `{shown}` ({text})")
                }
            };
            FeatureFileError {
                path: path.to_path_buf(),
                line,
                message,
            }
        }
    })?;
    feature.expand_examples().map_err(|e| FeatureFileError {
        path: path.to_path_buf(),
        line: e.pos.line,
        message: format!("Scenario Outline: {e}"),
    })
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
