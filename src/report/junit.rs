//! JUnit XML for CI dashboards: one testcase per trial (classname = family.category), failures with
//! their message (which carries the log tails), ignored trials as skipped with the reason.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

#[derive(Debug, Clone)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

#[derive(Debug, Clone)]
pub struct TrialRecord {
    pub name: String,
    pub classname: String,
    pub outcome: Outcome,
    pub time: Duration,
}

#[derive(Default)]
pub struct JunitCollector {
    trials: Mutex<Vec<TrialRecord>>,
}

impl JunitCollector {
    pub fn record(&self, trial: TrialRecord) {
        self.trials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(trial);
    }

    pub fn to_xml(&self, suite_name: &str) -> String {
        let mut trials = self
            .trials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        trials.sort_by(|a, b| a.name.cmp(&b.name));
        let mut suite = TestSuite::new(suite_name);
        for t in &trials {
            let status = match &t.outcome {
                Outcome::Passed => TestCaseStatus::success(),
                Outcome::Failed(msg) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(msg.lines().next().unwrap_or_default());
                    s.set_description(msg.as_str());
                    s
                }
                Outcome::Skipped(why) => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(why.as_str());
                    s
                }
            };
            let mut case = TestCase::new(t.name.as_str(), status);
            case.set_classname(t.classname.as_str()).set_time(t.time);
            suite.add_test_case(case);
        }
        let mut report = Report::new("servetest");
        report.add_test_suite(suite);
        report.to_string().expect("junit serializes")
    }

    pub fn write(&self, path: &Path, suite_name: &str) -> std::io::Result<()> {
        crate::fsutil::write_atomic(path, self.to_xml(suite_name).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_skips_carry_their_reasons() {
        let c = JunitCollector::default();
        let t = |name: &str, outcome| TrialRecord {
            name: name.into(),
            classname: "script.perf".into(),
            outcome,
            time: Duration::from_millis(1500),
        };
        c.record(t(
            "b",
            Outcome::Failed("job 7 ended FAILED <exit 1>\n--- last lines ---\nboom & bust".into()),
        ));
        c.record(t("a", Outcome::Passed));
        c.record(t(
            "c",
            Outcome::Skipped("GPU_TYPE=CPU is not in [GB200]".into()),
        ));
        let xml = c.to_xml("cases");
        assert!(
            xml.contains("tests=\"3\"")
                && xml.contains("failures=\"1\"")
                && xml.contains("skipped=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains("job 7 ended FAILED &lt;exit 1&gt;"),
            "escaped message: {xml}"
        );
        assert!(xml.contains("boom &amp; bust"), "{xml}");
        assert!(xml.find("name=\"a\"").unwrap() < xml.find("name=\"b\"").unwrap());
    }
}
