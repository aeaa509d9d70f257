//! The bookkeeping of [`Client::wait_many`](crate::Client::wait_many): which ids still
//! wait for a result, which of them a completion notice announced, and the one subject to
//! listen on. Pure state, no I/O, so it is tested without servers.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jetinfer_schemas::names::done_subject;
use jetinfer_schemas::JobResult;

use crate::error::WaitManyTimeout;

/// How many keys one `MGET` asks for.
pub(crate) const MGET_CHUNK: usize = 500;

/// The one notice subject `wait_many` subscribes to for these distinct ids: the id's own
/// for a single id, every notice (`jetinfer.done.>`, filtered here) for more, so a wait
/// costs one subscription however many ids it covers; `None` for no ids.
pub(crate) fn notice_subject(unique_ids: &[String]) -> Option<String> {
    match unique_ids {
        [] => None,
        [id] => Some(done_subject(id)),
        _ => Some(done_subject(">")),
    }
}

/// The job id a completion notice is about (`jetinfer.done.<id>` → `<id>`).
pub(crate) fn id_of_notice(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(done_subject("").as_str())
        .filter(|id| !id.is_empty())
}

/// Results gathered so far for a list of ids (which may repeat an id).
pub(crate) struct Gather {
    /// Each distinct id once, in the order of first appearance.
    unique: Vec<String>,
    /// Where each distinct id appears in the caller's list.
    slots: HashMap<String, Vec<usize>>,
    results: Vec<Option<JobResult<'static>>>,
    /// How many distinct ids still have no result.
    remaining: usize,
    /// Ids announced by a notice and not fetched yet.
    announced: HashSet<String>,
}

impl Gather {
    pub(crate) fn new<S: AsRef<str>>(ids: &[S]) -> Self {
        let mut unique = Vec::new();
        let mut slots: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            let id = id.as_ref();
            match slots.get_mut(id) {
                Some(at) => at.push(i),
                None => {
                    unique.push(id.to_string());
                    slots.insert(id.to_string(), vec![i]);
                }
            }
        }
        Gather {
            remaining: unique.len(),
            unique,
            slots,
            results: vec![None; ids.len()],
            announced: HashSet::new(),
        }
    }

    /// Each distinct id once, in the order given.
    pub(crate) fn unique_ids(&self) -> &[String] {
        &self.unique
    }

    fn has_result(&self, id: &str) -> bool {
        self.slots
            .get(id)
            .is_some_and(|at| self.results[at[0]].is_some())
    }

    /// The distinct ids still without a result, in the order given.
    pub(crate) fn missing(&self) -> Vec<String> {
        self.unique
            .iter()
            .filter(|id| !self.has_result(id))
            .cloned()
            .collect()
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.remaining == 0
    }

    /// Notes a completion notice; returns whether it is about an id still waited for.
    pub(crate) fn announce(&mut self, id: &str) -> bool {
        let wanted = self.slots.contains_key(id) && !self.has_result(id);
        if wanted {
            self.announced.insert(id.to_string());
        }
        wanted
    }

    /// The announced ids to fetch now (each once), clearing the list.
    pub(crate) fn take_announced(&mut self) -> Vec<String> {
        let mut ids: Vec<String> = self.announced.drain().collect();
        ids.retain(|id| !self.has_result(id));
        ids
    }

    /// Stores what a fetch of `ids` returned (`got[i]` for `ids[i]`); ids not waited for
    /// and results already stored are left as they are (the first result wins).
    pub(crate) fn fill(&mut self, ids: &[String], got: Vec<Option<JobResult<'static>>>) {
        for (id, result) in ids.iter().zip(got) {
            let (Some(result), Some(at)) = (result, self.slots.get(id)) else {
                continue;
            };
            if self.results[at[0]].is_some() {
                continue;
            }
            for &i in at {
                self.results[i] = Some(result.clone());
            }
            self.remaining -= 1;
        }
    }

    /// Every result in the order given, or, when some are missing, what was gathered.
    pub(crate) fn finish(
        self,
        timeout: Duration,
    ) -> Result<Vec<JobResult<'static>>, Box<WaitManyTimeout>> {
        if self.is_complete() {
            return Ok(self.results.into_iter().flatten().collect());
        }
        Err(Box::new(WaitManyTimeout {
            missing: self.missing(),
            results: self.results,
            timeout,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str) -> Option<JobResult<'static>> {
        Some(JobResult::ok(id, "m", "1", Vec::new()))
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn results_come_back_in_the_order_given_with_repeats() {
        let mut g = Gather::new(&["b", "a", "b"]);
        assert_eq!(g.unique_ids(), ids(&["b", "a"]));
        assert_eq!(g.missing(), ids(&["b", "a"]));
        g.fill(&ids(&["a", "b"]), vec![result("a"), None]);
        assert!(!g.is_complete());
        assert_eq!(g.missing(), ids(&["b"]));
        g.fill(&ids(&["b"]), vec![result("b")]);
        assert!(g.is_complete());
        let got = g.finish(Duration::from_secs(1)).unwrap();
        let order: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(order, ["b", "a", "b"]);
    }

    #[test]
    fn a_timeout_lists_the_missing_ids_and_keeps_what_arrived() {
        let mut g = Gather::new(&["a", "b", "c", "b"]);
        g.fill(
            &ids(&["a", "c", "x"]),
            vec![result("a"), result("c"), result("x")],
        );
        let t = g.finish(Duration::from_millis(5)).unwrap_err();
        assert_eq!(t.missing, ids(&["b"]));
        assert_eq!(t.results.len(), 4);
        assert!(t.results[0].is_some() && t.results[2].is_some());
        assert!(t.results[1].is_none() && t.results[3].is_none());
        assert!(t.to_string().starts_with("1 of 4 results missing"), "{t}");
    }

    #[test]
    fn the_first_result_stored_wins() {
        let mut g = Gather::new(&["a"]);
        let mut first = result("a");
        first.as_mut().unwrap().worker = "first".into();
        g.fill(&ids(&["a"]), vec![first]);
        g.fill(&ids(&["a"]), vec![result("a")]);
        assert_eq!(g.finish(Duration::ZERO).unwrap()[0].worker, "first");
    }

    #[test]
    fn notices_count_only_for_ids_still_waited_for() {
        let mut g = Gather::new(&["a", "b"]);
        assert!(g.announce("a"));
        assert!(g.announce("a"));
        assert!(!g.announce("zzz"));
        g.fill(&ids(&["b"]), vec![result("b")]);
        assert!(!g.announce("b"));
        assert_eq!(g.take_announced(), ids(&["a"]));
        assert!(g.take_announced().is_empty());
    }

    #[test]
    fn one_id_gets_its_own_subject_more_share_one_wildcard() {
        assert_eq!(notice_subject(&[]), None);
        assert_eq!(
            notice_subject(&ids(&["a"])).as_deref(),
            Some("jetinfer.done.a")
        );
        assert_eq!(
            notice_subject(&ids(&["a", "b"])).as_deref(),
            Some("jetinfer.done.>")
        );
        assert_eq!(id_of_notice("jetinfer.done.job-1.x"), Some("job-1.x"));
        assert_eq!(id_of_notice("jetinfer.done."), None);
        assert_eq!(id_of_notice("jetinfer.jobs.p0.mlp"), None);
    }

    #[test]
    fn nothing_to_wait_for_is_complete_at_once() {
        let g = Gather::new::<String>(&[]);
        assert!(g.is_complete());
        assert!(g.finish(Duration::ZERO).unwrap().is_empty());
    }
}
