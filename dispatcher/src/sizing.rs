//! How a bundle's jobs are cut into run requests: one NATS message each, so together
//! they must fit the server's `max_payload`.

/// Room left in a run request for its own framing (the NATS server's max_payload counts it).
pub(crate) const BUNDLE_ENVELOPE_BYTES: usize = 1024;
/// What a job adds to a run request besides its payload: id, traceparent, deadline, meta,
/// MessagePack framing (a generous estimate; meta is usually empty).
pub(crate) const JOB_ENVELOPE_BYTES: usize = 512;

/// Splits `items` into consecutive runs whose sizes add up to at most `budget`; an item
/// larger than the budget travels alone (JetStream accepted it, so it fits a message).
pub(crate) fn split_by_size<T>(
    items: Vec<T>,
    size: impl Fn(&T) -> usize,
    budget: usize,
) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut used = 0;
    for item in items {
        let n = size(&item);
        match out.last_mut() {
            Some(last) if used + n <= budget => {
                last.push(item);
                used += n;
            }
            _ => {
                out.push(vec![item]);
                used = n;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split_by_size;

    #[test]
    fn bundles_fit_the_budget_and_keep_order() {
        let sizes = vec![400, 400, 400, 100, 900, 2000, 50];
        let parts = split_by_size(sizes, |n| *n, 1000);
        assert_eq!(
            parts,
            vec![
                vec![400, 400],
                vec![400, 100],
                vec![900],
                vec![2000],
                vec![50]
            ]
        );
    }

    #[test]
    fn small_jobs_share_one_bundle() {
        let parts = split_by_size(vec![10; 64], |n| *n, 1 << 20);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].len(), 64);
        assert!(split_by_size(Vec::<usize>::new(), |n| *n, 10).is_empty());
    }
}
